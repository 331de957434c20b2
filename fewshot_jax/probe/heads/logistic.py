"""L2-regularised multinomial logistic regression, solved exactly in the span of the training features.

Arrays for R runs in (``x`` (R, n, d), ``y`` (R, n), ``valid`` (R, n)), pure JAX;
``probe.py`` wraps it in the public API.

:func:`logistic_regression` minimises, like
scikit-learn's ``LogisticRegression(C=C)`` (L2, multinomial, intercept not
penalised)::

    f(W, b) = C · Σ_i CE(softmax(W^T x_i + b), y_i) + ½ ‖W‖²

By the representer theorem the optimal ``W`` lies in the span of the training
features, ``W = X^T A`` with ``A`` (n, K). The solver is L-BFGS *in W-space*
(the geometry scikit-learn's L-BFGS sees), carried out in those n·K
coordinates: inner products are ``⟨X^T a, X^T a'⟩ = tr(a^T G a')`` with the
Gram matrix ``G = X X^T``, so each iteration costs one (n×n)·(n×2K) product
instead of two (n×d)·(d×K) ones (rank-deficient ``G`` is fine). CNN features
are strongly correlated, so ``G`` has a few huge eigenvalues; the initial
inverse Hessian is ``(I + c X^T X)^-1`` on an approximate top-64 eigenspace
(two block power steps; see :func:`_subspace_preconditioner`),
which cuts the iterations 3-6 fold and changes nothing about the optimum. The
line search is an exact minimisation of the convex 1-D restriction
(safeguarded Newton), which costs O(nK) per trial because logits and the
penalty are linear/quadratic in the step. scikit-learn fits a binary problem
with one weight vector; a two-class softmax with penalty C/2 has the same
optimum, so K = 2 uses ``C / 2``.

Convergence: ``‖∇f‖ / (C · n) ≤ tol`` (the gradient of scikit-learn's
normalised objective, in the 2-norm, which bounds the max-norm that
scikit-learn's ``tol`` uses). In float32 that norm bottoms out near 1e-5; a run
whose line search can no longer make progress is at working precision and
counts as converged when its gradient is within 100·tol.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from fewshot_jax.probe.heads.closed_form import HIGHEST, gram, standardize

# Line-search trials per iteration: safeguarded Newton on a convex 1-D function.
_LINE_SEARCH_STEPS = 8
# A run that stalls counts as converged when its gradient is within this factor of tol.
_STALL_SLACK = 100.0
# Preconditioner: the top eigen-directions of the Gram matrix (at most this many) ...
_PRECONDITIONER_RANK = 64
# ... damped with curvature C · this (a typical p(1 - p) of a fitted few-shot problem,
# where most training images are fitted with confidence). On the benchmark's ResNet50
# features 0.003 took 35 L-BFGS iterations at k = 80 where 0.01 took 58 (0.001: 30, but
# more at k <= 16); the optimum does not depend on it.
_PRECONDITIONER_CURVATURE = 0.003


def _inner(a, a_b, g_image, g_b):
    """Per-run W-space inner products of (a, a_b) with vectors whose G-images are g_image.

    Shapes (R, n, K), (R, K), (R, n, K), (R, K) → (R,).
    """
    return jnp.sum(a * g_image, axis=(1, 2)) + jnp.sum(a_b * g_b, axis=1)


def _center(a, valid):
    """Removes each run's mean over valid rows (invisible in W-space); zeroes invalid rows."""
    rows = valid[..., None]
    count = jnp.maximum(jnp.sum(valid, axis=-1), 1).astype(a.dtype)[..., None]
    mean = jnp.sum(jnp.where(rows, a, 0.0), axis=-2) / count
    return jnp.where(rows, a - mean[..., None, :], 0.0)


def logistic_regression(
    x,
    y,
    valid,
    *,
    num_classes: int,
    C: float = 1.0,
    tol: float = 1e-4,
    max_iter: int = 1000,
    history: int = 10,
):
    """L2-regularised multinomial logistic regression solved to convergence, R runs at once.

    The runs iterate in lockstep but each is frozen once converged, so each
    run's iterates are the ones it would have alone.

    Args:
        x: (R, n, d) training features (raw; standardised here).
        y: (R, n) int labels in [0, num_classes).
        valid: (R, n) bool; False rows are padding.
        num_classes: K (static).
        C: inverse regularisation strength, scikit-learn's parametrisation.
        tol: tolerance on the 2-norm of scikit-learn's normalised gradient.
        max_iter: iteration cap (static).
        history: L-BFGS memory (static).

    Returns:
        dict of per-run arrays: ``coef`` (R, d, K) and ``intercept`` (R, K) acting
        on standardised features, ``mean``/``scale`` (R, d), ``n_iter``,
        ``grad_norm``, ``converged`` (R,).
    """
    x_std, mean, scale, g = prepare(x, valid)
    solved = solve(g, y, valid, num_classes=num_classes, C=C, tol=tol, max_iter=max_iter, history=history)
    return finish(x_std, mean, scale, solved)


def prepare(x, valid):
    """Standardised features (R, n, d), their statistics (R, d) and Gram matrices (R, n, n).

    The only part of the fit that depends on the feature width d.
    """
    x_std, mean, scale = jax.vmap(standardize)(x, valid)
    return x_std, mean, scale, jax.vmap(gram)(x_std)


def solve(g, y, valid, *, num_classes: int, C: float = 1.0, tol: float = 1e-4, max_iter=1000, history=10):
    """The optimum's span coordinates from the Gram matrices alone (independent of d).

    Returns:
        dict with ``a`` (R, n, K) (the weights are ``x_std^T a``), ``intercept``
        (R, K), ``n_iter``, ``grad_norm``, ``converged`` (R,).
    """
    targets = jax.nn.one_hot(y, num_classes, dtype=jnp.float32) * valid[..., None]
    c_eff = C / 2.0 if num_classes == 2 else C
    preconditioner = _subspace_preconditioner(g, valid, c_eff * _PRECONDITIONER_CURVATURE)
    a, b, n_iter, grad_norm, stalled = _lbfgs_kernel(
        g, targets, valid, c_eff, tol, max_iter, history, preconditioner
    )
    converged = (grad_norm <= tol) | (stalled & (grad_norm <= _STALL_SLACK * tol))
    return {'a': a, 'intercept': b, 'n_iter': n_iter, 'grad_norm': grad_norm, 'converged': converged}


def finish(x_std, mean, scale, solved):
    """The fitted parameters: weights ``x_std^T a`` (R, d, K) and the solver's diagnostics."""
    coef = jnp.einsum('rnd,rnk->rdk', x_std, solved['a'], precision=HIGHEST)
    return {
        'coef': coef,
        'intercept': solved['intercept'],
        'mean': mean,
        'scale': scale,
        'n_iter': solved['n_iter'],
        'grad_norm': solved['grad_norm'],
        'converged': solved['converged'],
    }


def _matmul(a, b):
    return jnp.einsum('rij,rjk->rik', a, b, precision=HIGHEST)


def _inverse_sqrt(matrices, iterations: int = 30):
    """``M^-1/2`` of small SPD (R, r, r) matrices by the coupled Newton–Schulz iteration.

    Matrix products only: XLA's CPU factorisations are slow (QR, eigh) or slow
    down badly on ill-conditioned input (triangular solves). After scaling by
    the trace, eigenvalues above ~1e-8 converge in 30 steps.
    """
    eye = jnp.eye(matrices.shape[-1])
    trace = jnp.trace(matrices, axis1=1, axis2=2)[:, None, None]

    def step(_, carry):
        y, z = carry
        t = 0.5 * (3.0 * eye - _matmul(z, y))
        return _matmul(y, t), _matmul(t, z)

    _, z = jax.lax.fori_loop(0, iterations, step, (matrices / trace, jnp.broadcast_to(eye, matrices.shape)))
    return 0.5 * (z + jnp.swapaxes(z, 1, 2)) / jnp.sqrt(trace)


def _inverse(matrices, iterations: int = 30):
    """``M^-1`` of small SPD matrices by Newton–Schulz from below (``X ≤ M^-1`` at every step,
    so a preconditioner built from it stays positive definite)."""
    eye = jnp.eye(matrices.shape[-1])
    trace = jnp.trace(matrices, axis1=1, axis2=2)[:, None, None]
    scaled = matrices / trace

    def step(_, x):
        return _matmul(x, 2.0 * eye - _matmul(scaled, x))

    x = jax.lax.fori_loop(0, iterations, step, jnp.broadcast_to(eye, matrices.shape))
    return 0.5 * (x + jnp.swapaxes(x, 1, 2)) / trace


def _orthonormal(block):
    """An orthonormal basis of each block's columns: ``Y (Y^T Y)^-1/2`` (unit columns first)."""
    norms = jnp.sqrt(jnp.sum(block * block, axis=1, keepdims=True))
    block = block / jnp.maximum(norms, 1e-30)
    size = block.shape[-1]
    gram_small = jnp.einsum('rnk,rnl->rkl', block, block, precision=HIGHEST)
    return jnp.einsum(
        'rnk,rkl->rnl', block, _inverse_sqrt(gram_small + 1e-4 * jnp.eye(size)), precision=HIGHEST
    )


def _subspace_preconditioner(g, valid, damping):
    """The preconditioner's pieces: an approximate top eigenspace of each G.

    With ``Q`` (n, r) an orthonormal basis of ``G²Ω`` (two block power steps from
    a fixed random start, each orthonormalised) and ``B = X^T Q``, the W-space preconditioner is
    ``H0 = (I + c B B^T)^{-1} = I - c B (I + c B^T B)^{-1} B^T`` on the weights
    and ``1 / (1 + c·n)`` on the intercept: the inverse of the Hessian's
    dominant part ``I + c X^T X`` restricted to the top directions, exactly
    symmetric positive definite whatever Q is. Any such H0 gives the same
    optimum; this one takes the Gram matrix's huge leading eigenvalues
    (correlated CNN features) out of the iteration count. In A-coordinates
    ``H0 q = q - c Q K^-1 Q^T (G q)`` with ``K = I + c Q^T G Q``.

    Returns:
        ``(Q, G·Q, c·K^-1, intercept factor)``.
    """
    runs, n, _ = g.shape
    rank = min(n, _PRECONDITIONER_RANK)
    start = jax.random.normal(jax.random.key(0), (n, rank), jnp.float32)
    q = _orthonormal(jnp.einsum('rnm,mk->rnk', g, start, precision=HIGHEST))
    q = _orthonormal(jnp.einsum('rnm,rmk->rnk', g, q, precision=HIGHEST))
    gq = jnp.einsum('rnm,rmk->rnk', g, q, precision=HIGHEST)
    inner = jnp.eye(rank) + damping * jnp.einsum('rnk,rnl->rkl', q, gq, precision=HIGHEST)
    inverse = _inverse(inner)
    count = jnp.sum(valid, axis=1).astype(jnp.float32)
    return q, gq, damping * inverse, 1.0 / (1.0 + damping * count)


def _apply_preconditioner(preconditioner, q_a, q_b, q_image):
    """H0 applied to (q_a, q_b) with G-image q_image; returns the result and its G-image."""
    basis, g_basis, inverse, intercept = preconditioner
    projected = jnp.einsum('rnl,rnk->rlk', basis, q_image, precision=HIGHEST)
    coeff = jnp.einsum('rlm,rmk->rlk', inverse, projected, precision=HIGHEST)
    return (
        q_a - jnp.einsum('rnl,rlk->rnk', basis, coeff, precision=HIGHEST),
        q_b * intercept[:, None],
        q_image - jnp.einsum('rnl,rlk->rnk', g_basis, coeff, precision=HIGHEST),
    )


def _two_loop_direction(s, preconditioner, history):
    """The L-BFGS search direction ``-H ∇`` of every run, by the two-loop recursion.

    ``s`` is the kernel's state (iterate, gradient, ring buffer of curvature pairs). The
    newest pair goes first; every vector travels with its G-image, so the inner products
    need no extra product with G. Where the result is not a descent direction (a run with
    no usable history), steepest descent replaces it. Returns ``(d_a, d_b, d_image)``.
    """
    runs = s['gamma'].shape[0]
    gamma = s['gamma']

    def newest_first(j, carry):
        q_a, q_b, q_image, alphas = carry
        slot = (s['iteration'] - 1 - j) % history
        alpha = s['rho'][slot] * _inner(s['s_a'][slot], s['s_b'][slot], q_image, q_b)
        return (
            q_a - alpha[:, None, None] * s['y_a'][slot],
            q_b - alpha[:, None] * s['y_b'][slot],
            q_image - alpha[:, None, None] * s['y_image'][slot],
            alphas.at[j].set(alpha),
        )

    q_a, q_b, q_image, alphas = jax.lax.fori_loop(
        0,
        history,
        newest_first,
        (-s['grad_a'], -s['grad_b'], -s['grad_image'], jnp.zeros((history, runs))),
    )
    h_a, h_b, h_image = _apply_preconditioner(preconditioner, q_a, q_b, q_image)

    def oldest_first(i, carry):
        d_a, d_b, d_image = carry
        j = history - 1 - i
        slot = (s['iteration'] - 1 - j) % history
        coeff = alphas[j] - s['rho'][slot] * _inner(s['y_a'][slot], s['y_b'][slot], d_image, d_b)
        return (
            d_a + coeff[:, None, None] * s['s_a'][slot],
            d_b + coeff[:, None] * s['s_b'][slot],
            d_image + coeff[:, None, None] * s['s_image'][slot],
        )

    d_a, d_b, d_image = jax.lax.fori_loop(
        0,
        history,
        oldest_first,
        (gamma[:, None, None] * h_a, gamma[:, None] * h_b, gamma[:, None, None] * h_image),
    )
    ascent = (_inner(s['grad_a'], s['grad_b'], d_image, d_b) >= 0)[:, None]
    d_a = jnp.where(ascent[..., None], -s['grad_a'], d_a)
    d_b = jnp.where(ascent, -s['grad_b'], d_b)
    d_image = jnp.where(ascent[..., None], -s['grad_image'], d_image)

    return d_a, d_b, d_image


def _lbfgs_kernel(g, targets, valid, C, tol, max_iter, history, preconditioner):
    """Batched preconditioned L-BFGS in W-space for ``W = X^T A``.

    Returns (A, b, n_iter, grad_norm, stalled).

    All runs step together (one batched product with G per iteration); a run
    that has converged or stalled takes steps of length 0 from then on, and its
    counters stop. The history is a ring buffer written at the shared
    iteration index, so a run's history is the same alone or in a batch.
    """
    runs, n, k = targets.shape
    v = valid.astype(jnp.float32)[..., None]
    normaliser = 1.0 / (C * jnp.maximum(jnp.sum(valid, axis=1), 1))

    def refresh(a, b, ga_approx):
        """Loss, W-space gradient (a-part, b-part) and G-images at (a, b).

        ``ga_approx`` (the tracked G·A) gives the logits; G·A itself is then
        recomputed exactly with G·g in one product, so rounding never accumulates.
        """
        logp = jax.nn.log_softmax(ga_approx + b[:, None, :])
        residual = C * v * (jnp.exp(logp) - targets)
        grad_a = _center(residual + a, valid)
        images = jnp.einsum('rnm,rmk->rnk', g, jnp.concatenate([a, grad_a], axis=2), precision=HIGHEST)
        ga, grad_image = images[..., :k], images[..., k:]
        return grad_a, jnp.sum(residual, axis=1), grad_image, ga

    def norm(grad_a, grad_b, grad_image):
        return jnp.sqrt(jnp.maximum(_inner(grad_a, grad_b, grad_image, grad_b), 0.0)) * normaliser

    zeros, zeros_b = jnp.zeros((runs, n, k)), jnp.zeros((runs, k))
    grad_a, grad_b, grad_image, ga = refresh(zeros, zeros_b, zeros)
    grad_norm = norm(grad_a, grad_b, grad_image)
    ring, ring_b = jnp.zeros((history, runs, n, k)), jnp.zeros((history, runs, k))
    state = {
        'a': zeros,
        'b': zeros_b,
        'ga': ga,
        'grad_a': grad_a,
        'grad_b': grad_b,
        'grad_image': grad_image,
        's_a': ring,
        's_b': ring_b,
        's_image': ring,
        'y_a': ring,
        'y_b': ring_b,
        'y_image': ring,
        'rho': jnp.zeros((history, runs)),
        'gamma': jnp.ones((runs,)),
        'iteration': jnp.asarray(0),
        'n_iter': jnp.zeros((runs,), jnp.int32),
        'grad_norm': grad_norm,
        'active': grad_norm > tol,
        'stalled': jnp.zeros((runs,), bool),
    }

    def keep_going(s):
        return (s['iteration'] < max_iter) & jnp.any(s['active'])

    def step(s):
        d_a, d_b, d_image = _two_loop_direction(s, preconditioner, history)
        gamma = s['gamma']
        t, slope0 = _line_search(
            s['ga'] + s['b'][:, None, :], d_image + d_b[:, None, :], s['ga'], d_a, d_image, targets, v, C
        )
        moved = (t > 0) & (slope0 < 0) & jnp.isfinite(t)
        t = jnp.where(moved & s['active'], t, 0.0)
        a = s['a'] + t[:, None, None] * d_a
        b = s['b'] + t[:, None] * d_b
        grad_a, grad_b, grad_image, ga = refresh(a, b, s['ga'] + t[:, None, None] * d_image)
        s_a, s_b, s_image = t[:, None, None] * d_a, t[:, None] * d_b, t[:, None, None] * d_image
        y_a, y_b = grad_a - s['grad_a'], grad_b - s['grad_b']
        y_image = grad_image - s['grad_image']
        sy = _inner(s_a, s_b, y_image, y_b)
        yy = _inner(y_a, y_b, y_image, y_b)
        ss = _inner(s_a, s_b, s_image, s_b)
        _, hy_b, hy_image = _apply_preconditioner(preconditioner, y_a, y_b, y_image)
        yhy = _inner(y_a, y_b, hy_image, hy_b)
        # A pair without positive curvature is stored as an inert slot (rho = 0).
        accept = sy > 1e-10 * jnp.sqrt(jnp.maximum(yy * ss, 0.0))
        slot = s['iteration'] % history
        grad_norm = norm(grad_a, grad_b, grad_image)
        active = s['active']
        stalled = active & ~moved
        return {
            'a': a,
            'b': b,
            'ga': ga,
            'grad_a': grad_a,
            'grad_b': grad_b,
            'grad_image': grad_image,
            's_a': s['s_a'].at[slot].set(s_a),
            's_b': s['s_b'].at[slot].set(s_b),
            's_image': s['s_image'].at[slot].set(s_image),
            'y_a': s['y_a'].at[slot].set(y_a),
            'y_b': s['y_b'].at[slot].set(y_b),
            'y_image': s['y_image'].at[slot].set(y_image),
            'rho': s['rho'].at[slot].set(jnp.where(accept, 1.0 / jnp.where(accept, sy, 1.0), 0.0)),
            'gamma': jnp.where(accept, sy / jnp.maximum(yhy, 1e-30), gamma),
            'iteration': s['iteration'] + 1,
            'n_iter': s['n_iter'] + active.astype(jnp.int32),
            'grad_norm': jnp.where(active, grad_norm, s['grad_norm']),
            'active': active & moved & (grad_norm > tol),
            'stalled': s['stalled'] | stalled,
        }

    s = jax.lax.while_loop(keep_going, step, state)
    return s['a'], s['b'], s['n_iter'], s['grad_norm'], s['stalled']


def _line_search(logits, direction, ga, d_a, d_image, targets, v, C):
    """Minimises each run's objective along its direction; returns (steps, slopes at 0), (R,).

    Along ``t`` the logits are ``logits + t · direction`` and the penalty is
    ``½(⟨A,GA⟩ + 2t⟨d,GA⟩ + t²⟨d,Gd⟩)``, so every trial is O(nK). The 1-D
    function is convex: Newton steps kept inside a bracket (bisection or
    doubling when they leave it) converge to its minimiser.
    """
    p1 = jnp.sum(d_a * ga, axis=(1, 2))
    p2 = jnp.sum(d_a * d_image, axis=(1, 2))

    def derivatives(t):
        probs = jax.nn.softmax(logits + t[:, None, None] * direction)
        first = C * jnp.sum(v * (probs - targets) * direction, axis=(1, 2)) + p1 + t * p2
        mean_dir = jnp.sum(probs * direction, axis=-1, keepdims=True)
        second = C * jnp.sum(v * probs * (direction - mean_dir) * direction, axis=(1, 2)) + p2
        return first, second

    def trial(_, carry):
        t, low, high = carry
        first, second = derivatives(t)
        low = jnp.where(first < 0, t, low)
        high = jnp.where(first >= 0, t, high)
        newton = t - first / jnp.maximum(second, 1e-30)
        inside = (newton > low) & (newton < high)
        fallback = jnp.where(jnp.isinf(high), 2.0 * low, 0.5 * (low + high))
        return jnp.where(inside, newton, fallback), low, high

    runs = logits.shape[0]
    start = (jnp.ones((runs,)), jnp.zeros((runs,)), jnp.full((runs,), jnp.inf))
    t, _, _ = jax.lax.fori_loop(0, _LINE_SEARCH_STEPS, trial, start)
    slope0, _ = derivatives(jnp.zeros((runs,)))
    return t, slope0
