"""Synthetic metal-nanoparticle assemblies with exact masks.

Three classes as in the AutoDetect-mNP morphology task:

* dispersed: isolated particles that never touch;
* separate_clusters: two to nine compact aggregates of touching particles,
  with bare film between them;
* percolating_cluster: branched chains of touching particles that cross
  the frame.

Particles are spheres, rods or triangles (one shape family per image, so the
shape says nothing about the class) with a denser rim than core, so that the
particles of an aggregate stay distinguishable. Their size comes from a wide
magnification range (radius at least 1.4 px at 64 px), while
cluster sizes are fractions of the frame: absolute size is a nuisance, not a
cue. Strong, uneven illumination at random scales is drawn for every image.
Cluster classes are checked with `fewshot_jax.masks.percolates` on the mask
and redrawn until they agree: "separate clusters" (and "dispersed") never
span the image, "percolating cluster" always does.
"""

from __future__ import annotations

import numpy as np

from fewshot_jax.data.synthetic import microscope
from fewshot_jax.data.synthetic.render import Canvas, smooth_noise, spread_points, worm_path
from fewshot_jax.data.synthetic.scenes import background_clutter
from fewshot_jax.data.synthetic.wires import GenerationError
from fewshot_jax.masks import percolates

CLASS_NAMES = ('dispersed', 'separate_clusters', 'percolating_cluster')
SHAPES = ('sphere', 'rod', 'triangle')
MAX_TRIES = 40


class _Particles:
    """Particle geometry of one image: shape family, size and how to draw one."""

    def __init__(self, rng: np.random.Generator, size: int):
        self.size = size
        # A wide magnification range: particle size says nothing about the class.
        self.mag = float(np.exp(rng.uniform(np.log(0.5), np.log(3.0))))
        self.u = size / 256.0 * self.mag
        self.shape = SHAPES[rng.integers(len(SHAPES))]
        # At least 1.4 px at 64 px: a particle must stay a visible dot at the demo size.
        self.radius = max(size / 45.0, rng.uniform(2.5, 6.0) * self.u)
        self.value = rng.uniform(0.8, 1.2)
        self.polydispersity = rng.uniform(0.0, 0.2)
        self.core_ratio = rng.uniform(0.55, 0.8)

    @property
    def reach(self) -> float:
        """Centre distance at which two particles touch (rods: across their width)."""
        return 2.0 * self.radius

    @property
    def extent(self) -> float:
        """Largest centre-to-edge distance of a particle of nominal size (rods: along them)."""
        return {'sphere': 1.0, 'rod': 2.6, 'triangle': 1.3}[self.shape] * self.radius

    def draw(self, canvas: Canvas, rng: np.random.Generator, centres: np.ndarray) -> None:
        """Draws particles at `centres` into the canvas and its mask.

        Each particle has a denser rim than core (faceted edges, or a shell), so
        the particles inside an aggregate stay distinguishable where they touch.
        """
        scale = 1.0 + self.polydispersity * rng.standard_normal(len(centres))
        angles = rng.uniform(0, 2 * np.pi, len(centres))
        core = self.value * self.core_ratio
        rim = min(1.0, 0.3 * self.radius)  # rim width in px, thinner for tiny particles
        for c, s, a in zip(centres, np.clip(scale, 0.6, 1.5), angles, strict=True):
            r = self.radius * s
            if self.shape == 'sphere':
                canvas.disk(c, r, self.value, in_mask=True)
                canvas.disk(c, r - rim, core)
            elif self.shape == 'rod':  # capsule of aspect 2.5-4 along a random direction
                # Body drawn as a polygon, not a thick line: PIL rounds line widths
                # to whole pixels, which left small rods narrower than their caps
                # (a touching pair of spheres, not a rod).
                axis = np.array([np.cos(a), np.sin(a)])
                half, normal = 1.6 * r * axis, np.array([-axis[1], axis[0]])
                for radius, value, in_mask in ((r, self.value, True), (r - rim, core, False)):
                    body = np.stack([c - half, c + half, c + half, c - half])
                    body += np.array([1, 1, -1, -1])[:, None] * radius * normal
                    canvas.polygon(body, value, in_mask=in_mask)
                    canvas.disk(c - half, radius, value, in_mask=in_mask)
                    canvas.disk(c + half, radius, value, in_mask=in_mask)
            else:
                t = a + np.array([0.0, 2 * np.pi / 3, 4 * np.pi / 3])
                corners = np.stack([np.cos(t), np.sin(t)], axis=1)
                canvas.polygon(c + 1.3 * r * corners, self.value, in_mask=True)
                canvas.polygon(c + (1.3 * r - 2 * rim) * corners, core)


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
    """Isolated particles covering up to ~25 % of the frame, never touching."""
    count = int(rng.uniform(0.08, 0.25) * p.size**2 / (np.pi * p.radius**2))
    # Coverage is uneven (drying fronts, thickness of the film): a smooth random
    # field of random strength thins the particles in places.
    field = smooth_noise(rng, p.size, rng.uniform(0.08, 0.25) * p.size)
    weight = 1.0 / (1.0 + np.exp(-rng.uniform(0.0, 6.0) * field))
    # Polydisperse particles are up to 1.5x their nominal size: 3 extents plus 2 px
    # keeps every pair apart, whatever their orientation.
    gap = 3.0 * p.extent * rng.uniform(1.0, 1.3) + 2
    return spread_points(rng, p.size, max(count, 5), gap, weight)


def _separate_clusters(rng, p: _Particles) -> np.ndarray:
    """Two to nine compact aggregates with bare film between them."""
    n_clusters = int(rng.integers(2, 10))
    seeds = spread_points(rng, p.size, n_clusters, p.size / 4.5)
    parts = []
    for s in seeds:
        # Cluster extent is a fraction of the frame, whatever the particle size.
        extent = rng.uniform(0.05, 0.13) * p.size
        # At least 8 particles: an aggregate never passes for one large particle.
        count = max(8, int(rng.uniform(0.4, 0.9) * (extent / p.radius) ** 2))
        parts.append(_aggregate(rng, s, count, p.reach, rng.uniform(0, 0.5)))
    loose = spread_points(rng, p.size, int(rng.integers(0, 7)), p.reach * 2)
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
    for _ in range(int(rng.integers(0, 2))):
        pool = np.concatenate(groups)
        extra = int(len(groups[0]) * rng.uniform(0.3, 0.9))
        angles = rng.uniform(0, 2 * np.pi, extra)
        parents = pool[rng.integers(len(pool), size=extra)]
        groups.append(parents + p.reach * 0.95 * np.stack([np.cos(angles), np.sin(angles)], 1))
    return groups


def nanoparticle_scene(rng: np.random.Generator, size: int, label: int, imaging=None):
    """Draws one nanoparticle micrograph of class `CLASS_NAMES[label]`.

    imaging: a `synthetic_microscope.Imaging` (None: the conditions are drawn from `rng`).

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
            image = microscope.image_specimen(
                rng, imaging, density, p.mag, max_illumination=0.8, illumination_scales=(0.08, 0.25)
            )
            return image, mask
    raise GenerationError(f'could not draw a {CLASS_NAMES[label]!r} scene at size {size}')
