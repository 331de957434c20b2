"""Everyday colour images with no download: crops of scikit-image's bundled photographs.

A stand-in for the paper's 832 ImageNet images (the "natural image" source of
pretraining). Only photographs shipped inside the scikit-image wheel are used,
read straight from its package folder so that its pooch downloader is never
involved; microscopy pictures (cells, retina, immunohistochemistry) are left
out on purpose: this is the non-microscopy control.
"""

from __future__ import annotations

import functools
import os

import numpy as np
from PIL import Image

# Files inside scikit-image's package folder (skimage/data/), read directly so
# that nothing can reach its downloader. Grayscale photographs are replicated
# to three channels, as ImageNet's few grayscale images are.
PHOTO_FILES = (
    'astronaut.png',
    'chelsea.png',
    'coffee.png',
    'rocket.jpg',
    'motorcycle_left.png',
    'camera.png',
    'coins.png',
    'brick.png',
    'grass.png',
    'gravel.png',
    'moon.png',
)


class MissingPhotoError(RuntimeError):
    """A bundled scikit-image photograph could not be read."""


def photo_folder() -> str:
    """scikit-image's folder of bundled data files."""
    import skimage.data

    return os.path.dirname(skimage.data.__file__)


@functools.lru_cache(maxsize=1)
def bundled_photos() -> tuple[Image.Image, ...]:
    """The photographs as RGB PIL images (read once per process).

    Raises:
      MissingPhotoError: naming the file, if the installed scikit-image lacks it.
    """
    photos = []
    for name in PHOTO_FILES:
        path = os.path.join(photo_folder(), name)
        try:
            with Image.open(path) as img:
                photos.append(img.convert('RGB'))
        except (OSError, ValueError) as err:
            raise MissingPhotoError(
                f'cannot read {path} ({err}); everyday() needs the photographs bundled '
                'with scikit-image (reinstall scikit-image)'
            ) from err
    return tuple(photos)


def everyday_crop(rng: np.random.Generator, size: int) -> np.ndarray:
    """One random crop of a random bundled photograph.

    The crop covers 8-100 % of the photo's area (scale), with an aspect ratio
    in [3/4, 4/3] at a uniform position, is flipped left-right with p = 0.5,
    and is resized with antialiasing.

    Args:
      rng: random generator.
      size: output side in pixels.

    Returns:
      float32 (size, size, 3) in [0, 1].
    """
    photos = bundled_photos()
    photo = photos[rng.integers(len(photos))]
    w, h = photo.size
    area = rng.uniform(0.08, 1.0) * w * h
    aspect = np.exp(rng.uniform(np.log(3 / 4), np.log(4 / 3)))
    cw = min(w, np.sqrt(area * aspect))
    ch = min(h, np.sqrt(area / aspect))
    x0 = rng.uniform(0, w - cw)
    y0 = rng.uniform(0, h - ch)
    crop = photo.resize((size, size), Image.BICUBIC, box=(x0, y0, x0 + cw, y0 + ch))
    out = np.asarray(crop, dtype=np.float32) / 255.0
    if rng.random() < 0.5:
        out = out[:, ::-1]
    return np.clip(out, 0.0, 1.0)
