"""Unlabeled TEM-like scenes for self-supervised pretraining.

Stand-in for the paper's CEM500K subset: cellular EM shows membranes and
organelles, vesicles, dense particles, fibres and textured cytoplasm. Each
scene mixes two to four of these element kinds at a random magnification.
Lengths are in units of `u` = size / 256 * magnification, so a 64 px scene is
the same kind of picture as a 256 px one, only smaller.
"""

from __future__ import annotations

import numpy as np

from fewshot_jax.data.synthetic import microscope
from fewshot_jax.data.synthetic.render import Canvas, closed_curve, smooth_noise, worm_path


def _membranes(canvas: Canvas, rng: np.random.Generator, u: float) -> None:
    size = canvas.size
    for _ in range(rng.integers(1, 6)):
        centre = rng.uniform(-0.1, 1.1, 2) * size
        radius = rng.uniform(20, 90) * u
        aspect = rng.uniform(0.35, 1.0)
        outline = closed_curve(rng, centre, radius, rng.uniform(0.0, 0.4), aspect, 64)
        canvas.polygon(outline, rng.uniform(0.05, 0.35))
        width = rng.uniform(1.2, 4.0) * u
        canvas.polygon(outline, rng.uniform(0.6, 1.0), outline_width=width)
        if rng.random() < 0.4:  # double membrane (nucleus, mitochondrion)
            inner = centre + (outline - centre) * (1.0 - 3.5 * u / radius)
            canvas.polygon(inner, rng.uniform(0.6, 1.0), outline_width=width)
        if aspect < 0.6 and rng.random() < 0.6:  # cristae across an elongated organelle
            for _ in range(rng.integers(2, 8)):
                a, b = outline[rng.integers(0, len(outline), 2)]
                canvas.polyline(np.stack([a, b]), max(1.0, 1.2 * u), rng.uniform(0.5, 0.9))


def _vesicles(canvas: Canvas, rng: np.random.Generator, u: float) -> None:
    size = canvas.size
    for _ in range(rng.integers(5, 45)):
        centre = rng.uniform(0, size, 2)
        radius = rng.uniform(3, 11) * u
        if rng.random() < 0.5:
            canvas.disk(centre, radius, rng.uniform(0.05, 0.3))
        canvas.ring(centre, radius, max(1.0, rng.uniform(0.8, 2.0) * u), rng.uniform(0.5, 1.0))


def _particles(canvas: Canvas, rng: np.random.Generator, u: float) -> None:
    size = canvas.size
    count = int(rng.integers(10, 220))
    if rng.random() < 0.5:
        centres = rng.uniform(0, size, (count, 2))
    else:  # aggregated: particles scattered around a few cluster centres
        seeds = rng.uniform(0, size, (rng.integers(1, 6), 2))
        spread = rng.uniform(5, 40) * u
        centres = seeds[rng.integers(0, len(seeds), count)] + rng.normal(0, spread, (count, 2))
    radii = rng.uniform(1.0, 5.0) * u * rng.uniform(0.6, 1.4, count)
    value = rng.uniform(0.7, 1.2)
    for c, r in zip(centres, radii, strict=True):
        canvas.disk(c, r, value)


def _fibres(canvas: Canvas, rng: np.random.Generator, u: float) -> None:
    size = canvas.size
    for _ in range(rng.integers(2, 30)):
        path = worm_path(
            rng,
            rng.uniform(0, size, 2),
            rng.uniform(0, 2 * np.pi),
            rng.uniform(40, 300) * u,
            rng.uniform(15, 300) * u,
            step=max(1.0, 2.0 * u),
        )
        canvas.polyline(path, rng.uniform(1.0, 5.0) * u, rng.uniform(0.5, 1.0))


def _texture(rng: np.random.Generator, size: int, u: float) -> np.ndarray:
    field = smooth_noise(rng, size, rng.uniform(1.5, 10.0) * u)
    if rng.random() < 0.5:  # porous / granular phase-separated material
        return (field > rng.uniform(-0.5, 1.0)).astype(np.float32) * rng.uniform(0.3, 0.8)
    return np.maximum(field, 0.0) * rng.uniform(0.15, 0.4)


_ELEMENTS = (_membranes, _vesicles, _particles, _fibres, None)  # None: texture


def generic_scene(rng: np.random.Generator, size: int, imaging=None) -> np.ndarray:
    """Draws one unlabeled TEM-like micrograph.

    Args:
      rng: random generator (the only source of randomness unless `imaging` has its own).
      size: image side in pixels.
      imaging: a `synthetic_microscope.Imaging` (None: the conditions are drawn from `rng`).

    Returns:
      float32 (size, size) image in [0, 1].
    """
    mag = float(np.exp(rng.uniform(np.log(0.5), np.log(2.0))))
    u = size / 256.0 * mag
    canvas = Canvas(size)
    picks = rng.choice(len(_ELEMENTS), size=rng.integers(2, 5), replace=False)
    texture = None
    for k in picks:
        element = _ELEMENTS[k]
        if element is None:
            texture = _texture(rng, size, u)
        else:
            element(canvas, rng, u)
    density = canvas.density
    if texture is not None:
        density += texture
    return microscope.image_specimen(rng, imaging, density, mag)


def background_clutter(canvas: Canvas, rng: np.random.Generator, u: float) -> None:
    """Stain debris and small vesicles that are not part of any labeled object.

    Drawn the same way for every class of a labeled task, so its presence
    says nothing about the label.
    """
    size = canvas.size
    for _ in range(rng.integers(0, 25)):
        centre = rng.uniform(0, size, 2)
        if rng.random() < 0.7:
            canvas.disk(centre, rng.uniform(0.8, 4.0) * u, rng.uniform(0.2, 0.9))
        else:
            canvas.ring(centre, rng.uniform(3, 9) * u, max(1.0, u), rng.uniform(0.2, 0.6))
