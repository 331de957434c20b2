"""The paper's data protocol as pure functions of a labels array and a seed.

1. `stratified_split`: 80/20 train/test per seed, balanced per class.
2. `k_shot_indices`: from the training part only, k images per class for
   each k, nested (for one seed the k=4 set contains the k=2 set).
3. `stratified_folds`: 4-fold stratified cross-validation inside the
   training part, for model selection.

The test part is only for final evaluation; `check_disjoint` guards that.

Splits respect groups: given `groups` (one id per image; images derived from one
original, such as its rotations, share an id), `stratified_split` and
`stratified_folds` move whole groups, so no group straddles the training and
test parts (or a fit and validation fold), and `check_disjoint(groups=...)`
checks it. Without groups every image is its own group and the indices are
exactly those of the ungrouped functions.
Datasets that ship their own split (the TEM virus set) are used as shipped:
`layouts.tem_virus` returns one source per split, and the k-shot sets are
drawn from the train source's labels with
`k_shot_indices(labels, np.arange(len(labels)), ...)`.

Every function returns sorted int64 index arrays and depends only on its
arguments: the same (labels, seed) gives the same indices on any machine.
Each function draws from its own random stream, so reusing one seed for the
split and the k-shot draw (the paper used 42 for both) does not correlate them.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from fewshot_jax.data.io import DataError

PAPER_SHOTS = (1, 2, 4, 8, 16, 32, 80)

# Distinct stream ids per function (see module docstring).
_SPLIT_STREAM, _SHOT_STREAM, _FOLD_STREAM = 1, 2, 3


def stratified_split(
    labels: Sequence[int] | np.ndarray,
    test_fraction: float = 0.2,
    seed: int = 0,
    *,
    class_names: Sequence[str] | None = None,
    groups: Sequence | np.ndarray | None = None,
    min_test: int = 1,
) -> tuple[np.ndarray, np.ndarray]:
    """Splits indices into train and test with the same class balance.

    Each class contributes round(test_fraction * n_class) images to the test
    part (at least 1, leaving at least 1 for training). With `groups`, whole
    groups go to one side: a class's groups are shuffled and moved to the test
    part while each move brings its size closer to that share (at least one
    group on each side).

    Args:
      labels: (N,) non-negative class ids.
      test_fraction: Share of every class held out, in (0, 1).
      seed: Seed of the draw.
      class_names: Names used in error messages.
      groups: (N,) group ids (any hashable values), or None (no groups).
      min_test: Fewest test images every class must get (the probe's accuracy needs 2).

    Returns:
      (train_indices, test_indices), sorted, disjoint, covering range(N).

    Raises:
      DataError: Bad labels or fraction, a class too small for `min_test` test images
        and 1 training image (the message says how many images it needs), or a group whose
        images have different labels.
    """
    labels = _check_labels(labels)
    if not 0 < test_fraction < 1:
        raise DataError(f'test_fraction must be in (0, 1), got {test_fraction}')
    rng = np.random.default_rng((seed, _SPLIT_STREAM))
    if groups is not None:
        return _grouped_split(labels, test_fraction, rng, group_ids(groups, labels, class_names), class_names)
    train, test = [], []
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        n_test = _test_count(len(members), test_fraction)
        if len(members) < 2 or n_test < min_test:
            needed = min_images_per_class(test_fraction, min_test)
            raise DataError(
                f'{_class_label(label, class_names)} has {len(members)} image(s), so {n_test} test '
                f'image(s) at test_fraction={test_fraction}; the split needs at least {min_test} '
                f'test and 1 training image per class, i.e. at least {needed} images per class '
                '(add images or raise the test fraction)'
            )
        test.append(members[:n_test])
        train.append(members[n_test:])
    return _sorted(train), _sorted(test)


def _test_count(n: int, test_fraction: float) -> int:
    """Images of a class of ``n`` that the split holds out (at least 1, leaving 1 to train)."""
    return min(max(int(np.floor(test_fraction * n + 0.5)), 1), n - 1)


def min_images_per_class(test_fraction: float, min_test: int = 1) -> int:
    """The fewest images a class needs for ``min_test`` test images and 1 training image.

    At test_fraction=0.2 a class needs 8 images for 2 test images, 2 for 1.
    """
    n = 2
    while _test_count(n, test_fraction) < min_test:
        n += 1
    return n


def k_shot_indices(
    labels: Sequence[int] | np.ndarray,
    train_indices: Sequence[int] | np.ndarray,
    shots: Sequence[int] = PAPER_SHOTS,
    seed: int = 0,
    *,
    class_names: Sequence[str] | None = None,
) -> dict[int, np.ndarray]:
    """Draws k labeled training images per class for every k, nested.

    One random order of each class's training images is drawn per seed and
    the k-shot set takes its first k, so a larger k's set contains every
    smaller k's set. Every class present in `labels` must have k images in
    `train_indices`.

    Args:
      labels: (N,) class ids of the whole dataset.
      train_indices: Indices the draw may use (the training part).
      shots: The k values, each >= 1.
      seed: Seed of the draw.
      class_names: Names used in error messages.

    Returns:
      {k: sorted indices}, k * n_classes indices each, all in train_indices.

    Raises:
      DataError: A k exceeds the training images of some class (names the
        class, k and how many there are), or bad arguments.
    """
    labels = _check_labels(labels)
    train_indices = _check_indices(train_indices, len(labels), 'train_indices')
    shots = tuple(int(k) for k in shots)
    if not shots or min(shots) < 1:
        raise DataError(f'shots must be positive integers, got {shots}')
    rng = np.random.default_rng((seed, _SHOT_STREAM))
    orders = {}
    for label in np.unique(labels):
        members = train_indices[labels[train_indices] == label]
        orders[label] = rng.permutation(members)
        too_many = sorted(k for k in shots if k > len(members))
        if too_many:
            raise DataError(
                f'{_class_label(label, class_names)} has {len(members)} training image(s); '
                f'k={too_many[0]} images per class were requested (shots {too_many} exceed it)'
            )
    return {k: _sorted([order[:k] for order in orders.values()]) for k in shots}


def stratified_folds(
    labels: Sequence[int] | np.ndarray,
    indices: Sequence[int] | np.ndarray,
    n_folds: int = 4,
    seed: int = 0,
    *,
    class_names: Sequence[str] | None = None,
    groups: Sequence | np.ndarray | None = None,
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Stratified K-fold cross-validation over a subset of the data.

    Each class's images (within `indices`) are shuffled and dealt to the
    folds in turn, continuing the turn across classes, so every fold holds
    each class within one image and the fold sizes differ by at most one.

    Args:
      labels: (N,) class ids of the whole dataset.
      indices: The part to cross-validate (the training part).
      n_folds: Number of folds, >= 2.
      seed: Seed of the shuffle.
      class_names: Names used in error messages.
      groups: (N,) group ids, or None. With groups, a class's groups (not its
        images) are shuffled and dealt, so a group validates in one fold only.

    Returns:
      n_folds pairs (fit_indices, validation_indices), sorted and disjoint,
      together covering `indices`; each index validates exactly once.

    Raises:
      DataError: A class has fewer images (groups) than folds, or bad arguments.
    """
    labels = _check_labels(labels)
    indices = _check_indices(indices, len(labels), 'indices')
    if n_folds < 2:
        raise DataError(f'n_folds must be >= 2, got {n_folds}')
    rng = np.random.default_rng((seed, _FOLD_STREAM))
    fold_of = np.empty(len(labels), dtype=np.int64)
    codes = None if groups is None else group_ids(groups, labels, class_names)
    turn = 0
    for label in np.unique(labels[indices]):
        members = indices[labels[indices] == label]
        if codes is None:
            units = [[i] for i in rng.permutation(members)]
        else:
            units = [members[codes[members] == g] for g in rng.permutation(np.unique(codes[members]))]
        if len(units) < n_folds:
            what = 'image(s)' if codes is None else 'group(s) of images'
            raise DataError(
                f'{_class_label(label, class_names)} has {len(units)} {what}; '
                f'{n_folds}-fold cross-validation needs at least {n_folds} per class'
            )
        for j, unit in enumerate(units):
            fold_of[unit] = (turn + j) % n_folds
        turn = (turn + len(units)) % n_folds
    folds = []
    for fold in range(n_folds):
        held_out = fold_of[indices] == fold
        folds.append((np.sort(indices[~held_out]), np.sort(indices[held_out])))
    return folds


def check_disjoint(*, groups: np.ndarray | None = None, **index_sets: Sequence[int] | np.ndarray) -> None:
    """Raises DataError if two named index sets share an index (or, with groups, a group).

    Example: `check_disjoint(train=train_idx, test=test_idx, groups=codes)` before
    fitting, `codes` from :func:`group_ids`.
    """
    names = list(index_sets)
    for i, first in enumerate(names):
        for second in names[i + 1 :]:
            a, b = np.asarray(index_sets[first], np.int64), np.asarray(index_sets[second], np.int64)
            shared = np.intersect1d(a, b)
            if shared.size:
                raise DataError(
                    f'{first} and {second} share {shared.size} index(es), e.g. '
                    f'{shared[:5].tolist()}; expected disjoint sets'
                )
            if groups is not None:
                both = np.intersect1d(groups[a], groups[b])
                if both.size:
                    raise DataError(
                        f'{first} and {second} share {both.size} group(s) of images derived from one '
                        f'original (e.g. group {both[0]}: indices '
                        f'{np.flatnonzero(groups == both[0])[:5].tolist()}); expected disjoint groups'
                    )


def group_ids(groups, labels: np.ndarray, class_names: Sequence[str] | None = None) -> np.ndarray:
    """(N,) int64 codes of group ids of any hashable kind, checked to keep to one class each.

    Raises:
      DataError: not one id per image, or a group whose images have different labels.
    """
    groups = np.asarray(groups)
    if groups.shape != labels.shape:
        raise DataError(f'groups: shape {groups.shape}; expected one group id per image, {labels.shape}')
    _, codes = np.unique(groups, return_inverse=True)
    codes = codes.astype(np.int64).reshape(-1)
    first_label = np.full(codes.max() + 1, -1, np.int64)
    for i, code in enumerate(codes):
        if first_label[code] < 0:
            first_label[code] = labels[i]
        elif first_label[code] != labels[i]:
            raise DataError(
                f'group {groups[i]!r} holds images of {_class_label(first_label[code], class_names)} '
                f'and {_class_label(labels[i], class_names)}; images derived from one original share '
                'its class'
            )
    return codes


def _grouped_split(labels, test_fraction, rng, codes, class_names):
    train, test = [], []
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        units = [members[codes[members] == g] for g in rng.permutation(np.unique(codes[members]))]
        if len(units) < 2:
            raise DataError(
                f'{_class_label(label, class_names)} has {len(units)} group of images; a train/test '
                'split needs at least 2 per class'
            )
        n_test = max(int(np.floor(test_fraction * len(members) + 0.5)), 1)
        taken, count = 0, 0
        # Whole groups while each brings the test part closer to its share (at least one group
        # goes to test, at least one stays for training).
        while taken < len(units) - 1:
            size = len(units[taken])
            if count and abs(count + size - n_test) >= abs(count - n_test):
                break
            count += size
            taken += 1
        test += units[:taken]
        train += units[taken:]
    return _sorted(train), _sorted(test)


def _check_labels(labels) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.ndim != 1 or labels.size == 0 or not np.issubdtype(labels.dtype, np.integer):
        raise DataError(
            f'labels: shape {labels.shape}, dtype {labels.dtype}; expected a non-empty 1-D integer array'
        )
    if labels.min() < 0:
        raise DataError(f'labels: negative class id {labels.min()}; expected ids >= 0')
    return labels


def _check_indices(indices, n: int, name: str) -> np.ndarray:
    indices = np.asarray(indices)
    if indices.ndim != 1 or not (indices.size == 0 or np.issubdtype(indices.dtype, np.integer)):
        raise DataError(f'{name}: shape {indices.shape}, dtype {indices.dtype}; expected 1-D integers')
    indices = indices.astype(np.int64)
    if indices.size and (indices.min() < 0 or indices.max() >= n):
        raise DataError(
            f'{name}: values in [{indices.min()}, {indices.max()}]; expected [0, {n}) to index labels'
        )
    if np.unique(indices).size != indices.size:
        raise DataError(f'{name}: contains repeated indices; expected each at most once')
    return np.sort(indices)


def _class_label(label, class_names) -> str:
    if class_names is not None and 0 <= int(label) < len(class_names):
        return f'class {int(label)} ({class_names[int(label)]!r})'
    return f'class {int(label)}'


def _sorted(parts) -> np.ndarray:
    if not parts:
        return np.zeros(0, np.int64)
    return np.sort(np.concatenate(parts)).astype(np.int64)
