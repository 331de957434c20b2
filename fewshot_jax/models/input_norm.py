"""Input normalisation of the encoder: per-channel statistics, or micrograph flattening.

``'channel'`` is the usual ``(x - mean) / std`` with fixed per-channel statistics (ImageNet's
for torchvision weights). ``'micrograph'`` removes what a transmission micrograph's
imaging conditions add and the specimen does not: the slowly varying background
(uneven illumination, film thickness), the overall contrast and the contrast polarity
(bright-field vs dark-field, positive vs negative stain). Two views of one micrograph share
these per-image conditions, so a self-supervised pretext task can match views by them alone
(benchmarks/RESULTS.md, "Where the gain goes": on the synthetic benchmark this option alone
did not make pretraining beat random init). ``'background'`` removes the background and the
polarity only: the contrast scale stays the one the image came with (the reader's per-image
stretch), divided by the fixed ``std`` as ``'channel'`` does.

Why both: the encoder normalises what it is given, and in pretraining that is a crop. The
contrast of a crop depends on how many objects it happens to hold, so ``'micrograph'``
rescales one object differently in two views of one micrograph when the objects are sparse;
``'background'`` leaves the contrast scale to the reader, which sets it once per whole
micrograph. On six held-out tuning runs the two were level (benchmarks/RESULTS.md,
"Contrast per view or per micrograph"); which suits a data set is for its own tuning split.

Being part of the encoder, the normalisation is applied identically in pretraining, probing
and segmentation, and travels with the saved weights (``model.input_norm`` in the encoder's
metadata)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

INPUT_NORMS = ('channel', 'micrograph', 'background')

# The default background: a Gaussian blur of this fraction of the image side (features much
# smaller than it survive; ``model.background_sigma``); the flattened image is clipped at this
# many standard deviations.
BACKGROUND_SIGMA = 1 / 16
CLIP_SD = 4.0


def _blur_matrix(size: int, sigma: float, radius: int) -> np.ndarray:
    """(size, size) matrix of a 1-D Gaussian blur with reflected edges: row i holds the
    weights of the pixels that output pixel i averages (``scipy.ndimage`` 'reflect': the
    edge pixel repeated, ..., 1, 0 | 0, 1, ...)."""
    offsets = np.arange(-radius, radius + 1)
    kernel = np.exp(-0.5 * (offsets / sigma) ** 2)
    kernel /= kernel.sum()
    rows = np.arange(size)[:, None]
    cols = rows + offsets[None, :]
    cols = np.where(cols < 0, -cols - 1, cols)
    cols = np.where(cols >= size, 2 * size - cols - 1, cols)
    matrix = np.zeros((size, size))
    np.add.at(matrix, (np.broadcast_to(rows, cols.shape), cols), np.broadcast_to(kernel, cols.shape))
    return matrix.astype(np.float32)


def _blur(gray: jax.Array, sigma: float) -> jax.Array:
    """Separable Gaussian blur of (N, H, W) with reflected edges (``scipy.ndimage`` 'reflect').

    As two small matrix products (columns, then rows) rather than convolutions: the cost does
    not grow with sigma, and a wide background blur costs what a narrow one does.
    """
    height, width = gray.shape[1:]
    radius = max(1, min(int(3 * sigma + 0.5), height - 1, width - 1))
    rows = jnp.asarray(_blur_matrix(height, sigma, radius))
    cols = jnp.asarray(_blur_matrix(width, sigma, radius))
    return jnp.einsum('ij,njk,lk->nil', rows, gray, cols, precision=lax.Precision.HIGHEST)


def _high_pass(images: jax.Array, background_sigma: float) -> jax.Array:
    """(N, H, W) channel mean of ``images`` minus its Gaussian blur (sigma = ``background_sigma``
    times the longer side)."""
    gray = jnp.mean(images.astype(jnp.float32), axis=-1)
    sigma = max(gray.shape[1], gray.shape[2]) * background_sigma
    return gray - _blur(gray, sigma)


def _one_polarity(x: jax.Array) -> jax.Array:
    """(N, H, W) images turned over where their third moment is negative: the objects, the
    sparse tail of the intensities, come out bright whatever their polarity."""
    skew = jnp.mean(x**3, axis=(1, 2), keepdims=True)
    return jnp.where(skew < 0, -x, x)


def flatten_micrograph(images: jax.Array, background_sigma: float = BACKGROUND_SIGMA) -> jax.Array:
    """Background-flattened, unit-contrast, one-polarity version of micrographs.

    Per image: the channel mean, minus its Gaussian blur (sigma = ``background_sigma`` times
    the longer side; 1/16 by default), divided by its standard deviation; the sign is chosen
    so the image has positive skewness (the objects, the sparse tail of the intensities, come
    out bright whatever their polarity); clipped to +-4 standard deviations.

    Args:
        images: float (N, H, W, C) in any intensity range.
        background_sigma: the blur's sigma as a fraction of the image side. Objects much
            smaller than the blur keep their interiors; an object as large as it is partly
            flattened away with the background.

    Returns:
        float32 (N, H, W, C), every channel the same, about zero mean and unit spread.
    """
    x = _high_pass(images, background_sigma)
    x = _one_polarity(x / (jnp.std(x, axis=(1, 2), keepdims=True) + 1e-6))
    x = jnp.clip(x, -CLIP_SD, CLIP_SD)
    return jnp.broadcast_to(x[..., None], images.shape)


def subtract_background(
    images: jax.Array, background_sigma: float = BACKGROUND_SIGMA, std: float = 1.0
) -> jax.Array:
    """Background-subtracted, one-polarity micrographs at the contrast scale they came with.

    Per image: the channel mean minus its Gaussian blur (as in ``flatten_micrograph``), turned
    over where its skewness is negative, divided by the fixed ``std``. Unlike
    ``flatten_micrograph`` nothing depends on the image's own spread, so an object keeps its
    contrast whatever else a crop holds.

    Args:
        images: float (N, H, W, C), in [0, 1] as the reader and the augmentations give them.
        background_sigma: the blur's sigma as a fraction of the image side.
        std: the fixed scale (the encoder's mean ``input_std``).

    Returns:
        float32 (N, H, W, C), every channel the same.
    """
    x = _one_polarity(_high_pass(images, background_sigma)) / std
    return jnp.broadcast_to(x[..., None], images.shape)


def normalise_input(images: jax.Array, input_norm: str, background_sigma: float, mean, std) -> jax.Array:
    """``images`` (N, H, W, C) in [0, 1] as an encoder with ``input_norm`` sees them (float32)."""
    if input_norm == 'micrograph':
        return flatten_micrograph(images, background_sigma)
    if input_norm == 'background':
        return subtract_background(images, background_sigma, float(np.mean(std)))
    return (images.astype(jnp.float32) - jnp.asarray(mean, jnp.float32)) / jnp.asarray(std, jnp.float32)
