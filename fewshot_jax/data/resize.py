"""The one resize geometry every pipeline and converter shares.

Shorter side to the target size, then the centre square: non-square
micrographs are not distorted, and an image and its mask resized with the same
call (bilinear vs nearest) stay aligned.
"""

from __future__ import annotations

import numpy as np
from PIL import Image


def square_crop_resize(pil: Image.Image, size: int, resample: Image.Resampling) -> np.ndarray:
    """Resizes the shorter side of ``pil`` to ``size`` and returns the centre square as an array."""
    w, h = pil.size
    scale = size / min(w, h)
    new_w, new_h = max(size, round(w * scale)), max(size, round(h * scale))
    if (new_w, new_h) != (w, h):
        pil = pil.resize((new_w, new_h), resample)
    left, top = (new_w - size) // 2, (new_h - size) // 2
    return np.asarray(pil.crop((left, top, left + size, top + size)))
