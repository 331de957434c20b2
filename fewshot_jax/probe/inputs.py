"""The probe's input checks and head options: every error before any training.

``probe.py`` calls these on the host before it compiles anything; errors are
:class:`ProbeInputError` naming the run, row, class or option.
"""

from __future__ import annotations

from collections.abc import Mapping

import jax.numpy as jnp
import numpy as np

from fewshot_jax.probe.heads import adam as probe_adam

HEADS = ('logistic', 'ridge', 'knn', 'adam')
DEFAULTS: dict[str, dict] = {
    'logistic': {'C': 1.0, 'tol': 1e-4, 'max_iter': 1000, 'history': 10},
    'ridge': {'l2': 1.0},
    'knn': {'neighbors': 20, 'temperature': 0.07},
    'adam': {
        'lr': 1e-3,
        'batch_size': 32,
        'max_epochs': 300,
        'patience': 10,
        'early_stopping': 'holdout',
        'seed': 0,
    },
}
# Options that change the compiled program (shapes, loop lengths, branches).
STATIC = {
    'logistic': ('max_iter', 'history'),
    'ridge': ('l2',),
    'knn': ('neighbors',),
    'adam': ('batch_size', 'max_epochs', 'early_stopping'),
}


class ProbeInputError(ValueError):
    """Features, labels or options a probe cannot be fitted on (names the run, row or option)."""


def head_options(head: str, opts: Mapping) -> dict:
    """The head's defaults updated with ``opts``; unknown heads or options are errors."""
    if head not in HEADS:
        raise ProbeInputError(f'head={head!r}: expected one of {HEADS}')
    unknown = sorted(set(opts) - set(DEFAULTS[head]))
    if unknown:
        raise ProbeInputError(
            f'head {head!r} has no option(s) {unknown}; its options are {sorted(DEFAULTS[head])}'
        )
    options = {**DEFAULTS[head], **opts}
    if head == 'ridge':
        l2 = options['l2']
        values = tuple(float(v) for v in (l2 if isinstance(l2, (tuple, list)) else (l2,)))
        if not values or min(values) <= 0:
            raise ProbeInputError(f'ridge l2={l2!r}: expected positive value(s)')
        options['l2'] = values
    if head == 'logistic' and not float(options['C']) > 0:
        raise ProbeInputError(f'logistic C={options["C"]!r}: expected a positive number')
    if head == 'adam' and options['early_stopping'] not in probe_adam.EARLY_STOPPING:
        raise ProbeInputError(
            f'adam early_stopping={options["early_stopping"]!r}: expected one of {probe_adam.EARLY_STOPPING}'
        )
    for name in ('max_iter', 'history', 'neighbors', 'batch_size', 'max_epochs', 'patience'):
        if name in options and (
            not isinstance(options[name], (int, np.integer))
            or isinstance(options[name], bool)
            or options[name] < 1
        ):
            raise ProbeInputError(f'{head} {name}={options[name]!r}: expected a positive integer')
    return options


def check_training(x, y, valid, num_classes, name: str) -> int:
    runs, n, _ = x.shape
    if y.shape != (runs, n) or valid.shape != (runs, n):
        raise ProbeInputError(
            f'{name} {x.shape}, train_y {y.shape}, valid {valid.shape}: '
            f'expected (runs, n, d), (runs, n) and (runs, n)'
        )
    if not np.issubdtype(y.dtype, np.integer):
        raise ProbeInputError(f'train_y: dtype {y.dtype}; expected integer class ids')
    if n == 0 or runs == 0:
        raise ProbeInputError(f'{name}: shape {x.shape}; expected at least one run and row')
    bad = ~np.isfinite(x).all(axis=-1) & valid
    if bad.any():
        run, row = (int(v) for v in np.argwhere(bad)[0])
        raise ProbeInputError(
            f'{name}: run {run}, row {row} has NaN or infinite features '
            f'({int(bad.sum())} such training rows in all)'
        )
    labels = y[valid]
    if labels.size and labels.min() < 0:
        raise ProbeInputError(f'train_y: negative class id {labels.min()}')
    k = int(labels.max()) + 1 if num_classes is None else int(num_classes)
    if k < 2:
        raise ProbeInputError(f'{k} class(es) in train_y; a classifier needs at least 2')
    if labels.size and labels.max() >= k:
        raise ProbeInputError(f'train_y: class id {labels.max()} >= num_classes={k}')
    for run in range(runs):
        present = np.bincount(y[run][valid[run]], minlength=k)
        if (present == 0).any():
            missing = np.flatnonzero(present == 0).tolist()
            raise ProbeInputError(
                f'run {run} has no training example of class(es) {missing}; every run needs every class'
            )
    return k


def holdout_arrays(head, options, x, holdout_x, holdout_y, holdout_valid, num_classes):
    runs, _, d = x.shape
    if head != 'adam' or options['early_stopping'] == 'none':
        return (
            jnp.zeros((runs, 1, d), jnp.float32),
            jnp.zeros((runs, 1), jnp.int32),
            jnp.zeros((runs, 1), bool),
        )
    if holdout_x is None or holdout_y is None:
        raise ProbeInputError(
            "head 'adam' with early_stopping='holdout' needs holdout_x and "
            'holdout_y (labeled images outside the training set), or '
            "early_stopping='none'"
        )
    hx, hy = np.asarray(holdout_x), np.asarray(holdout_y)
    hv = np.ones(hy.shape, bool) if holdout_valid is None else np.asarray(holdout_valid, bool)
    if hx.ndim != 3 or hx.shape[0] != runs or hx.shape[2] != d or hy.shape != hx.shape[:2]:
        raise ProbeInputError(
            f'holdout_x {hx.shape}, holdout_y {hy.shape}: expected ({runs}, h, {d}) and ({runs}, h)'
        )
    if (~np.isfinite(hx).all(axis=-1) & hv).any():
        raise ProbeInputError('holdout_x has NaN or infinite features')
    return jnp.asarray(hx), jnp.asarray(hy), jnp.asarray(hv)


def as_batch_features(x, runs: int, params) -> np.ndarray:
    x = np.asarray(x)
    d = params['train_x'].shape[-1] if 'train_x' in params else params['coef'].shape[1]
    if x.ndim != 3 or x.shape[0] != runs or x.shape[2] != d:
        raise ProbeInputError(f'features of shape {x.shape}: expected ({runs}, m, {d})')
    return x
