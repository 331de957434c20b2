"""Linear probes on frozen features: :func:`fit` for one classifier, :func:`fit_many` for a batch.

Arrays in, arrays out; no files, no config. Example::

    from fewshot_jax import probe
    clf = probe.fit(train_x, train_y)              # logistic regression, C = 1
    clf.predict(test_x), clf.predict_proba(test_x)

    many = probe.fit_many(xs, ys, valid)           # xs (R, n, d), ys (R, n), valid (R, n)
    many.predict(test_xs)                          # (R, m) from (R, m, d)

Heads (``head=``), each on features standardised with its own training rows'
mean and standard deviation (never the test rows'):

* ``'logistic'`` (default): scikit-learn's ``LogisticRegression(C=C)``
  objective solved to convergence by an exact batched solver in the span of
  the training features (see ``probe_logistic``). Options: ``C`` (1.0),
  ``tol`` (1e-4: scikit-learn's own default, met in the stricter 2-norm; the
  float32 floor is near 1e-5), ``max_iter`` (1000), ``history`` (10).
* ``'ridge'``: ±1 one-hot least squares, ``RidgeClassifier(alpha=l2)``.
  Options: ``l2`` (1.0, or a tuple chosen per run by leave-one-out error).
* ``'knn'``: weighted cosine nearest neighbours on L2-normalised raw features.
  Options: ``neighbors`` (20), ``temperature`` (0.07).
* ``'adam'``: the paper's softmax layer trained with Adam (see
  ``probe_adam``). Options: ``lr`` (1e-3), ``batch_size`` (32),
  ``max_epochs`` (300), ``patience`` (10), ``early_stopping`` ('holdout' needs
  ``holdout_x``/``holdout_y``; or 'none'), ``seed`` (0; every run of a batch
  starts from the same initialisation and random stream, so paired encoders
  and lone runs see the same draws).

Every run of a batch is solved as if it were alone: padding rows
(``valid=False``) are ignored wherever they are, so runs of different sizes
share one compiled call. Training sets are padded to a multiple of
:data:`ROW_TILE` rows, alone or in a batch, so a run's arithmetic (matrix
kernels, reduction order) is the same either way and a run fitted inside a
grid equals the run fitted alone to float32 rounding; the number of runs is
padded to a multiple of :data:`RUN_TILE` with copies (XLA compiles a batch of
one differently from larger ones, while every batch size from two up gives a
run bit-identical results; fewer distinct sizes also mean fewer compilations).
Problems with the input raise :class:`ProbeInputError` naming the run, row,
class or option.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import jax
import jax.numpy as jnp
import numpy as np

from fewshot_jax.probe import compiled as probe_compiled
from fewshot_jax.probe.inputs import (
    DEFAULTS,
    HEADS,
    STATIC,
    ProbeInputError,
    as_batch_features,
    check_training,
    head_options,
    holdout_arrays,
)

__all__ = [
    'HEADS',
    'DEFAULTS',
    'Probe',
    'ProbeBatch',
    'ProbeInputError',
    'fit',
    'fit_many',
    'fit_indexed',
    'head_options',
]

# Training rows are padded to a multiple of this: equal shapes alone and in a grid.
ROW_TILE = 32
# Batches of runs are padded (with copies) to a multiple of this.
RUN_TILE = 8


@dataclasses.dataclass(frozen=True)
class ProbeBatch:
    """R fitted classifiers of one head.

    Attributes:
        head: the head name.
        num_classes: K.
        params: arrays with a leading run axis: for linear heads ``coef`` (R, d, K)
            and ``intercept`` (R, K) acting on standardised features, ``mean`` and
            ``scale`` (R, d), plus diagnostics (``n_iter``, ``grad_norm``,
            ``converged``; ``epochs``, ``best_epoch``; ``l2``). For ``'knn'``
            the training features, labels and mask.
        options: the head's options.
    """

    head: str
    num_classes: int
    params: dict
    options: dict

    def __len__(self) -> int:
        return int(next(iter(self.params.values())).shape[0])

    def decision_function(self, x) -> np.ndarray:
        """Scores (R, m, K) of features x (R, m, d): logits, or kNN vote shares."""
        x = as_batch_features(x, len(self), self.params)
        features, (index,) = _flatten_runs(x)
        return self.decision_indexed(features, index)

    def decision_indexed(self, features, index) -> np.ndarray:
        """Scores (R, m, K) of rows ``index`` (R, m) of one feature matrix (N, d)."""
        params, index = _run_tile(self.params, np.asarray(index))
        scores = probe_compiled.scores(
            self.head,
            params,
            jnp.asarray(features),
            jnp.asarray(index),
            self.num_classes,
            **_static(self.head, self.options),
            **_dynamic(self.head, self.options),
        )
        return np.asarray(scores)[: len(self)]

    def predict_proba(self, x) -> np.ndarray:
        """Class probabilities (R, m, K); the ridge head has none."""
        if self.head == 'ridge':
            raise ProbeInputError(
                "the 'ridge' head gives decision values, not probabilities; use decision_function or predict"
            )
        scores = self.decision_function(x)
        return scores if self.head == 'knn' else np.asarray(jax.nn.softmax(scores, axis=-1))

    def predict(self, x) -> np.ndarray:
        """Predicted class ids (R, m)."""
        return np.argmax(self.decision_function(x), axis=-1)

    def run(self, index: int) -> Probe:
        """Run ``index`` as a single :class:`Probe`."""
        params = jax.tree.map(lambda a: a[index : index + 1], self.params)
        return Probe(
            ProbeBatch(self.head, self.num_classes, params, self.options), np.arange(self.num_classes)
        )


@dataclasses.dataclass(frozen=True)
class Probe:
    """One fitted classifier; labels are those given to :func:`fit` (``classes_``)."""

    batch: ProbeBatch
    classes_: np.ndarray

    @property
    def coef_(self) -> np.ndarray:
        """(d, K) weights on standardised features (linear heads)."""
        return np.asarray(self.batch.params['coef'][0])

    @property
    def intercept_(self) -> np.ndarray:
        return np.asarray(self.batch.params['intercept'][0])

    def decision_function(self, x) -> np.ndarray:
        return self.batch.decision_function(np.asarray(x)[None])[0]

    def predict_proba(self, x) -> np.ndarray:
        return self.batch.predict_proba(np.asarray(x)[None])[0]

    def predict(self, x) -> np.ndarray:
        return self.classes_[np.argmax(self.decision_function(x), axis=-1)]


def fit(train_x, train_y, head: str = 'logistic', *, holdout_x=None, holdout_y=None, **opts) -> Probe:
    """Fits one classifier on features (n, d) and labels (n,) of any hashable kind.

    Args:
        train_x: (n, d) finite features.
        train_y: (n,) labels; the classes are ``np.unique(train_y)`` (at least 2).
        head: one of :data:`HEADS`.
        holdout_x, holdout_y: early-stopping set for ``head='adam'`` with
            ``early_stopping='holdout'`` (labels among train_y's classes).
        **opts: the head's options (see the module docstring).

    Returns:
        A :class:`Probe` with ``predict``, ``predict_proba``, ``decision_function``.
    """
    y = np.asarray(train_y)
    if y.ndim != 1:
        raise ProbeInputError(f'train_y: shape {y.shape}; expected (n,)')
    classes, codes = np.unique(y, return_inverse=True)
    holdout = {}
    if holdout_x is not None or holdout_y is not None:
        if holdout_x is None or holdout_y is None:
            raise ProbeInputError('holdout_x and holdout_y go together')
        hy = np.asarray(holdout_y)
        unknown = sorted(set(hy.tolist()) - set(classes.tolist()))
        if unknown:
            raise ProbeInputError(f'holdout_y has classes {unknown} that train_y lacks')
        holdout = {'holdout_x': np.asarray(holdout_x)[None], 'holdout_y': np.searchsorted(classes, hy)[None]}
    batch = fit_many(
        np.asarray(train_x)[None], codes[None], None, head, num_classes=len(classes), **holdout, **opts
    )
    return Probe(batch, classes)


def fit_many(
    train_x,
    train_y,
    valid=None,
    head: str = 'logistic',
    *,
    num_classes: int | None = None,
    holdout_x=None,
    holdout_y=None,
    holdout_valid=None,
    **opts,
) -> ProbeBatch:
    """Fits R classifiers at once, one per leading index, in one compiled call.

    Args:
        train_x: (R, n, d) features; rows with ``valid=False`` are padding.
        train_y: (R, n) int labels in [0, num_classes).
        valid: (R, n) bool, or None (every row real).
        head: one of :data:`HEADS`.
        num_classes: K; default ``max(train_y) + 1``.
        holdout_x, holdout_y, holdout_valid: (R, h, d), (R, h), (R, h) early-stopping
            sets for ``head='adam'`` with ``early_stopping='holdout'``.
        **opts: the head's options.

    Returns:
        A :class:`ProbeBatch`.

    Raises:
        ProbeInputError: bad shapes, non-finite training features, a run missing a
            class, fewer than 2 classes, a missing holdout set, unknown options.
    """
    x = np.asarray(train_x)
    y = np.asarray(train_y)
    if x.ndim != 3:
        raise ProbeInputError(f'train_x: shape {x.shape}; expected (runs, n, d)')
    valid = np.ones(y.shape, bool) if valid is None else np.asarray(valid, bool)
    num_classes = check_training(x, y, valid, num_classes, 'train_x')
    options = head_options(head, opts)
    hx, hy, hv = (
        np.asarray(a)
        for a in holdout_arrays(head, options, x, holdout_x, holdout_y, holdout_valid, num_classes)
    )
    # One feature matrix for every run's training and holdout rows: the grid's path.
    features, (train_index, holdout_index) = _flatten_runs(x, hx)
    labels = np.concatenate([y.reshape(-1), hy.reshape(-1)])
    return fit_indexed(
        features,
        labels,
        train_index,
        valid,
        head,
        num_classes=num_classes,
        holdout_index=holdout_index,
        holdout_valid=hv,
        **options,
    )


def fit_indexed(
    features,
    labels,
    train_index,
    train_valid,
    head: str = 'logistic',
    *,
    num_classes: int,
    holdout_index=None,
    holdout_valid=None,
    **opts,
) -> ProbeBatch:
    """:func:`fit_many` on rows of one feature matrix, gathered inside the compiled call.

    The protocol's grid uses this: every run's training rows are indices into
    the features of the whole data set, so the (R, n, d) stack never exists on
    the host. Validation (finite rows, classes present) is the caller's job;
    ``probe_grid`` does it once for the whole grid.

    Args:
        features: (N, d) features; labels: (N,) ints.
        train_index, train_valid: (R, n) row indices and mask.
        holdout_index, holdout_valid: (R, h) early-stopping rows for 'adam'.
    """
    options = head_options(head, opts)
    features = jnp.asarray(features)
    labels = jnp.asarray(labels)
    train_valid = _pad_rows(np.asarray(train_valid, bool), ROW_TILE)
    train_index = np.asarray(train_index)
    train_index = np.where(train_valid, _pad_rows(train_index, ROW_TILE), train_index[:, :1])
    runs = train_index.shape[0]
    if holdout_index is None:
        holdout_index = np.zeros((runs, 1), np.int32)
        holdout_valid = np.zeros(holdout_index.shape, bool)
    arrays = _run_tile(train_index, train_valid, holdout_index, holdout_valid)
    with _single_threaded_lapack():
        params = probe_compiled.fit(
            head,
            features,
            labels,
            *(jnp.asarray(a) for a in arrays),
            num_classes=num_classes,
            **_static(head, options),
            **_dynamic(head, options),
        )
        params = jax.block_until_ready(params)
    return ProbeBatch(head, num_classes, _first(params, runs), options)


def _static(head: str, options: Mapping) -> dict:
    return {'static': tuple((k, options[k]) for k in STATIC[head])}


def _dynamic(head: str, options: Mapping) -> dict:
    return {'dynamic': {k: v for k, v in options.items() if k not in STATIC[head]}}


def _single_threaded_lapack():
    """One BLAS/LAPACK thread while a fit runs.

    XLA's CPU factorisations (Cholesky, eigh) call LAPACK from scipy's
    OpenBLAS, whose own worker threads fight XLA's thread pool: measured on 2
    cores, a batch of 320×320 Cholesky factorisations took 0.6-1 s with
    OpenBLAS threads and 24-48 ms without. GPUs use cuSOLVER and are unaffected.
    """
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=1, user_api='blas')


def _run_tile(*trees):
    """Pads the leading (run) axis to a multiple of RUN_TILE with copies of the first run."""

    def grow(a):
        extra = -np.shape(a)[0] % RUN_TILE
        if not extra:
            return a
        a = np.asarray(a)
        return np.concatenate([a, np.repeat(a[:1], extra, axis=0)])

    return tuple(jax.tree.map(grow, tree) for tree in trees)


def _flatten_runs(*stacks):
    """Stacks (R, n_i, d) as one (sum R n_i, d) matrix, and each stack's (R, n_i) row indices."""
    rows, indices, start = [], [], 0
    for stack in stacks:
        runs, n, d = stack.shape
        rows.append(stack.reshape(runs * n, d))
        indices.append(start + np.arange(runs * n, dtype=np.int32).reshape(runs, n))
        start += runs * n
    return np.concatenate(rows), indices


def _first(params, runs: int):
    return jax.tree.map(lambda a: a[:runs], params)


def _pad_rows(array: np.ndarray, tile: int) -> np.ndarray:
    """Pads axis 1 with zeros (False) up to a multiple of ``tile``."""
    extra = -array.shape[1] % tile
    if not extra:
        return array
    pad = [(0, 0)] * array.ndim
    pad[1] = (0, extra)
    return np.pad(array, pad)
