"""Input normalisation of the encoder: per-channel statistics, or micrograph flattening.

``'channel'`` is the usual ``(x - mean) / std`` with fixed per-channel statistics (ImageNet's
for torchvision weights). ``'micrograph'`` removes what a transmission micrograph's
imaging conditions add and the specimen does not: the slowly varying background
(uneven illumination, film thickness), the overall contrast and the contrast polarity
(bright-field vs dark-field, positive vs negative stain). Two views of one micrograph share
these per-image conditions, so a self-supervised pretext task can match views by them alone
(benchmarks/RESULTS.md, "Where the gain goes": on the synthetic benchmark this option alone
did not make pretraining beat random init). Being part of the encoder,
the normalisation is applied identically in pretraining, probing and segmentation, and
travels with the saved weights (``model.input_norm`` in the encoder's metadata).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

INPUT_NORMS = ('channel', 'micrograph')

# Background: a Gaussian blur of this fraction of the image side (features much smaller
# than it survive); the flattened image is clipped at this many standard deviations.
BACKGROUND_SIGMA = 1 / 16
CLIP_SD = 4.0


def _gaussian_kernel(sigma: float, radius: int) -> jax.Array:
    offsets = jnp.arange(-radius, radius + 1, dtype=jnp.float32)
    kernel = jnp.exp(-0.5 * (offsets / sigma) ** 2)
    return kernel / jnp.sum(kernel)


def _blur(gray: jax.Array, sigma: float) -> jax.Array:
    """Separable Gaussian blur of (N, H, W) with reflected edges (``scipy.ndimage`` 'reflect')."""
    height, width = gray.shape[1:]
    radius = max(1, min(int(3 * sigma + 0.5), height - 1, width - 1))
    kernel = _gaussian_kernel(sigma, radius)
    padded = jnp.pad(gray, ((0, 0), (radius, radius), (radius, radius)), mode='symmetric')[..., None]
    # Two 1-D convolutions (columns, then rows), NHWC with one channel.
    dims = ('NHWC', 'HWIO', 'NHWC')
    x = lax.conv_general_dilated(padded, kernel.reshape(-1, 1, 1, 1), (1, 1), 'VALID', dimension_numbers=dims)
    x = lax.conv_general_dilated(x, kernel.reshape(1, -1, 1, 1), (1, 1), 'VALID', dimension_numbers=dims)
    return x[..., 0]


def flatten_micrograph(images: jax.Array) -> jax.Array:
    """Background-flattened, unit-contrast, one-polarity version of micrographs.

    Per image: the channel mean, minus its Gaussian blur (sigma = side / 16), divided by
    its standard deviation; the sign is chosen so the image has positive skewness (the
    objects, the sparse tail of the intensities, come out bright whatever their
    polarity); clipped to +-4 standard deviations.

    Args:
        images: float (N, H, W, C) in any intensity range.

    Returns:
        float32 (N, H, W, C), every channel the same, about zero mean and unit spread.
    """
    gray = jnp.mean(images.astype(jnp.float32), axis=-1)
    sigma = max(gray.shape[1], gray.shape[2]) * BACKGROUND_SIGMA
    x = gray - _blur(gray, sigma)
    x = x / (jnp.std(x, axis=(1, 2), keepdims=True) + 1e-6)
    skew = jnp.mean(x**3, axis=(1, 2), keepdims=True)
    x = jnp.where(skew < 0, -x, x)
    x = jnp.clip(x, -CLIP_SD, CLIP_SD)
    return jnp.broadcast_to(x[..., None], images.shape)
