"""Synthetic peptide/protein nanowire morphologies with exact masks.

Four classes as in the paper's nanowire set: singular (one wire), dispersed
(several wires, no cluster spans the image), network (wires percolating across
both dimensions) and bundle (thick aligned bundles of wires). Wires are
worm-like chains with per-image width, length and persistence, drawn at a
random magnification. The dispersed/network label is enforced with the same
criterion the paper used (`analysis.percolation.percolates` on the mask):
scenes are generated, checked and redrawn.

Wire density is additive (crossings and overlapping strands look darker, as
projected mass does in TEM); the mask is the union of all wires.
"""

from __future__ import annotations

import numpy as np

from fewshot_jax.masks import percolates
from fewshot_jax.data import synthetic_microscope as microscope
from fewshot_jax.data.synthetic_render import Canvas, rasterize_path, smooth_noise, worm_path
from fewshot_jax.data.synthetic_scenes import background_clutter

CLASS_NAMES = ("singular", "dispersed", "network", "bundle")
MAX_TRIES = 60


class GenerationError(RuntimeError):
    """A scene with the requested morphology could not be drawn."""


class _Wires:
    """Accumulates additive wire density and the union mask."""

    def __init__(self, size: int):
        self.size = size
        self.density = np.zeros((size, size), np.float32)
        self.mask = np.zeros((size, size), np.uint8)

    def add(self, points: np.ndarray, widths, value: float) -> None:
        layer = rasterize_path(self.size, points, widths)
        # Blur spreads a one-pixel wire over several pixels; darker stain keeps
        # thin wires as visible as they are to an annotator in real micrographs.
        boost = np.clip(2.5 / max(float(np.mean(widths)), 1.0), 1.0, 2.5)
        self.density += value * boost * layer
        np.maximum(self.mask, layer, out=self.mask)


class _Style:
    """Per-image wire statistics, shared by all classes so none is a giveaway."""

    def __init__(self, rng: np.random.Generator, size: int):
        self.mag = float(np.exp(rng.uniform(np.log(0.5), np.log(2.0))))
        self.u = size / 256.0 * self.mag
        self.width = rng.uniform(1.5, 4.5) * self.u
        self.length = rng.uniform(70, 300) * self.u
        self.persistence = rng.uniform(40, 600) * self.u
        self.value = rng.uniform(0.7, 1.1)


def _wire_path(rng, size, style: _Style, length_scale=1.0, centre=None, heading=None):
    """A wire centred on `centre` (random in the frame by default)."""
    length = min(style.length * length_scale * rng.uniform(0.6, 1.4), 3.0 * size)
    path = worm_path(
        rng,
        np.zeros(2),
        rng.uniform(0, 2 * np.pi) if heading is None else heading,
        length,
        style.persistence * rng.uniform(0.7, 1.3),
        step=max(1.0, 1.5 * style.u),
    )
    if centre is None:
        centre = rng.uniform(0.05, 0.95, 2) * size
    # Anchor the middle of the contour (not the mean point, which a curled
    # wire may leave far from the wire itself).
    return path - path[len(path) // 2] + centre


def _wire_widths(rng, path: np.ndarray, style: _Style) -> np.ndarray:
    """Width along a wire: a per-wire value with a slow +-20 % modulation."""
    t = np.arange(len(path))
    wobble = np.sin(t / rng.uniform(5, 20) + rng.uniform(0, 2 * np.pi))
    return style.width * rng.uniform(0.75, 1.25) * (1.0 + 0.2 * wobble)


def _add_wire(rng, wires: _Wires, style: _Style, **kwargs) -> None:
    path = _wire_path(rng, wires.size, style, **kwargs)
    wires.add(path, _wire_widths(rng, path, style), style.value * rng.uniform(0.8, 1.2))


def _singular(rng, size, style):
    wires = _Wires(size)
    centre = rng.uniform(0.3, 0.7, 2) * size
    _add_wire(rng, wires, style, length_scale=rng.uniform(1.3, 2.5), centre=centre)
    return wires


def _dispersed(rng, size, style):
    count = int(rng.integers(3, 24))
    for _ in range(MAX_TRIES):
        wires = _Wires(size)
        for _ in range(count):
            _add_wire(rng, wires, style)
        if not percolates(wires.mask):
            return wires
        count = max(2, int(count * 0.8))  # too crowded for this style: thin out and retry
    raise GenerationError("could not draw a non-percolating dispersed scene")


def _network(rng, size, style):
    for _ in range(MAX_TRIES):
        wires = _Wires(size)
        # Longer wires than the dispersed class on average, but the ranges overlap.
        scale = rng.uniform(1.0, 2.0)
        added = 0
        while added < 400:
            _add_wire(rng, wires, style, length_scale=scale)
            added += 1
            if added >= 3 and percolates(wires.mask):
                for _ in range(rng.integers(0, added // 3 + 1)):
                    _add_wire(rng, wires, style, length_scale=scale)
                if percolates(wires.mask):
                    return wires
                break
    raise GenerationError("could not draw a percolating network scene")


def _bundle(rng, size, style):
    wires = _Wires(size)
    for _ in range(rng.integers(1, 4)):
        centre = rng.uniform(0.2, 0.8, 2) * size
        axis = _wire_path(rng, size, style, length_scale=rng.uniform(1.2, 2.5), centre=centre)
        tangent = np.gradient(axis, axis=0)
        tangent /= np.linalg.norm(tangent, axis=1, keepdims=True) + 1e-9
        normal = np.stack([-tangent[:, 1], tangent[:, 0]], axis=1)
        strands = int(rng.integers(4, 15))
        spacing = style.width * rng.uniform(0.5, 0.9)
        n = len(axis)
        t = np.arange(n)
        fray_len = max(2.0, 0.2 * n)
        head = np.clip(1 - t / fray_len, 0, None)
        tail = head[::-1]
        for off in (np.arange(strands) - (strands - 1) / 2) * spacing:
            # Strands wander slowly inside the bundle and splay apart at the ends.
            wander = 0.5 * spacing * np.sin(t / rng.uniform(8, 30) + rng.uniform(0, 2 * np.pi))
            splay = (head * rng.normal(0, 3) + tail * rng.normal(0, 3)) * spacing
            strand = axis + (off + wander + splay)[:, None] * normal
            start = int(rng.uniform(0, 0.15) * n)
            strand = strand[start : max(start + 2, n - int(rng.uniform(0, 0.15) * n))]
            widths = style.width * rng.uniform(0.6, 1.0)
            wires.add(strand, widths, style.value * rng.uniform(0.5, 0.9))
    for _ in range(rng.integers(0, 3)):  # a few loose wires around the bundles
        _add_wire(rng, wires, style)
    return wires


_MAKERS = (_singular, _dispersed, _network, _bundle)


def nanowire_scene(rng: np.random.Generator, size: int, label: int):
    """Draws one nanowire micrograph of class `CLASS_NAMES[label]`.

    Args:
      rng: random generator.
      size: image side in pixels.
      label: class index.

    Returns:
      (image float32 (size, size) in [0, 1], mask uint8 (size, size) in {0, 1}).
    """
    style = _Style(rng, size)
    wires = _MAKERS[label](rng, size, style)
    clutter = Canvas(size)
    background_clutter(clutter, rng, style.u)
    density = wires.density + clutter.density
    if rng.random() < 0.5:  # amorphous stain puddles, independent of the wires
        density += np.maximum(smooth_noise(rng, size, 12 * style.u) - 1.0, 0) * 0.3
    image = microscope.form_image(rng, density, microscope.draw_knobs(rng, size, style.mag))
    return image, wires.mask
