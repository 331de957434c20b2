"""The probe's compiled fits and scores: one jit-compiled program per head and shape.

``fewshot_jax.probe`` pads and checks the inputs and calls these. Every run is
given as row indices into one feature matrix: the grid's runs index the whole
data set's features, and stacked runs (``fit_many``) are flattened into one
matrix first, so there is one compiled path and a run fitted in a grid equals
the run fitted alone. ``static`` holds the options that change the program
(shapes, loop lengths, branches), ``dynamic`` the others.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from fewshot_jax.probe.heads import adam as probe_adam
from fewshot_jax.probe.heads import closed_form as probe_solvers
from fewshot_jax.probe.heads import logistic as probe_logistic


@functools.partial(jax.jit, static_argnames=('head', 'num_classes', 'static'))
def _fit_core(
    head, features, labels, train_index, valid, holdout_index, holdout_valid, *, num_classes, static, dynamic
):
    """The vmapped fit of the heads other than logistic, on the rows the indices gather."""
    x, y = features[train_index], labels[train_index]
    holdout_x, holdout_y = features[holdout_index], labels[holdout_index]
    static = dict(static)
    if head == 'ridge':
        fn = functools.partial(probe_solvers.ridge_regression, num_classes=num_classes, **static)
        return jax.vmap(fn)(x, y, valid)
    if head == 'knn':
        return {'train_x': x.astype(jnp.float32), 'train_y': y, 'valid': valid}
    # Every run draws from the same stream (its data makes it differ): a run's
    # initialisation and shuffles do not depend on where it sits in a batch.
    keys = jnp.broadcast_to(jax.random.key(dynamic['seed']), (x.shape[0],))
    fn = functools.partial(
        probe_adam.adam_classifier,
        num_classes=num_classes,
        lr=dynamic['lr'],
        patience=dynamic['patience'],
        **static,
    )
    return jax.vmap(fn)(x, y, valid, holdout_x, holdout_y, holdout_valid, keys)


def fit(
    head,
    features,
    labels,
    train_index,
    train_valid,
    holdout_index,
    holdout_valid,
    *,
    num_classes,
    static,
    dynamic,
):
    """Fits runs given as row indices ``train_index`` (R, n) into one feature matrix (N, d)."""
    if head == 'logistic':
        prepared, y = _logistic_prepare(features, labels, train_index, train_valid)
        return _logistic(prepared, y, train_valid, num_classes=num_classes, static=static, dynamic=dynamic)
    return _fit_core(
        head,
        features,
        labels,
        train_index,
        train_valid,
        holdout_index,
        holdout_valid,
        num_classes=num_classes,
        static=static,
        dynamic=dynamic,
    )


# The logistic head compiles in three pieces: only the small ones depend on the
# feature width, so the L-BFGS solver (the costly compilation) is shared by
# encoders of different widths (e.g. a CNN's 2048 and raw pixels) at equal
# (runs, rows, classes).
@jax.jit
def _logistic_prepare(features, labels, train_index, train_valid):
    return probe_logistic.prepare(features[train_index], train_valid), labels[train_index]


@functools.partial(jax.jit, static_argnames=('num_classes', 'static'))
def _logistic_solve(g, y, valid, *, num_classes, static, dynamic):
    return probe_logistic.solve(
        g, y, valid, num_classes=num_classes, C=dynamic['C'], tol=dynamic['tol'], **dict(static)
    )


_logistic_finish = jax.jit(probe_logistic.finish)


def _logistic(prepared, y, valid, *, num_classes, static, dynamic):
    x_std, mean, scale, g = prepared
    solved = _logistic_solve(g, y, valid, num_classes=num_classes, static=static, dynamic=dynamic)
    return _logistic_finish(x_std, mean, scale, solved)


@functools.partial(jax.jit, static_argnames=('head', 'num_classes', 'static'))
def scores(head, params, features, index, num_classes, *, static, dynamic):
    """Scores (R, m, K) of rows ``index`` (R, m) of one feature matrix (N, d)."""
    x = features[index]
    if head == 'knn':
        fn = functools.partial(
            probe_solvers.knn_scores,
            num_classes=num_classes,
            neighbors=dict(static)['neighbors'],
            temperature=dynamic['temperature'],
        )
        return jax.vmap(fn)(params['train_x'], params['train_y'], params['valid'], x)
    return jax.vmap(probe_solvers.linear_logits)(params, x)
