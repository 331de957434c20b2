"""Geometry and rasterisation helpers for the synthetic TEM generator.

Everything here works on one image at a time from an explicit
`np.random.Generator`, so callers control determinism. Shapes are drawn with
PIL (C rasterisers: a few microseconds per primitive), noise fields with one
FFT each; this is what keeps 400 images of 256 px under ten seconds on a core.
"""

from __future__ import annotations

import functools

import numpy as np
from PIL import Image, ImageDraw


@functools.lru_cache(maxsize=16)
def _radial_frequency_sq(size: int) -> np.ndarray:
    """Squared spatial frequency (cycles/pixel) on the rfft2 grid of a square image."""
    fy = np.fft.fftfreq(size)[:, None]
    fx = np.fft.rfftfreq(size)[None, :]
    return (fy * fy + fx * fx).astype(np.float32)


def smooth_noise(rng: np.random.Generator, size: int, scale: float) -> np.ndarray:
    """Gaussian-filtered white noise, standardised to zero mean and unit variance.

    Args:
      rng: random generator.
      size: side of the square field in pixels.
      scale: correlation length in pixels (the Gaussian filter's sigma).

    Returns:
      float32 (size, size) field.
    """
    white = rng.standard_normal((size, size), dtype=np.float32)
    # Filtering in Fourier space costs the same for every scale, unlike a
    # spatial Gaussian whose kernel grows with sigma.
    transfer = np.exp(-2.0 * (np.pi * scale) ** 2 * _radial_frequency_sq(size))
    field = np.fft.irfft2(np.fft.rfft2(white) * transfer, s=(size, size)).astype(np.float32)
    field -= field.mean()
    std = field.std()
    return field / std if std > 0 else field


def worm_path(
    rng: np.random.Generator,
    start: np.ndarray,
    heading: float,
    length: float,
    persistence: float,
    step: float = 2.0,
) -> np.ndarray:
    """Centre line of a worm-like chain (a 2-D random walk of the heading).

    Args:
      rng: random generator.
      start: (2,) start point (x, y) in pixels.
      heading: initial direction in radians.
      length: contour length in pixels.
      persistence: persistence length in pixels; the heading's variance grows
        by step / persistence per step, as for a worm-like polymer.
      step: spacing of the returned points in pixels.

    Returns:
      float (m, 2) array of (x, y) points, m >= 2.
    """
    n_steps = max(1, int(np.ceil(length / step)))
    turns = rng.normal(0.0, np.sqrt(step / max(persistence, 1e-3)), n_steps)
    angles = heading + np.cumsum(turns)
    deltas = step * np.stack([np.cos(angles), np.sin(angles)], axis=1)
    return np.concatenate([start[None, :], start[None, :] + np.cumsum(deltas, axis=0)])


def spread_points(
    rng: np.random.Generator,
    size: int,
    count: int,
    min_dist: float,
    weight: np.ndarray | None = None,
) -> np.ndarray:
    """Up to `count` points in the frame, pairwise at least min_dist apart.

    Greedy rejection from 4 * count candidates, so crowded requests return fewer.

    Args:
      rng: random generator.
      size: side of the square frame in pixels.
      count: number of points wanted.
      min_dist: smallest allowed distance between two points.
      weight: optional (size, size) field in [0, 1]; a candidate is kept with
        the probability the field has under it (uneven coverage). None: uniform.

    Returns:
      float (m, 2) array of (x, y), m <= count.
    """
    candidates = rng.uniform(0, size, (count * 4, 2))
    if weight is not None:
        # Thin the candidates by the weight field; draw more so that as many survive.
        candidates = rng.uniform(0, size, (count * 16, 2))
        cells = np.clip(candidates.astype(int), 0, size - 1)
        keep = rng.random(len(candidates)) < weight[cells[:, 1], cells[:, 0]]
        candidates = candidates[keep][: count * 4]
    kept = np.empty((count, 2))
    n = 0
    for p in candidates:
        if n == count:
            break
        if n == 0 or np.min(np.sum((kept[:n] - p) ** 2, axis=1)) >= min_dist**2:
            kept[n] = p
            n += 1
    return kept[:n]


def closed_curve(
    rng: np.random.Generator,
    centre: np.ndarray,
    radius: float,
    roughness: float,
    aspect: float = 1.0,
    n_points: int = 48,
) -> np.ndarray:
    """A smooth closed outline: a circle with a random low-order Fourier wobble.

    Args:
      rng: random generator.
      centre: (2,) centre (x, y).
      radius: mean radius in pixels.
      roughness: relative amplitude of the wobble (0 gives an ellipse).
      aspect: ratio of the y to the x semi-axis before rotation.
      n_points: number of polygon vertices.

    Returns:
      float (n_points, 2) polygon.
    """
    t = np.linspace(0.0, 2 * np.pi, n_points, endpoint=False)
    r = np.ones_like(t)
    for harmonic in range(2, 6):
        amp = roughness * rng.normal() / harmonic
        r += amp * np.cos(harmonic * t + rng.uniform(0, 2 * np.pi))
    r = radius * np.clip(r, 0.3, None)
    rot = rng.uniform(0, np.pi)
    x, y = r * np.cos(t), aspect * r * np.sin(t)
    c, s = np.cos(rot), np.sin(rot)
    return np.stack([centre[0] + c * x - s * y, centre[1] + s * x + c * y], axis=1)


def rasterize_path(size: int, points: np.ndarray, widths) -> np.ndarray:
    """Binary mask of one thick polyline whose width may vary along it.

    Args:
      size: side of the square mask.
      points: (m, 2) centre line (x, y) in pixels.
      widths: a width in pixels, or (m,) widths along the line.

    Returns:
      uint8 (size, size) mask with values {0, 1}.
    """
    layer = Image.new('L', (size, size), 0)
    draw = ImageDraw.Draw(layer)
    widths = np.broadcast_to(np.asarray(widths, dtype=float), (len(points),))
    _draw_tapered(draw, np.asarray(points, dtype=float), widths, 1)
    return np.asarray(layer)


def _draw_tapered(draw: ImageDraw.ImageDraw, points: np.ndarray, widths: np.ndarray, fill):
    """Short overlapping runs with round joints and caps, each at its local width."""
    chunk = 6
    for i in range(0, max(len(points) - 1, 1), chunk):
        seg = [tuple(p) for p in points[i : i + chunk + 1]]
        w = max(1, int(round(widths[min(i + chunk // 2, len(widths) - 1)])))
        if len(seg) > 1:
            draw.line(seg, fill=fill, width=w, joint='curve')
        if w > 2:  # round caps so consecutive runs join without notches
            for x, y in (seg[0], seg[-1]):
                r = w / 2.0
                draw.ellipse([x - r, y - r, x + r, y + r], fill=fill)


class Canvas:
    """A float32 density map plus an optional binary mask, drawn with PIL.

    Density is what the microscope model turns into contrast (stain mass or
    projected thickness); the mask is the exact ground truth of the objects
    that belong to it. Painting is last-writer-wins, like stacked objects
    seen in projection with saturating stain.
    """

    def __init__(self, size: int, with_mask: bool = False):
        self.size = size
        self._density = Image.new('F', (size, size), 0.0)
        self._draw = ImageDraw.Draw(self._density)
        self._mask = Image.new('L', (size, size), 0) if with_mask else None
        self._mask_draw = ImageDraw.Draw(self._mask) if with_mask else None

    def polyline(self, points: np.ndarray, width: float, value: float, in_mask: bool = False):
        """Thick open polyline with round joints and round caps."""
        w = max(1, int(round(width)))
        pts = [tuple(p) for p in np.asarray(points, dtype=float)]
        self._draw.line(pts, fill=float(value), width=w, joint='curve')
        if in_mask:
            self._mask_draw.line(pts, fill=1, width=w, joint='curve')
        if w > 2:
            for end in (pts[0], pts[-1]):
                self.disk(np.asarray(end), w / 2.0, value, in_mask)

    def tapered_polyline(self, points: np.ndarray, widths: np.ndarray, value: float, in_mask: bool = False):
        """Polyline whose width varies along it, drawn as short overlapping runs."""
        points = np.asarray(points, dtype=float)
        widths = np.broadcast_to(np.asarray(widths, dtype=float), (len(points),))
        _draw_tapered(self._draw, points, widths, float(value))
        if in_mask:
            _draw_tapered(self._mask_draw, points, widths, 1)

    def polygon(self, points: np.ndarray, value: float, in_mask: bool = False, outline_width=0):
        """Filled polygon, or only its outline when outline_width > 0."""
        pts = [tuple(p) for p in np.asarray(points, dtype=float)]
        if outline_width > 0:
            self.polyline(np.concatenate([points, points[:1]]), outline_width, value, in_mask)
            return
        self._draw.polygon(pts, fill=float(value))
        if in_mask:
            self._mask_draw.polygon(pts, fill=1)

    def disk(self, centre: np.ndarray, radius: float, value: float, in_mask: bool = False):
        """Filled disk."""
        r = max(radius, 0.5)
        box = [centre[0] - r, centre[1] - r, centre[0] + r, centre[1] + r]
        self._draw.ellipse(box, fill=float(value))
        if in_mask:
            self._mask_draw.ellipse(box, fill=1)

    def ring(self, centre: np.ndarray, radius: float, width: float, value: float):
        """Circle outline (never part of the mask: used for background clutter)."""
        r = max(radius, 1.0)
        box = [centre[0] - r, centre[1] - r, centre[0] + r, centre[1] + r]
        self._draw.ellipse(box, outline=float(value), width=max(1, int(round(width))))

    @property
    def density(self) -> np.ndarray:
        return np.array(self._density, dtype=np.float32)

    @property
    def mask(self) -> np.ndarray | None:
        return None if self._mask is None else np.array(self._mask, dtype=np.uint8)
