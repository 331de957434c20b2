"""Tests for fewshot_jax.data.splits: properties checked with plain loops."""

import numpy as np
import pytest

from fewshot_jax.data.io import DataError
from fewshot_jax.data.splits import (
    PAPER_SHOTS,
    check_disjoint,
    k_shot_indices,
    stratified_folds,
    stratified_split,
)


def _paper_labels():
    """Four classes of 100 images, shuffled so classes are interleaved."""
    return np.random.default_rng(123).permutation(np.repeat(np.arange(4), 100))


def _count_per_class(labels, indices):
    counts = {}
    for i in indices:
        counts[int(labels[i])] = counts.get(int(labels[i]), 0) + 1
    return counts


def test_stratified_split_is_80_20_per_class():
    labels = _paper_labels()
    train, test = stratified_split(labels, 0.2, seed=5)
    assert _count_per_class(labels, train) == {0: 80, 1: 80, 2: 80, 3: 80}
    assert _count_per_class(labels, test) == {0: 20, 1: 20, 2: 20, 3: 20}
    assert sorted(list(train) + list(test)) == list(range(400))
    assert list(train) == sorted(train) and train.dtype == np.int64


def test_stratified_split_determinism_and_seed_dependence():
    labels = _paper_labels()
    a = stratified_split(labels, seed=1)
    b = stratified_split(labels, seed=1)
    c = stratified_split(labels, seed=2)
    np.testing.assert_array_equal(a[1], b[1])
    assert not np.array_equal(a[1], c[1])


def test_stratified_split_rounding_and_small_classes():
    labels = np.array([0] * 7 + [1] * 2 + [2] * 3)
    train, test = stratified_split(labels, 0.2, seed=0)
    # round(1.4) = 1, round(0.4) -> at least 1, round(0.6) = 1
    assert _count_per_class(labels, test) == {0: 1, 1: 1, 2: 1}
    assert _count_per_class(labels, train) == {0: 6, 1: 1, 2: 2}
    with pytest.raises(DataError, match=r"class 1 \('solo'\) has 1 image"):
        stratified_split(np.array([0, 0, 1]), class_names=('pair', 'solo'))


def test_k_shot_sets_are_nested_per_class_and_inside_train():
    labels = _paper_labels()
    train, test = stratified_split(labels, seed=42)
    sets = k_shot_indices(labels, train, PAPER_SHOTS, seed=42)
    assert list(sets) == list(PAPER_SHOTS)
    previous = set()
    for k in PAPER_SHOTS:
        chosen = sets[k]
        assert _count_per_class(labels, chosen) == {c: k for c in range(4)}
        assert set(chosen.tolist()) <= set(train.tolist())
        assert not set(chosen.tolist()) & set(test.tolist())
        assert previous <= set(chosen.tolist())
        previous = set(chosen.tolist())
    assert set(sets[80].tolist()) == set(train.tolist())


def test_k_shot_set_does_not_depend_on_the_other_ks_requested():
    labels = _paper_labels()
    train, _ = stratified_split(labels, seed=0)
    alone = k_shot_indices(labels, train, shots=(4,), seed=9)[4]
    together = k_shot_indices(labels, train, shots=(1, 4, 16), seed=9)[4]
    np.testing.assert_array_equal(alone, together)
    other_seed = k_shot_indices(labels, train, shots=(4,), seed=10)[4]
    assert not np.array_equal(alone, other_seed)


def test_k_larger_than_class_names_class_and_k():
    labels = np.array([0] * 10 + [1] * 3)
    with pytest.raises(DataError, match=r"class 1 \('network'\) has 3 training image\(s\); k=4"):
        k_shot_indices(
            labels, np.arange(13), shots=(1, 2, 4, 8), seed=0, class_names=('dispersed', 'network')
        )


def test_k_shot_class_absent_from_train_is_an_error():
    labels = np.array([0, 0, 1, 1])
    with pytest.raises(DataError, match=r'class 1 has 0 training image'):
        k_shot_indices(labels, [0, 1], shots=(1,))


def test_folds_cover_each_index_once_and_are_stratified():
    labels = _paper_labels()
    train, test = stratified_split(labels, seed=3)
    folds = stratified_folds(labels, train, n_folds=4, seed=3)
    assert len(folds) == 4
    validated = []
    for fit, val in folds:
        assert not set(fit.tolist()) & set(val.tolist())
        assert sorted(fit.tolist() + val.tolist()) == sorted(train.tolist())
        assert _count_per_class(labels, val) == {0: 20, 1: 20, 2: 20, 3: 20}
        validated += val.tolist()
    assert sorted(validated) == sorted(train.tolist())
    assert not set(validated) & set(test.tolist())


def test_folds_uneven_classes_balance_sizes():
    labels = np.array([0] * 9 + [1] * 6 + [2] * 5)
    folds = stratified_folds(labels, np.arange(20), n_folds=4, seed=0)
    sizes = [len(val) for _, val in folds]
    assert sum(sizes) == 20 and max(sizes) - min(sizes) <= 1
    for _, val in folds:
        for c, n in ((0, 9), (1, 6), (2, 5)):
            assert _count_per_class(labels, val).get(c, 0) in (n // 4, n // 4 + 1)


def test_folds_deterministic_and_too_few_per_class():
    labels = np.repeat(np.arange(3), 8)
    a = stratified_folds(labels, np.arange(24), seed=1)
    b = stratified_folds(labels, np.arange(24), seed=1)
    for (fa, va), (fb, vb) in zip(a, b, strict=True):
        np.testing.assert_array_equal(va, vb)
        np.testing.assert_array_equal(fa, fb)
    with pytest.raises(DataError, match=r'class 2 has 3 image\(s\); 4-fold'):
        stratified_folds(np.array([0] * 4 + [2] * 3), np.arange(7))


@pytest.mark.parametrize(
    'call, message',
    [
        (lambda: stratified_split(np.zeros((2, 2), int)), 'expected a non-empty 1-D integer'),
        (lambda: stratified_split([0.5, 1.5]), 'expected a non-empty 1-D integer'),
        (lambda: stratified_split([0, -1, 0, -1]), 'negative class id'),
        (lambda: stratified_split([0, 0], test_fraction=1.0), r'test_fraction must be in \(0, 1\)'),
        (lambda: k_shot_indices([0, 0], [0, 5], shots=(1,)), r'train_indices: values in \[0, 5\]'),
        (lambda: k_shot_indices([0, 0], [0, 0], shots=(1,)), 'repeated indices'),
        (lambda: k_shot_indices([0, 0], [0, 1], shots=(0,)), 'shots must be positive'),
        (lambda: stratified_folds([0] * 4, np.arange(4), n_folds=1), 'n_folds must be >= 2'),
    ],
)
def test_bad_arguments(call, message):
    with pytest.raises(DataError, match=message):
        call()


def test_check_disjoint():
    check_disjoint(train=[0, 1, 2], test=[3, 4], val=[5])
    with pytest.raises(DataError, match=r'train and test share 1 index\(es\), e.g. \[2\]'):
        check_disjoint(train=[0, 1, 2], test=[2, 3])
