"""Encoder-free baselines for few-shot probes: raw pixels, texture and intensity statistics.

A pretrained encoder is only worth its compute if its features beat features
that need no training at all. These two are the project's references (the
protocol of `benchmarks/synthetic_calibration.py`: standardise, fit
scikit-learn's LogisticRegression on k labeled images per class):

* `raw_pixels`: block-mean downsampled pixels, flattened. A linear model on
  them sees where things are, not what they look like; on a well-posed
  morphology task it should stay near chance.
* `texture_features`: translation-invariant statistics (log radial power
  spectrum and gradient-orientation histograms). They show that the classes
  differ in morphology, and they are the bar an encoder has to clear.
* `intensity_features`: the grey-level distribution only (moments and
  quantiles), blind to where and how pixels are arranged. A class difference it
  picks up is one of brightness or coverage (how much of the image is
  particle, say), not of shape; an encoder level with it has learned nothing
  about morphology that the histogram does not already hold.

numpy / scipy / scikit-image only, no JAX: usable from any layer. Example::

    from fewshot_jax.probe import baselines
    x = baselines.raw_pixels(images)          # (n, 1024) float32 for side=32
    t = baselines.texture_features(images)    # (n, 32) float32
    s = baselines.intensity_features(images)  # (n, 13) float32
"""

from __future__ import annotations

import numpy as np

from fewshot_jax.errors import is_count

__all__ = [
    'BaselineInputError',
    'INTENSITY_DIM',
    'INTENSITY_QUANTILES',
    'TEXTURE_DIM',
    'downsample',
    'intensity_features',
    'raw_pixels',
    'texture_features',
]

# Texture layout: 16 log radial power bins, 8 orientation means, 8 orientation spreads.
_POWER_BINS = 16
_ORIENTATIONS = 8
_HOG_CELL = 16
TEXTURE_DIM = _POWER_BINS + 2 * _ORIENTATIONS
# Intensity layout: mean, standard deviation, skewness, excess kurtosis, then these quantiles.
INTENSITY_QUANTILES = (0.01, 0.05, 0.10, 0.25, 0.50, 0.75, 0.90, 0.95, 0.99)
INTENSITY_DIM = 4 + len(INTENSITY_QUANTILES)


class BaselineInputError(ValueError):
    """Images a baseline cannot use: wrong shape, too small, or not finite."""


def _check_images(images, name: str = 'images') -> np.ndarray:
    """Returns images as float32 (n, H, W); a trailing channel axis of size 1 is dropped."""
    x = np.asarray(images)
    if x.ndim == 4 and x.shape[-1] == 1:
        x = x[..., 0]
    if x.ndim != 3:
        raise BaselineInputError(
            f'{name} must be a (n, H, W) or (n, H, W, 1) grayscale array, got shape {x.shape}'
        )
    if x.shape[0] == 0:
        raise BaselineInputError(f'{name} is empty (shape {x.shape}); expected at least 1 image')
    if not (np.issubdtype(x.dtype, np.floating) or np.issubdtype(x.dtype, np.integer)):
        raise BaselineInputError(f'{name} must be numeric, got dtype {x.dtype}')
    x = x.astype(np.float32, copy=False)
    if not np.isfinite(x).all():
        bad = int(np.flatnonzero(~np.isfinite(x).reshape(len(x), -1).all(axis=1))[0])
        raise BaselineInputError(f'{name}[{bad}] contains NaN or infinite values')
    return x


def downsample(images, side: int = 32) -> np.ndarray:
    """Block-mean downsampling of (n, H, W) images to (n, side, side).

    Args:
      images: (n, H, W) or (n, H, W, 1) array; H and W must be multiples of `side`.
      side: output side in pixels.

    Returns:
      float32 (n, side, side).

    Raises:
      BaselineInputError: on a wrong shape, a size that is not a multiple of
        `side`, a bad `side`, or NaN / infinite pixels.
    """
    if not is_count(side):
        raise BaselineInputError(f'side must be a positive integer, got {side!r}')
    x = _check_images(images)
    n, h, w = x.shape
    if h % side or w % side:
        raise BaselineInputError(
            f'image size {h}x{w} is not a multiple of side={side}; resize to a multiple first'
        )
    # Mean in float64 so that block sums of large images are not rounded.
    blocks = x.reshape(n, side, h // side, side, w // side).astype(np.float64)
    return blocks.mean(axis=(2, 4)).astype(np.float32)


def raw_pixels(images, side: int = 32) -> np.ndarray:
    """Raw-pixel features: `side` x `side` block-mean pixels, flattened.

    Standardise them (per feature, on the training images) before a linear probe.

    Args:
      images: (n, H, W) or (n, H, W, 1) array; H and W must be multiples of `side`.
      side: side of the downsampled image (32 in the project's calibration).

    Returns:
      float32 (n, side * side).

    Raises:
      BaselineInputError: as `downsample`.
    """
    small = downsample(images, side)
    return small.reshape(len(small), -1)


def texture_features(images) -> np.ndarray:
    """Translation-invariant texture features: radial power spectrum and edge orientations.

    Per image: the log power of the standardised image in 16 radial frequency
    bins (0 to Nyquist), and the mean and standard deviation over 16 x 16
    pixel cells of an 8-orientation histogram of oriented gradients
    (scikit-image's `hog`, one cell per block). Standardising each image first
    makes the spectrum blind to global brightness and contrast.

    Args:
      images: (n, H, W) or (n, H, W, 1) array with H, W >= 16.

    Returns:
      float32 (n, TEXTURE_DIM) = (n, 32).

    Raises:
      BaselineInputError: on a wrong shape, images smaller than 16 px, or NaN /
        infinite pixels.
    """
    from skimage.feature import hog  # imported here: skimage is slow to import

    x = _check_images(images)
    n, h, w = x.shape
    if h < _HOG_CELL or w < _HOG_CELL:
        raise BaselineInputError(
            f'texture_features needs images of at least {_HOG_CELL}x{_HOG_CELL} px, got {h}x{w}'
        )
    freq = np.sqrt(np.fft.fftfreq(h)[:, None] ** 2 + np.fft.fftfreq(w)[None, :] ** 2)
    # np.digitize numbers the bins from 1 (0 <= f < 1/32) to 16; frequencies at or
    # beyond Nyquist (the corners of the spectrum) fall in bin 17 and are dropped.
    bins = np.digitize(freq.ravel(), np.linspace(0, 0.5, _POWER_BINS + 1))
    out = np.empty((n, TEXTURE_DIM), dtype=np.float32)
    for i, img in enumerate(x):
        z = (img - img.mean()) / (img.std() + 1e-6)
        power = np.bincount(bins, (np.abs(np.fft.fft2(z)) ** 2).ravel(), _POWER_BINS + 2)
        cells = hog(
            img,
            orientations=_ORIENTATIONS,
            pixels_per_cell=(_HOG_CELL, _HOG_CELL),
            cells_per_block=(1, 1),
        ).reshape(-1, _ORIENTATIONS)
        out[i] = np.concatenate([np.log(power[1 : _POWER_BINS + 1] + 1e-6), cells.mean(0), cells.std(0)])
    return out


def intensity_features(images) -> np.ndarray:
    """Grey-level statistics per image: four moments and nine histogram quantiles.

    Per image, over all its pixels (as given: [0, 1] floats, or integers as
    integers): the mean, the standard deviation, the skewness
    E[(x - m)^3] / s^3, the excess kurtosis E[(x - m)^4] / s^4 - 3 (both 0 for a
    constant image) and the quantiles of :data:`INTENSITY_QUANTILES` (1 % to
    99 %, linear interpolation between order statistics, numpy's default).

    Args:
      images: (n, H, W) or (n, H, W, 1) array.

    Returns:
      float32 (n, INTENSITY_DIM) = (n, 13).

    Raises:
      BaselineInputError: on a wrong shape or NaN / infinite pixels.
    """
    x = _check_images(images).reshape(len(images), -1).astype(np.float64)
    mean = x.mean(axis=1, keepdims=True)
    centred = x - mean
    std = np.sqrt((centred**2).mean(axis=1))
    # A constant image has no shape to its histogram: skewness and kurtosis are 0, not NaN.
    scale = np.where(std > 0, std, 1.0)[:, None]
    skew = np.where(std > 0, ((centred / scale) ** 3).mean(axis=1), 0.0)
    kurtosis = np.where(std > 0, ((centred / scale) ** 4).mean(axis=1) - 3.0, 0.0)
    quantiles = np.quantile(x, INTENSITY_QUANTILES, axis=1).T
    moments = np.stack([mean[:, 0], std, skew, kurtosis], axis=1)
    return np.concatenate([moments, quantiles], axis=1).astype(np.float32)
