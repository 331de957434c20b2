"""Self-supervised pretraining losses: NT-Xent (SimCLR) and Barlow Twins.

Both losses are pure ``jnp`` functions of the two views' projections over the
*global* batch. Under ``jax.jit`` with the batch sharded along axis 0 of a
``('data',)`` mesh (``AxisType.Auto``), the compiler inserts the cross-device
communication that the negatives / cross-correlation need, so there is no
``psum`` and no named axis here.

Each loss has two variants:

* ``'standard'`` follows the SimCLR / Barlow Twins papers and is the default.
* ``'paper'`` reproduces the original Keras notebooks of the microscopy paper
  (cross-view-only NT-Xent; Barlow Twins terms divided by D and D(D-1)).

Inputs may be any floating dtype; everything is computed in float32 and the
matrix products use ``Precision.HIGHEST`` because on GPUs the default float32
matmul may run in TF32, which is too coarse for a loss whose diagonal terms
sit near 1 (the products are tiny next to the encoder, so it costs nothing).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

NT_XENT_VARIANTS = ('standard', 'paper')
BARLOW_TWINS_VARIANTS = ('standard', 'paper')

# Rows with (near) zero norm are divided by this instead of by ~0, as in
# torch.nn.functional.normalize, so the loss and its gradient stay finite.
_NORM_FLOOR = 1e-12

_HIGHEST = jax.lax.Precision.HIGHEST


class LossInputError(ValueError):
    """A loss was called with arrays or settings it cannot use."""


def _check_projections(loss_name: str, z1: jax.Array, z2: jax.Array) -> None:
    """Validates the static shapes and dtypes of the two views' projections.

    Shapes are static under ``jit``, so these checks run once at trace time.
    """
    z1_shape, z2_shape = tuple(jnp.shape(z1)), tuple(jnp.shape(z2))
    if z1_shape != z2_shape:
        raise LossInputError(
            f'{loss_name}: z1 and z2 must have the same shape (N, D), got z1 {z1_shape} and z2 {z2_shape}.'
        )
    if len(z1_shape) != 2:
        raise LossInputError(f'{loss_name}: projections must be 2-D (N, D), got shape {z1_shape}.')
    n, d = z1_shape
    if n < 2:
        raise LossInputError(
            f'{loss_name}: needs a batch of at least 2 images (N >= 2), got N={n} (shape {z1_shape}).'
        )
    if d < 1:
        raise LossInputError(
            f'{loss_name}: projections need at least one dimension (D >= 1), got shape {z1_shape}.'
        )
    for name, z in (('z1', z1), ('z2', z2)):
        dtype = jnp.result_type(z)
        if not jnp.issubdtype(dtype, jnp.floating):
            raise LossInputError(f'{loss_name}: {name} must have a floating dtype, got {dtype}.')


def _check_variant(loss_name: str, variant: str, allowed: tuple[str, ...]) -> None:
    if variant not in allowed:
        raise LossInputError(f'{loss_name}: unknown variant {variant!r}; expected one of {allowed}.')


def _check_static_number(loss_name: str, name: str, value, minimum: float, inclusive: bool) -> None:
    """Rejects out-of-range hyperparameters when they are plain Python numbers.

    Traced values (e.g. a scheduled temperature) cannot be checked without
    data-dependent control flow, so they pass through unchecked.
    """
    if not isinstance(value, (int, float)):
        return
    ok = value >= minimum if inclusive else value > minimum
    if not ok:
        bound = '>=' if inclusive else '>'
        raise LossInputError(f'{loss_name}: {name} must be {bound} {minimum}, got {value}.')


def _l2_normalize_rows(z: jax.Array) -> jax.Array:
    squared_norm = jnp.sum(z * z, axis=1, keepdims=True)
    return z * jax.lax.rsqrt(jnp.maximum(squared_norm, _NORM_FLOOR**2))


def nt_xent(
    z1: jax.Array,
    z2: jax.Array,
    temperature: float = 0.1,
    variant: str = 'standard',
) -> jax.Array:
    """Normalised temperature-scaled cross-entropy (SimCLR's NT-Xent) loss.

    Row ``i`` of ``z1`` and row ``i`` of ``z2`` are two augmented views of the
    same image (a positive pair); every other view is a negative.

    Args:
      z1: (N, D) projections of the first view of N images, any float dtype.
      z2: (N, D) projections of the second view of the same images, in the
        same order.
      temperature: softmax temperature τ > 0 applied to cosine similarities.
      variant: ``'standard'`` — the SimCLR paper: all 2N views are anchors,
        each with its other view as positive and the remaining 2N − 2 views
        (both same-view and cross-view) as negatives; self-similarity is
        excluded. ``'paper'`` — the original notebooks: only cross-view
        similarities S = ẑ1 ẑ2ᵀ / τ are used, logits ``[S; Sᵀ]`` (2N × N)
        with the diagonal as the target (N − 1 negatives per anchor).

    Returns:
      Scalar float32: the mean cross-entropy over the 2N anchors.

    Raises:
      LossInputError: (a ValueError) for an unknown variant, z1/z2 shapes that
        differ or are not (N, D) with N >= 2, a non-float dtype, or a Python
        number temperature <= 0.
    """
    _check_variant('nt_xent', variant, NT_XENT_VARIANTS)
    _check_projections('nt_xent', z1, z2)
    _check_static_number('nt_xent', 'temperature', temperature, 0.0, inclusive=False)

    n = z1.shape[0]
    u1 = _l2_normalize_rows(jnp.asarray(z1, jnp.float32))
    u2 = _l2_normalize_rows(jnp.asarray(z2, jnp.float32))
    inv_tau = 1.0 / jnp.asarray(temperature, jnp.float32)

    if variant == 'paper':
        cross = jnp.matmul(u1, u2.T, precision=_HIGHEST) * inv_tau
        logits = jnp.concatenate([cross, cross.T], axis=0)  # (2N, N)
        positives = jnp.concatenate([jnp.diagonal(cross), jnp.diagonal(cross)])
        return jnp.mean(jax.nn.logsumexp(logits, axis=1) - positives)

    views = jnp.concatenate([u1, u2], axis=0)  # (2N, D)
    logits = jnp.matmul(views, views.T, precision=_HIGHEST) * inv_tau  # (2N, 2N)
    # The positive of view k is the other view of the same image: k ± N.
    positives = jnp.concatenate([jnp.diagonal(logits, offset=n), jnp.diagonal(logits, offset=-n)])
    # -inf (not a large finite value) removes self-similarity exactly at any τ;
    # logsumexp and the gradient of `where` handle it without NaNs.
    self_mask = jnp.eye(2 * n, dtype=bool)
    logits = jnp.where(self_mask, -jnp.inf, logits)
    return jnp.mean(jax.nn.logsumexp(logits, axis=1) - positives)


def _standardize_columns(z: jax.Array, eps: float | None) -> jax.Array:
    """Per-dimension batch standardisation with the biased (population) variance."""
    centered = z - jnp.mean(z, axis=0, keepdims=True)
    variance = jnp.mean(centered * centered, axis=0, keepdims=True)
    if eps is None:
        # The notebooks divided by the bare std: a constant dimension gives NaN,
        # which is kept on purpose so the 'paper' variant stays exact.
        return centered / jnp.sqrt(variance)
    return centered * jax.lax.rsqrt(variance + eps)


def barlow_twins(
    z1: jax.Array,
    z2: jax.Array,
    lambd: float = 0.005,
    variant: str = 'standard',
    eps: float = 1e-5,
) -> jax.Array:
    """Barlow Twins redundancy-reduction loss.

    Each of the D projection dimensions is standardised over the batch, then
    the cross-correlation C = z̃1ᵀ z̃2 / N (D × D) is pushed towards identity.

    Args:
      z1: (N, D) projections of the first view of N images, any float dtype.
      z2: (N, D) projections of the second view of the same images, in the
        same order.
      lambd: weight λ >= 0 of the off-diagonal (redundancy reduction) term.
      variant: ``'standard'`` — the Barlow Twins paper:
        z̃ = (z − mean) / sqrt(var + eps) and
        loss = Σᵢ (1 − Cᵢᵢ)² + λ Σᵢ≠ⱼ Cᵢⱼ².
        ``'paper'`` — the original notebooks: z̃ = (z − mean) / std without
        ``eps`` (a constant dimension gives NaN, as it did there) and
        loss = Σᵢ (1 − Cᵢᵢ)² / D + λ Σᵢ≠ⱼ Cᵢⱼ² / (D(D − 1)); for D = 1 the
        off-diagonal sum is empty and contributes 0.
      eps: variance floor for the ``'standard'`` variant; ignored by
        ``'paper'``.

    Returns:
      Scalar float32 loss.

    Raises:
      LossInputError: (a ValueError) for an unknown variant, z1/z2 shapes that
        differ or are not (N, D) with N >= 2, a non-float dtype, or a Python
        number lambd < 0 or eps < 0.
    """
    _check_variant('barlow_twins', variant, BARLOW_TWINS_VARIANTS)
    _check_projections('barlow_twins', z1, z2)
    _check_static_number('barlow_twins', 'lambd', lambd, 0.0, inclusive=True)
    _check_static_number('barlow_twins', 'eps', eps, 0.0, inclusive=True)

    n, d = z1.shape
    standardize_eps = None if variant == 'paper' else eps
    s1 = _standardize_columns(jnp.asarray(z1, jnp.float32), standardize_eps)
    s2 = _standardize_columns(jnp.asarray(z2, jnp.float32), standardize_eps)
    # Contracting the (sharded) batch axis; XLA adds the all-reduce.
    cross_corr = jnp.matmul(s1.T, s2, precision=_HIGHEST) / n

    on_diag = jnp.sum(jnp.square(1.0 - jnp.diagonal(cross_corr)))
    # Masking rather than sum(C²) − sum(diag²) avoids cancellation when the
    # diagonal is ~1 and the off-diagonal entries are tiny.
    off_diag_entries = jnp.where(jnp.eye(d, dtype=bool), 0.0, cross_corr)
    off_diag = jnp.sum(jnp.square(off_diag_entries))

    if variant == 'paper':
        return on_diag / d + lambd * off_diag / max(d * (d - 1), 1)
    return on_diag + lambd * off_diag
