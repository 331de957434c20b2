"""Input normalisation of the encoder: per-channel statistics, or micrograph flattening.

``'channel'`` is the usual ``(x - mean) / std`` with fixed per-channel statistics (ImageNet's
for torchvision weights). ``'micrograph'`` removes what a transmission micrograph's
imaging conditions add and the specimen does not: the slowly varying background
(uneven illumination, film thickness), the overall contrast and the contrast polarity
(bright-field vs dark-field, positive vs negative stain). Measured on the synthetic
benchmark (benchmarks/RESULTS.md, "Does pretraining beat random init?"), these per-image
nuisances are what a self-supervised pretext task latches on to: two views of one
micrograph share them, so matching views needs nothing else. Being part of the encoder,
the normalisation is applied identically in pretraining, probing and segmentation, and
travels with the saved weights (``model.input_norm`` in the encoder's metadata).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

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
    padded = jnp.pad(gray, ((0, 0), (radius, radius), (radius, radius)), mode='symmetric')
    rows = sum(kernel[i] * padded[:, i : i + height, :] for i in range(2 * radius + 1))
    return sum(kernel[i] * rows[:, :, i : i + width] for i in range(2 * radius + 1))


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
