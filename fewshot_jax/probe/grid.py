"""The protocol's grid of runs and its batched evaluation: index sets in, per-run metrics out.

A *plan* is a list of :class:`RunSpec` — which images train, which test and
(for the Adam head's early stopping) which validate one classifier — built
from the labels alone:

* :func:`protocol_plan`: the paper's protocol. For each split seed a
  stratified 80/20 split (or the data set's own split), for each draw the
  nested k-shot sets of every k (``splits.k_shot_indices``), tested on the
  split's test part.
* :func:`tuning_plan`: the paper's model-selection protocol (Fig. 8): for each
  split seed, 4-fold stratified cross-validation inside the training part;
  the test part is never used.

:func:`evaluate_grid` runs a plan for every encoder: runs of equal training
size are stacked, encoder by encoder, and fitted in one
compiled call by ``probe.fit_indexed``, chunked to bound memory; runs of
unequal size are padded and masked. Every run's classifier is the one it would
get alone. The result holds each run's test predictions and the metrics of
:func:`classification_metrics`.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Callable, Mapping, Sequence

import numpy as np

from fewshot_jax import probe
from fewshot_jax.data import splits
from fewshot_jax.data.io import DataError

# Per compiled call, at most this many training feature values (runs × n × d); a
# 100-run, k = 80, 4-class, 2048-d bucket is 65M (about 0.8 GB of working memory).
DEFAULT_CHUNK_VALUES = 1 << 26


@dataclasses.dataclass(frozen=True)
class RunSpec:
    """One classifier of the grid (for every encoder).

    Attributes:
        split_seed: seed of the train/test split (-1: the data set's own split).
        draw: index of the k-shot draw within the split.
        k: labeled images per class (0 in tuning mode: the whole fold).
        fold: cross-validation fold (-1 in protocol mode).
        train, test, holdout: sorted image indices.
        method: how the training set was drawn: ``'random'`` (k per class, the
            protocol's draw) or a selection strategy (``probe/draws.py``).
    """

    split_seed: int
    draw: int
    k: int
    fold: int
    train: np.ndarray
    test: np.ndarray
    holdout: np.ndarray
    method: str = 'random'

    @property
    def train_hash(self) -> str:
        """A short hash of the training indices (identical sets, identical hash)."""
        return hashlib.sha1(np.asarray(self.train, np.int64).tobytes()).hexdigest()[:12]


def protocol_plan(
    labels,
    *,
    shots: Sequence[int],
    split_seeds: Sequence[int],
    draws: int,
    test_fraction: float = 0.2,
    shot_seed: int = 42,
    holdout_per_class: int = 0,
    fixed_split: Mapping[str, np.ndarray] | None = None,
    class_names: Sequence[str] | None = None,
    choose: Callable[[np.ndarray, int, int], Mapping[int, np.ndarray]] | None = None,
    method: str = 'random',
    groups: Sequence | np.ndarray | None = None,
) -> list[RunSpec]:
    """The paper's few-shot protocol as a list of runs.

    Args:
        labels: (N,) class ids of the whole labeled set.
        shots: k values (images per class).
        split_seeds: seeds of the stratified splits (ignored with fixed_split).
        draws: k-shot draws per split; draw j uses seed ``shot_seed + j`` (the
            paper drew once per split with seed 42).
        test_fraction: test share of each class.
        holdout_per_class: early-stopping images per class, drawn from the
            training part outside each k-shot set (0: none).
        fixed_split: the data set's own split, ``{'train', 'test'}`` and
            optionally ``'validation'`` (then the holdout comes from it).
        class_names: for error messages.
        choose: ``(training part, split seed, draw) -> {k: indices}``, the training
            sets of a selection strategy in place of the k-per-class draws; it is
            not given the labels (``probe/draws.py``).
        method: recorded in each RunSpec (the strategy ``choose`` implements).
        groups: (N,) the original each image derives from, or None. A group is never
            on both sides of a split, nor in both a k-shot set and its holdout;
            every run is checked.

    Raises:
        DataError: a k (plus holdout) beyond a class's training images, a class
            with fewer than 2 test images, or a group straddling two sets.
    """
    labels = np.asarray(labels)
    codes = None if groups is None else splits.group_ids(groups, labels, class_names)
    runs = []
    seeds = [-1] if fixed_split is not None else [int(s) for s in split_seeds]
    for seed in seeds:
        if fixed_split is not None:
            train_part, test_part = np.sort(fixed_split['train']), np.sort(fixed_split['test'])
            validation = fixed_split.get('validation')
        else:
            train_part, test_part = splits.stratified_split(
                labels,
                test_fraction,
                seed,
                class_names=class_names,
                groups=codes,
                min_test=MIN_TEST_PER_CLASS,
            )
            validation = None
        check_test_classes(labels, test_part, class_names)
        for draw in range(int(draws)):
            if choose is not None:
                sets = choose(train_part, seed, draw)
            else:
                sets = splits.k_shot_indices(
                    labels, train_part, shots, seed=shot_seed + draw, class_names=class_names
                )
            for k in shots:
                holdout = _holdout(
                    labels,
                    train_part,
                    sets[k],
                    validation,
                    holdout_per_class,
                    seed=(seed, draw, k),
                    k=k,
                    class_names=class_names,
                    codes=codes,
                )
                splits.check_disjoint(train=sets[k], test=test_part, holdout=holdout, groups=codes)
                runs.append(RunSpec(seed, draw, int(k), -1, sets[k], test_part, holdout, method))
    return runs


def tuning_plan(
    labels,
    *,
    split_seeds: Sequence[int],
    folds: int = 4,
    test_fraction: float = 0.2,
    class_names: Sequence[str] | None = None,
    groups: Sequence | np.ndarray | None = None,
) -> list[RunSpec]:
    """Cross-validation inside the training part of each split (paper: 5 splits × 4 folds);
    with ``groups``, whole groups move between parts and folds."""
    labels = np.asarray(labels)
    codes = None if groups is None else splits.group_ids(groups, labels, class_names)
    runs = []
    for seed in split_seeds:
        train_part, test_part = splits.stratified_split(
            labels, test_fraction, int(seed), class_names=class_names, groups=codes
        )
        for fold, (fit_part, valid_part) in enumerate(
            splits.stratified_folds(
                labels, train_part, folds, seed=int(seed), class_names=class_names, groups=codes
            )
        ):
            splits.check_disjoint(train=fit_part, validation=valid_part, test=test_part, groups=codes)
            runs.append(RunSpec(int(seed), 0, 0, fold, fit_part, valid_part, np.zeros(0, np.int64)))
    return runs


# An accuracy from one test image per class is no measurement.
MIN_TEST_PER_CLASS = 2


def check_test_classes(labels, test_part, class_names=None) -> None:
    """Raises DataError when a class has fewer than 2 test images (no accuracy worth the name)."""
    counts = np.bincount(labels[test_part], minlength=int(labels.max()) + 1)
    for label, count in enumerate(counts):
        if count < MIN_TEST_PER_CLASS:
            name = f'class {label}' + (f' ({class_names[label]!r})' if class_names else '')
            raise DataError(
                f'{name} has {count} test image(s) in the test split; the probe needs at least '
                f'{MIN_TEST_PER_CLASS} test images per class (add test images to that class)'
            )


def _holdout(labels, train_part, shot_set, validation, per_class, *, seed, k, class_names, codes=None):
    if per_class <= 0:
        return np.zeros(0, np.int64)
    pool = validation if validation is not None else np.setdiff1d(train_part, shot_set)
    if codes is not None:
        # Early stopping on a rotation of a training image would flatter the classifier.
        pool = pool[~np.isin(codes[pool], codes[shot_set])]
    rng = np.random.default_rng([abs(s) for s in seed] + [7])
    chosen = []
    for label in np.unique(labels):
        members = pool[labels[pool] == label]
        if len(members) < per_class:
            name = f'class {label}' + (f' ({class_names[label]!r})' if class_names else '')
            where = (
                'validation split'
                if validation is not None
                else f'training part once its k={k} labeled images are taken'
            )
            raise DataError(
                f'{name}: {len(members)} image(s) left in the {where}; early '
                f'stopping wants {per_class} per class (lower the holdout, or use '
                "early_stopping='none')"
            )
        chosen.append(rng.choice(members, per_class, replace=False))
    return np.sort(np.concatenate(chosen)).astype(np.int64)


@dataclasses.dataclass
class GridResult:
    """Test predictions and metrics of every (encoder, run) pair, in encoder-major order.

    Attributes:
        encoders: encoder names, one per row.
        runs: the RunSpec of each row.
        predictions: (rows, m) predicted class of each test image (-1 on padding).
        metrics: list of :func:`classification_metrics` dicts, one per row.
        diagnostics: per-row solver figures (``n_iter``, ``converged``, ``epochs`` …).
        scores: (rows, m, K) decision values behind the predictions (logits, or
            kNN vote shares; NaN on padding).
    """

    encoders: list[str]
    runs: list[RunSpec]
    predictions: np.ndarray
    metrics: list[dict]
    diagnostics: list[dict]
    scores: np.ndarray | None = None


def evaluate_grid(
    features: Mapping[str, np.ndarray],
    labels,
    plan: Sequence[RunSpec],
    *,
    num_classes: int,
    head: str = 'logistic',
    options: Mapping | None = None,
    chunk_values: int = DEFAULT_CHUNK_VALUES,
) -> GridResult:
    """Fits and tests every run of ``plan`` for every encoder.

    Args:
        features: encoder name → (N, d) features of the same N images.
        labels: (N,) class ids.
        plan: the runs (:func:`protocol_plan` or :func:`tuning_plan`).
        num_classes: K.
        head, options: the probe head and its options (``probe.DEFAULTS``).
        chunk_values: memory bound of one compiled call (training values).
    """
    options = probe.head_options(head, dict(options or {}))
    labels = np.asarray(labels)
    names = list(features)
    rows = [(name, index) for name in names for index in range(len(plan))]
    m = max(len(run.test) for run in plan)
    predictions = np.full((len(rows), m), -1, np.int64)
    scores = np.full((len(rows), m, num_classes), np.nan, np.float32)
    diagnostics: list[dict] = [{} for _ in rows]
    # One encoder at a time, runs of equal size in one call: every encoder's calls have
    # the same shapes, so compiled programs serve all encoders (the logistic solver,
    # which never sees the feature width, even encoders of other widths), and a
    # call's runs iterate in lockstep only with runs of their own encoder.
    for group in ([name] for name in names):
        stacked = np.concatenate([np.asarray(features[name], np.float32) for name in group])
        offsets = {name: i * len(labels) for i, name in enumerate(group)}
        all_labels = np.tile(labels, len(group))
        members = [r for r, (name, _) in enumerate(rows) if name in offsets]
        grid = _Bucketed(
            stacked,
            all_labels,
            offsets,
            rows,
            plan,
            head,
            options,
            num_classes,
            chunk_values,
            predictions,
            scores,
            diagnostics,
        )
        sizes = [-(-len(plan[rows[r][1]].train) // probe.ROW_TILE) * probe.ROW_TILE for r in members]
        for n, bucket in _size_buckets(members, sizes):
            _evaluate_bucket(grid, bucket, n, m)
    metrics = []
    for r, (_, index) in enumerate(rows):
        test = plan[index].test
        metrics.append(classification_metrics(predictions[r, : len(test)], labels[test], num_classes))
    return GridResult(
        [name for name, _ in rows], [plan[i] for _, i in rows], predictions, metrics, diagnostics, scores
    )


def _size_buckets(members, sizes, slack: float = 0.9):
    """Groups runs by (tile-padded) training size; sizes within 10 % of a bucket's largest
    share its shape.

    The protocol's k values give one bucket each (small k share the first
    tile); cross-validation folds that differ by a row or two are padded into one.
    """
    order = sorted(range(len(members)), key=lambda i: -sizes[i])
    buckets: list[tuple[int, list[int]]] = []
    for i in order:
        if buckets and sizes[i] >= slack * buckets[-1][0]:
            buckets[-1][1].append(members[i])
        else:
            buckets.append((sizes[i], [members[i]]))
    return buckets


def _padded(index_sets, width: int, offset: np.ndarray):
    out = np.zeros((len(index_sets), width), np.int64)
    mask = np.zeros((len(index_sets), width), bool)
    for i, (indices, base) in enumerate(zip(index_sets, offset, strict=True)):
        out[i, : len(indices)] = np.asarray(indices) + base
        out[i, len(indices) :] = base + (indices[0] if len(indices) else 0)
        mask[i, : len(indices)] = True
    return out, mask


@dataclasses.dataclass
class _Bucketed:
    """One encoder group's grid evaluation: what every bucket reads, and the arrays it fills.

    ``features`` stacks the group's (N, d) features; ``offsets`` maps an encoder to its first
    row there; ``rows`` are the (encoder, plan index) pairs of the output arrays.
    """

    features: np.ndarray
    labels: np.ndarray
    offsets: dict
    rows: list
    plan: Sequence
    head: str
    options: Mapping
    num_classes: int
    chunk_values: int
    predictions: np.ndarray
    scores: np.ndarray
    diagnostics: list


def _evaluate_bucket(grid: _Bucketed, bucket, n: int, m: int) -> None:
    """Fits and tests the runs ``bucket`` (rows of ``grid``) padded to ``n`` training and ``m``
    test rows, in chunks bounded by ``grid.chunk_values``, and fills ``grid``'s outputs."""
    stacked, offsets, rows, plan = grid.features, grid.offsets, grid.rows, grid.plan
    d = stacked.shape[1]
    # Equal chunks, each a multiple of probe.RUN_TILE (the batch size fit_indexed pads to).
    largest = max(1, min(len(bucket), grid.chunk_values // max(n * d, 1)))
    count = -(-len(bucket) // largest)
    chunk = -(-len(bucket) // count)
    chunk = -(-chunk // probe.RUN_TILE) * probe.RUN_TILE
    h = max([len(plan[rows[r][1]].holdout) for r in bucket] + [1])
    for start in range(0, len(bucket), chunk):
        part = bucket[start : start + chunk]
        # Pad the last chunk with copies of its first run: one compiled shape per bucket.
        padded = part + [part[0]] * (chunk - len(part))
        base = np.asarray([offsets[rows[r][0]] for r in padded])
        specs = [plan[rows[r][1]] for r in padded]
        train, train_valid = _padded([s.train for s in specs], n, base)
        test, _ = _padded([s.test for s in specs], m, base)
        holdout, holdout_valid = _padded([s.holdout for s in specs], h, base)
        batch = probe.fit_indexed(
            stacked,
            grid.labels,
            train,
            train_valid,
            grid.head,
            num_classes=grid.num_classes,
            holdout_index=holdout,
            holdout_valid=holdout_valid,
            **grid.options,
        )
        decision = batch.decision_indexed(stacked, test)
        predicted = np.argmax(decision, axis=-1)
        # One device-to-host copy per array, not one per run.
        per_run = {key: np.asarray(value) for key, value in batch.params.items() if np.ndim(value) == 1}
        for i, r in enumerate(part):
            size = len(specs[i].test)
            grid.predictions[r, :size] = predicted[i, :size]
            grid.scores[r, :size] = decision[i, :size]
            grid.diagnostics[r] = {key: value[i].item() for key, value in per_run.items()}


def classification_metrics(predicted, truth, num_classes: int) -> dict:
    """Accuracy, support-weighted precision/recall/F1 and the confusion matrix of one run.

    Matches scikit-learn's ``accuracy_score``, ``precision_recall_fscore_support(
    average='weighted', zero_division=0)`` and ``confusion_matrix`` (rows: true
    class, columns: predicted class).
    """
    predicted = np.asarray(predicted, np.int64)
    truth = np.asarray(truth, np.int64)
    confusion = np.zeros((num_classes, num_classes), np.int64)
    np.add.at(confusion, (truth, predicted), 1)
    tp = np.diag(confusion).astype(np.float64)
    predicted_count = confusion.sum(axis=0)
    support = confusion.sum(axis=1)
    precision = np.divide(tp, predicted_count, out=np.zeros_like(tp), where=predicted_count > 0)
    recall = np.divide(tp, support, out=np.zeros_like(tp), where=support > 0)
    total = precision + recall
    f1 = np.divide(2 * precision * recall, total, out=np.zeros_like(tp), where=total > 0)
    weights = support / max(support.sum(), 1)
    return {
        'accuracy': float(tp.sum() / max(len(truth), 1)),
        'precision': float(np.sum(weights * precision)),
        'recall': float(np.sum(weights * recall)),
        'f1': float(np.sum(weights * f1)),
        'confusion': confusion,
    }


def median_ci(values, level: float = 0.95) -> tuple[float, float]:
    """Distribution-free confidence interval of the median (binomial order statistics).

    The interval ``[x_(j), x_(n+1-j)]`` with the largest j such that
    ``P(Binomial(n, ½) < j) ≤ (1 − level) / 2``; with too few values for that
    coverage it is the whole range.
    """
    from scipy.stats import binom

    x = np.sort(np.asarray(values, float))
    n = len(x)
    if n == 0:
        return float('nan'), float('nan')
    alpha = (1.0 - level) / 2.0
    j = int(np.max(np.flatnonzero(binom.cdf(np.arange(n), n, 0.5) <= alpha), initial=-1)) + 1
    if j < 1:
        return float(x[0]), float(x[-1])
    return float(x[j - 1]), float(x[n - j])
