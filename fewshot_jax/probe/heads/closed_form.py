"""Batched, exact linear-probe solvers over feature arrays: pure JAX, one run per batch row.

Every function here takes arrays for *one* run — training features ``x`` (n, d),
labels ``y`` (n,), a ``valid`` mask (n,) marking real rows (padding rows are
ignored wherever they are, whatever they hold, NaN included) — and is written
to be ``jax.vmap``-ed over runs. ``probe.py`` wraps them in the public API.

Standardisation (:func:`standardize`) follows scikit-learn's ``StandardScaler``
on the valid rows only: population variance, and a feature that is constant on
the training rows keeps scale 1 (so it becomes 0).

**Logistic regression** lives in ``probe_logistic`` (an L-BFGS solver in the
span of the training features, built on :func:`standardize` and :func:`gram`).

**Ridge** (:func:`ridge_regression`): least squares on ±1 one-hot targets
with penalty ``l2 · ‖W‖²`` and a free intercept (scikit-learn's
``RidgeClassifier(alpha=l2)``); one regulariser is a Cholesky solve, and one
eigendecomposition of ``G`` serves several, each run picking its own by exact
leave-one-out error on its training rows (never the test part).

**kNN** (:func:`knn_scores`): cosine similarity on L2-normalised raw features
(as DINO's evaluator), the ``neighbors`` most similar training images vote
with weight ``exp(similarity / temperature)``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

HIGHEST = jax.lax.Precision.HIGHEST


def standardize(x, valid):
    """Standardises features with statistics of the valid rows only.

    Args:
        x: (n, d) features; invalid rows may hold anything (NaN included).
        valid: (n,) bool.

    Returns:
        ``(x_std, mean, scale)``: (n, d) with invalid rows exactly 0, and the
        (d,) statistics such that ``x_std = (x - mean) / scale`` on valid rows.
    """
    x = x.astype(jnp.float32)
    count = jnp.maximum(jnp.sum(valid), 1).astype(jnp.float32)
    rows = valid[:, None]
    mean = jnp.sum(jnp.where(rows, x, 0.0), axis=0) / count
    centered = jnp.where(rows, x - mean, 0.0)
    var = jnp.sum(centered * centered, axis=0) / count
    # scikit-learn's constant-feature rule (_is_constant_feature), with float32 eps.
    eps = jnp.finfo(jnp.float32).eps
    constant = var <= count * eps * var + (count * mean * eps) ** 2
    scale = jnp.where(constant, 1.0, jnp.sqrt(var))
    return centered / scale, mean, scale


def gram(x_std):
    """``x_std @ x_std.T`` at full float32 precision."""
    return jnp.dot(x_std, x_std.T, precision=HIGHEST)


def ridge_regression(x, y, valid, *, num_classes: int, l2=(1.0,)):
    """Ridge regression on ±1 one-hot targets (one run), several regularisers at once.

    Args:
        x: (n, d) training features (standardised here).
        y: (n,) int labels.
        valid: (n,) bool.
        num_classes: K (static).
        l2: tuple of regularisers (static); with more than one, the run keeps
            the one with the smallest exact leave-one-out squared error.

    Returns:
        dict with ``coef`` (d, K), ``intercept`` (K,), ``mean``, ``scale``, and
        ``l2`` (the regulariser used).
    """
    x_std, mean, scale = standardize(x, valid)
    g = gram(x_std)
    rows = valid[:, None]
    targets = jnp.where(rows, 2.0 * jax.nn.one_hot(y, num_classes) - 1.0, 0.0)
    count = jnp.maximum(jnp.sum(valid), 1).astype(jnp.float32)
    intercept = jnp.sum(targets, axis=0) / count
    centered = jnp.where(rows, targets - intercept, 0.0)
    if len(l2) == 1:
        # One regulariser: a Cholesky solve (XLA's CPU eigh is slow).
        chosen = jnp.asarray(l2[0], jnp.float32)
        factor = jnp.linalg.cholesky(g + chosen * jnp.eye(g.shape[0]))
        a = jax.scipy.linalg.cho_solve((factor, True), centered)
        coef = jnp.dot(x_std.T, a, precision=HIGHEST)
        return {'coef': coef, 'intercept': intercept, 'mean': mean, 'scale': scale, 'l2': chosen}
    eigvals, eigvecs = jnp.linalg.eigh(g)
    eigvals = jnp.maximum(eigvals, 0.0)
    projected = jnp.dot(eigvecs.T, centered, precision=HIGHEST)
    lambdas = jnp.asarray(l2, jnp.float32)

    def coefficients(lam):
        return jnp.dot(eigvecs, projected / (eigvals + lam)[:, None], precision=HIGHEST)

    def loo_error(lam):
        # Hat matrix of ridge with a free intercept: 11^T/n + G (G + λI)^-1.
        shrink = eigvals / (eigvals + lam)
        hat_diag = 1.0 / count + jnp.sum(eigvecs * eigvecs * shrink, axis=1)
        fitted = intercept + jnp.dot(g, coefficients(lam), precision=HIGHEST)
        residual = (targets - fitted) / jnp.maximum(1.0 - hat_diag, 1e-6)[:, None]
        return jnp.sum(jnp.where(rows, residual, 0.0) ** 2)

    errors = jax.vmap(loo_error)(lambdas)
    # Ties go to the strongest regulariser.
    order = jnp.argsort(-lambdas)
    chosen = lambdas[order[jnp.argmin(errors[order])]]
    a = coefficients(chosen)
    coef = jnp.dot(x_std.T, a, precision=HIGHEST)
    return {'coef': coef, 'intercept': intercept, 'mean': mean, 'scale': scale, 'l2': chosen}


def linear_logits(params, x):
    """Decision values of a linear head on raw features x (m, d): (m, K)."""
    x_std = (x.astype(jnp.float32) - params['mean']) / params['scale']
    return jnp.dot(x_std, params['coef'], precision=HIGHEST) + params['intercept']


def unit_rows(x):
    """Rows scaled to unit L2 norm (zero rows stay zero)."""
    x = x.astype(jnp.float32)
    norm = jnp.sqrt(jnp.sum(x * x, axis=-1, keepdims=True))
    return x / jnp.maximum(norm, 1e-12)


def knn_scores(
    train_x, train_y, valid, x, *, num_classes: int, neighbors: int = 20, temperature: float = 0.07
):
    """Class probabilities of a weighted cosine k-nearest-neighbour vote (one run).

    Args:
        train_x: (n, d) training features; train_y: (n,); valid: (n,) bool.
        x: (m, d) features to classify.
        num_classes: K (static).
        neighbors: votes per prediction (static; at most n, fewer valid rows
            simply contribute nothing).
        temperature: vote weight exp(similarity / temperature).

    Returns:
        (m, K) vote shares, rows summing to 1.
    """
    reference = jnp.where(valid[:, None], unit_rows(train_x), 0.0)
    similarity = jnp.dot(unit_rows(x), reference.T, precision=HIGHEST)
    similarity = jnp.where(valid[None, :], similarity, -jnp.inf)
    top, index = jax.lax.top_k(similarity, min(neighbors, train_x.shape[0]))
    weight = jnp.where(jnp.isfinite(top), jnp.exp((top - 1.0) / temperature), 0.0)
    votes = jax.nn.one_hot(train_y[index], num_classes) * weight[..., None]
    totals = jnp.sum(votes, axis=1)
    return totals / jnp.maximum(jnp.sum(totals, axis=-1, keepdims=True), 1e-30)
