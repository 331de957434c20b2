"""Tiling geometry of :meth:`Segmenter.predict <fewshot_jax.segment.segmenter.Segmenter.predict>`.

Tiles start on the model's 32-px stride grid and overlap by at least the
requested amount (:func:`tile_starts`); overlapping tiles are blended with
weights that drop the outer quarter of each shared overlap (:func:`blend_weights`);
probabilities are resized bilinearly (:func:`resize`).
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from fewshot_jax.models.unet import DOWNSAMPLING

__all__ = ['blend_weights', 'resize', 'tile_starts', 'tile_stride']


def tile_stride(tile: int, overlap: int) -> int:
    """Distance between tile starts: at most ``tile - overlap``, a multiple of 32 (>= 32).

    Starts on the model's 32-px stride grid see exactly the pixels a whole-image pass
    sees at the same place, so a tile agrees with the whole image wherever its own
    borders are out of reach.
    """
    return max(DOWNSAMPLING, (tile - overlap) // DOWNSAMPLING * DOWNSAMPLING)


def tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Start offsets of ``tile``-px tiles covering ``length`` px (multiples of 32).

    The first tile starts at 0 and the last ends at ``length``; the others are spread
    evenly on the 32-px grid, at most :func:`tile_stride` apart.
    """
    if length <= tile:
        return [0]
    stride = tile_stride(tile, overlap)
    count = -(-(length - tile) // stride) + 1
    spots = np.linspace(0, length - tile, count) / DOWNSAMPLING
    return [int(v) * DOWNSAMPLING for v in np.rint(spots)]


def blend_weights(tile: int, overlap: int, first: bool = False, last: bool = False) -> np.ndarray:
    """Blending weight along one side of a tile, float32 (tile,).

    Towards a side shared with another tile, the weight is 0 for the outer quarter
    of the overlap (pixels whose context the tile cut off) and rises linearly to 1
    at half the overlap; towards the image's own border (``first``/``last``) it is 1.
    Where two tiles overlap by ``overlap`` px, at least one weight is positive.
    """
    pos = np.arange(tile, dtype=np.float64) + 0.5
    margin = overlap / 4
    ramp = max(overlap / 2 - margin, 1e-6)
    rise = np.clip((pos - margin) / ramp, 0.0, 1.0)
    weight = np.ones(tile)
    if not first:
        weight = np.minimum(weight, rise)
    if not last:
        weight = np.minimum(weight, rise[::-1])
    return weight.astype(np.float32)


def resize(array: np.ndarray, height: int, width: int) -> np.ndarray:
    """Bilinear resize of float32 (H, W) or (H, W, C) (PIL, antialiased when shrinking)."""
    if array.shape[:2] == (height, width):
        return array
    if array.ndim == 2:
        return np.asarray(
            Image.fromarray(array.astype(np.float32), mode='F').resize(
                (width, height), Image.Resampling.BILINEAR
            )
        )
    return np.stack([resize(array[..., c], height, width) for c in range(array.shape[-1])], -1)
