"""Synthetic peptide/protein nanowire morphologies with exact masks.

Four classes as in the paper's nanowire set, each recognisable in a 64 px
image from what it looks like locally:

* singular: one long wire through the middle of the frame (two free ends);
* dispersed: 4-9 short wires that never touch (many free ends, no junctions,
  no cluster spans the image);
* network: long wires crossing each other everywhere, percolating across
  both dimensions (junctions, few ends, dense);
* bundle: one to three thick ribbons of 6-14 parallel strands, fraying at
  the ends, several times wider than any single wire.

Wire lengths are fractions of the frame; width, persistence and stain are
drawn per image at a random magnification, and the imaging nuisances
(polarity, contrast, illumination, dose, levels) are drawn independently of
the class. The dispersed/network label is enforced with the criterion the
paper used (`fewshot_jax.masks.percolates` on the mask): scenes are
generated, checked and redrawn.

Wire density is additive (crossings and overlapping strands look darker, as
projected mass does in TEM); the mask is the union of all wires.
"""

from __future__ import annotations

import numpy as np

from fewshot_jax.data.synthetic import microscope
from fewshot_jax.data.synthetic.render import Canvas, rasterize_path, smooth_noise, worm_path
from fewshot_jax.data.synthetic.scenes import background_clutter
from fewshot_jax.masks import percolates

CLASS_NAMES = ('singular', 'dispersed', 'network', 'bundle')
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
    """Per-image wire statistics, shared by all classes so none is a giveaway.

    Lengths of wires are fractions of the frame (what makes a class is how
    many wires there are and how they meet, at any magnification); width,
    persistence and stain are drawn per image in units of `u`.
    """

    def __init__(self, rng: np.random.Generator, size: int):
        self.mag = float(np.exp(rng.uniform(np.log(0.5), np.log(2.0))))
        self.u = size / 256.0 * self.mag
        # At least ~1 px so that a wire stays visible in a 64 px image.
        self.width = max(rng.uniform(2.0, 4.5) * self.u, 0.9)
        self.persistence = rng.uniform(0.4, 3.0) * size
        self.value = rng.uniform(0.7, 1.1)


def _wire_path(rng, size, style: _Style, length, centre=None, heading=None):
    """A wire of contour `length` px whose middle sits at `centre` (random by default)."""
    path = worm_path(
        rng,
        np.zeros(2),
        rng.uniform(0, 2 * np.pi) if heading is None else heading,
        length,
        style.persistence * rng.uniform(0.7, 1.3),
        step=max(1.0, size / 64.0),
    )
    if centre is None:
        centre = rng.uniform(0.1, 0.9, 2) * size
    # Anchor the middle of the contour (not the mean point, which a curled
    # wire may leave far from the wire itself).
    return path - path[len(path) // 2] + centre


def _wire_widths(rng, path: np.ndarray, style: _Style) -> np.ndarray:
    """Width along a wire: a per-wire value with a slow +-20 % modulation."""
    t = np.arange(len(path))
    wobble = np.sin(t / rng.uniform(5, 20) + rng.uniform(0, 2 * np.pi))
    return style.width * rng.uniform(0.8, 1.2) * (1.0 + 0.2 * wobble)


def _add_wire(rng, wires: _Wires, style: _Style, length, **kwargs) -> None:
    path = _wire_path(rng, wires.size, style, length, **kwargs)
    wires.add(path, _wire_widths(rng, path, style), style.value * rng.uniform(0.85, 1.15))


def _singular(rng, size, style):
    """One long wire, wandering through the middle of the frame."""
    wires = _Wires(size)
    centre = rng.uniform(0.35, 0.65, 2) * size
    _add_wire(rng, wires, style, rng.uniform(0.8, 1.6) * size, centre=centre)
    return wires


def _dispersed(rng, size, style):
    """Several short wires that do not touch each other: many free ends, no junctions."""
    count = int(rng.integers(4, 10))
    gap = max(2.0, 2.0 * style.width)
    for _ in range(MAX_TRIES):
        wires = _Wires(size)
        placed = 0
        for _ in range(8 * count):
            if placed == count:
                break
            path = _wire_path(rng, size, style, rng.uniform(0.2, 0.45) * size)
            widths = _wire_widths(rng, path, style)
            # Keep a gap to earlier wires: a dispersed wire never crosses another.
            if (rasterize_path(size, path, widths + 2 * gap) & wires.mask).any():
                continue
            wires.add(path, widths, style.value * rng.uniform(0.85, 1.15))
            placed += 1
        if placed >= 4 and not percolates(wires.mask):
            return wires
    raise GenerationError('could not draw a non-percolating dispersed scene')


def _network(rng, size, style):
    """Long wires that cross each other many times and percolate across the frame."""
    for _ in range(MAX_TRIES):
        wires = _Wires(size)
        added = 0
        while added < 60:
            # Centres spread over the whole frame so that crossings are everywhere.
            _add_wire(rng, wires, style, rng.uniform(0.7, 1.4) * size)
            added += 1
            if added >= 5 and percolates(wires.mask):
                for _ in range(rng.integers(added // 3 + 1, added + 2)):
                    _add_wire(rng, wires, style, rng.uniform(0.7, 1.4) * size)
                if percolates(wires.mask):
                    return wires
                break
    raise GenerationError('could not draw a percolating network scene')


def _bundle(rng, size, style):
    """One to three thick ribbons of many parallel strands, fraying at the ends."""
    wires = _Wires(size)
    for _ in range(rng.integers(1, 4)):
        centre = rng.uniform(0.25, 0.75, 2) * size
        axis = _wire_path(rng, size, style, rng.uniform(0.6, 1.3) * size, centre=centre)
        tangent = np.gradient(axis, axis=0)
        tangent /= np.linalg.norm(tangent, axis=1, keepdims=True) + 1e-9
        normal = np.stack([-tangent[:, 1], tangent[:, 0]], axis=1)
        strands = int(rng.integers(6, 15))
        # At least a pixel between strand centres at 64 px: a bundle is always
        # several times wider than the widest single wire.
        spacing = max(style.width * rng.uniform(0.7, 1.1), size / 64.0)
        n = len(axis)
        t = np.arange(n)
        fray_len = max(2.0, 0.15 * n)
        head = np.clip(1 - t / fray_len, 0, None)
        tail = head[::-1]
        for off in (np.arange(strands) - (strands - 1) / 2) * spacing:
            # Strands wander slowly inside the bundle and splay apart at the ends.
            wander = 0.3 * spacing * np.sin(t / rng.uniform(8, 30) + rng.uniform(0, 2 * np.pi))
            splay = (head * rng.normal(0, 2) + tail * rng.normal(0, 2)) * spacing
            strand = axis + (off + wander + splay)[:, None] * normal
            start = int(rng.uniform(0, 0.1) * n)
            strand = strand[start : max(start + 2, n - int(rng.uniform(0, 0.1) * n))]
            widths = style.width * rng.uniform(0.7, 1.0)
            wires.add(strand, widths, style.value * rng.uniform(0.5, 0.8))
    for _ in range(rng.integers(0, 3)):  # a few loose wires around the bundles
        _add_wire(rng, wires, style, rng.uniform(0.2, 0.6) * size)
    return wires


_MAKERS = (_singular, _dispersed, _network, _bundle)


def nanowire_scene(rng: np.random.Generator, size: int, label: int, imaging=None):
    """Draws one nanowire micrograph of class `CLASS_NAMES[label]`.

    Args:
      rng: random generator.
      size: image side in pixels.
      label: class index.
      imaging: a `synthetic_microscope.Imaging` (None: the conditions are drawn from `rng`).

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
    image = microscope.image_specimen(rng, imaging, density, style.mag, max_illumination=0.8)
    return image, wires.mask
