"""Synthetic metal-nanoparticle assemblies with exact masks.

Three classes as in the AutoDetect-mNP morphology task: dispersed particles,
separate clusters, and one percolating cluster. Particles are spheres, rods
or triangles (one shape family per image, so the shape says nothing about the
class), at a random magnification. Cluster classes are checked with
`analysis.percolation.percolates` on the mask and redrawn until they agree:
"separate clusters" never span the image, "percolating cluster" always does.
"""

from __future__ import annotations

import numpy as np

from fewshot_jax.masks import percolates
from fewshot_jax.data import synthetic_microscope as microscope
from fewshot_jax.data.synthetic_render import Canvas, spread_points, worm_path
from fewshot_jax.data.synthetic_scenes import background_clutter
from fewshot_jax.data.synthetic_wires import GenerationError

CLASS_NAMES = ("dispersed", "separate_clusters", "percolating_cluster")
SHAPES = ("sphere", "rod", "triangle")
MAX_TRIES = 40


class _Particles:
    """Particle geometry of one image: shape family, size and how to draw one."""

    def __init__(self, rng: np.random.Generator, size: int):
        self.size = size
        self.mag = float(np.exp(rng.uniform(np.log(0.5), np.log(2.0))))
        self.u = size / 256.0 * self.mag
        self.shape = SHAPES[rng.integers(len(SHAPES))]
        self.radius = max(1.0, rng.uniform(2.5, 6.0) * self.u)
        self.value = rng.uniform(0.8, 1.2)
        self.polydispersity = rng.uniform(0.0, 0.2)

    @property
    def reach(self) -> float:
        """Centre distance at which two particles touch (rods: across their width)."""
        return 2.0 * self.radius

    def draw(self, canvas: Canvas, rng: np.random.Generator, centres: np.ndarray) -> None:
        scale = 1.0 + self.polydispersity * rng.standard_normal(len(centres))
        angles = rng.uniform(0, 2 * np.pi, len(centres))
        for c, s, a in zip(centres, np.clip(scale, 0.6, 1.5), angles, strict=True):
            r = self.radius * s
            if self.shape == "sphere":
                canvas.disk(c, r, self.value, in_mask=True)
            elif self.shape == "rod":  # capsule of aspect 2.5-4 along a random direction
                half = r * 1.6 * np.array([np.cos(a), np.sin(a)])
                canvas.polyline(np.stack([c - half, c + half]), 2 * r, self.value, in_mask=True)
                canvas.disk(c - half, r, self.value, in_mask=True)
                canvas.disk(c + half, r, self.value, in_mask=True)
            else:
                t = a + np.array([0.0, 2 * np.pi / 3, 4 * np.pi / 3])
                tri = c + 1.3 * r * np.stack([np.cos(t), np.sin(t)], axis=1)
                canvas.polygon(tri, self.value, in_mask=True)


def _aggregate(rng, seed_point, count, reach, branchiness) -> np.ndarray:
    """A touching aggregate grown by random attachment (each particle touches one earlier)."""
    points = [np.asarray(seed_point, float)]
    for _ in range(count - 1):
        # Attaching preferentially to recent particles gives branched chains,
        # uniformly to any particle gives compact blobs.
        if rng.random() < branchiness:
            parent = points[-1 - rng.integers(min(3, len(points)))]
        else:
            parent = points[rng.integers(len(points))]
        angle = rng.uniform(0, 2 * np.pi)
        direction = np.array([np.cos(angle), np.sin(angle)])
        points.append(parent + reach * rng.uniform(0.85, 1.0) * direction)
    return np.array(points)


def _dispersed(rng, p: _Particles) -> np.ndarray:
    count = int(rng.integers(15, 160) / max(p.mag, 0.5) ** 2)
    return spread_points(rng, p.size, max(count, 5), p.reach * 1.6 + 3)


def _separate_clusters(rng, p: _Particles) -> np.ndarray:
    n_clusters = int(rng.integers(2, 9))
    seeds = spread_points(rng, p.size, n_clusters, p.size / 4)
    crowd = 1.0 / max(p.mag, 0.5) ** 2  # more, smaller particles at low magnification
    parts = [
        _aggregate(rng, s, int(rng.integers(10, 120) * crowd), p.reach, rng.uniform(0, 0.7))
        for s in seeds
    ]
    loose = spread_points(rng, p.size, int(rng.integers(0, 12)), p.reach * 2)
    return np.concatenate(parts + [loose])


def _percolating(rng, p: _Particles) -> list[np.ndarray]:
    """Chains of touching particles that wander across the frame, thickened by attachment."""
    chains = []
    step = p.reach * 0.9
    for k in range(int(rng.integers(2, 6))):
        # Chains enter at the top or the left edge and head across; the first two
        # take one direction each, and a top-bottom path must cross a left-right one.
        downwards = k == 0 or (k > 1 and rng.random() < 0.5)
        if downwards:
            start, heading = np.array([rng.uniform(0.1, 0.9) * p.size, -step]), np.pi / 2
        else:
            start, heading = np.array([-step, rng.uniform(0.1, 0.9) * p.size]), 0.0
        heading += rng.uniform(-0.5, 0.5)
        path = worm_path(rng, start, heading, p.size * 1.3, rng.uniform(0.3, 2.0) * p.size, step)
        chains.append(path)
    groups = [np.concatenate(chains)]
    # Thicken by generations of particles attached to random earlier ones: the
    # chains turn into branched aggregates rather than lines of beads.
    for _ in range(int(rng.integers(1, 5))):
        pool = np.concatenate(groups)
        extra = int(len(groups[0]) * rng.uniform(0.3, 0.9))
        angles = rng.uniform(0, 2 * np.pi, extra)
        parents = pool[rng.integers(len(pool), size=extra)]
        groups.append(parents + p.reach * 0.95 * np.stack([np.cos(angles), np.sin(angles)], 1))
    return groups


def nanoparticle_scene(rng: np.random.Generator, size: int, label: int):
    """Draws one nanoparticle micrograph of class `CLASS_NAMES[label]`.

    Returns:
      (image float32 (size, size) in [0, 1], mask uint8 (size, size) in {0, 1}).
    """
    for _ in range(MAX_TRIES):
        p = _Particles(rng, size)
        canvas = Canvas(size, with_mask=True)
        if label == 0:
            centres = [_dispersed(rng, p)]
        elif label == 1:
            centres = [_separate_clusters(rng, p)]
        else:
            centres = _percolating(rng, p)
        for group in centres:
            p.draw(canvas, rng, group)
        mask = canvas.mask
        if (label == 2) == percolates(mask):
            clutter = Canvas(size)
            background_clutter(clutter, rng, p.u * 0.5)
            density = canvas.density + 0.5 * clutter.density
            knobs = microscope.draw_knobs(rng, size, p.mag)
            return microscope.form_image(rng, density, knobs), mask
    raise GenerationError(f"could not draw a {CLASS_NAMES[label]!r} scene at size {size}")
