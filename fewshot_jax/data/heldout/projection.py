"""Exact projected thickness of 3-D convex bodies and of bodies built from them.

A convex body is an intersection of quadric regions (x - c)^T Q (x - c) <= 1
(ellipsoids; infinite cylinders have a singular Q) and half-spaces
n . (x - c) <= d (crystal facets, cut planes). Along a beam line parallel to z
every constraint is an interval of z, so the path length through the body is
the length of the intersection of those intervals: exact, no voxels, and
cheap enough to evaluate for every pixel of a particle's bounding box.

Non-convex bodies are sums and differences of convex ones: a hollow shell is
an outer body minus a concentric inner one, a curved tube is a chain of
cylinder pieces cut by mitre planes (which tile the tube without overlap)
with hemispherical caps.

Units are nm; the beam travels along +z.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

_HUGE = 1e12


@dataclasses.dataclass(frozen=True)
class ConvexBody:
    """An intersection of quadric regions and half-spaces around a centre.

    Attributes:
      center: (3,) position in nm.
      quadrics: 3x3 symmetric positive semi-definite matrices Q; the body
        lies in every (x - c)^T Q (x - c) <= 1.
      planes: (normal (3,), offset) pairs; the body lies in every
        normal . (x - c) <= offset.
      radius: Radius of a sphere around the centre that holds the body (sets
        the bounding box that is evaluated).
    """

    center: np.ndarray
    quadrics: tuple[np.ndarray, ...]
    planes: tuple[tuple[np.ndarray, float], ...]
    radius: float


def random_rotation(rng: np.random.Generator) -> np.ndarray:
    """A rotation matrix drawn uniformly from SO(3) (uniform unit quaternion)."""
    q = rng.normal(size=4)
    w, x, y, z = q / np.linalg.norm(q)
    return np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
            [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
            [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
        ]
    )


def chord_lengths(body: ConvexBody, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Path length (nm) of beam lines at (x, y) through the body.

    Args:
      body: The body.
      x, y: Beam positions in nm, broadcastable arrays.

    Returns:
      Thickness >= 0, the broadcast shape of x and y.
    """
    dx, dy = np.broadcast_arrays(np.asarray(x, float) - body.center[0], np.asarray(y, float) - body.center[1])
    lo = np.full(dx.shape, -_HUGE)
    hi = np.full(dx.shape, _HUGE)
    for q in body.quadrics:
        # (dx, dy, z) Q (dx, dy, z)^T <= 1 as a z^2 + 2 b z + c <= 0.
        a = q[2, 2]
        b = q[0, 2] * dx + q[1, 2] * dy
        c = q[0, 0] * dx * dx + 2 * q[0, 1] * dx * dy + q[1, 1] * dy * dy - 1.0
        if a < 1e-12:
            # A cylinder parallel to the beam: inside or not, at every z.
            inside = c <= 0
            lo = np.where(inside, lo, _HUGE)
            continue
        disc = b * b - a * c
        root = np.sqrt(np.clip(disc, 0.0, None))
        lo = np.where(disc >= 0, np.maximum(lo, (-b - root) / a), _HUGE)
        hi = np.minimum(hi, (-b + root) / a)
    for normal, offset in body.planes:
        nx, ny, nz = normal
        rest = offset - nx * dx - ny * dy
        if abs(nz) < 1e-12:
            lo = np.where(rest >= 0, lo, _HUGE)
        elif nz > 0:
            hi = np.minimum(hi, rest / nz)
        else:
            lo = np.maximum(lo, rest / nz)
    return np.clip(hi - lo, 0.0, None)


def ellipsoid(center, semi_axes, rotation=None) -> ConvexBody:
    """An ellipsoid with semi-axes (a, b, c) along the rotated x, y, z axes."""
    r = np.eye(3) if rotation is None else np.asarray(rotation, float)
    q = r @ np.diag(1.0 / np.asarray(semi_axes, float) ** 2) @ r.T
    return ConvexBody(np.asarray(center, float), (q,), (), float(max(semi_axes)))


def sphere(center, radius: float) -> ConvexBody:
    """A solid sphere."""
    return ellipsoid(center, (radius, radius, radius))


def polyhedron(center, normals, offsets, rotation=None, *, radius: float) -> ConvexBody:
    """A convex polyhedron {x : n_i . R^T (x - c) <= d_i} (normals in body axes)."""
    r = np.eye(3) if rotation is None else np.asarray(rotation, float)
    normals = np.asarray(normals, float)
    normals = normals / np.linalg.norm(normals, axis=1, keepdims=True)
    planes = tuple((r @ n, float(d)) for n, d in zip(normals, offsets, strict=True))
    return ConvexBody(np.asarray(center, float), (), planes, float(radius))


_AXES = np.array([[1, 0, 0], [-1, 0, 0], [0, 1, 0], [0, -1, 0], [0, 0, 1], [0, 0, -1]], float)
_DIAGONALS = np.array(
    [[sx, sy, sz] for sx in (1, -1) for sy in (1, -1) for sz in (1, -1)], float
) / math.sqrt(3)


def cuboid_111(half_sizes, corner_cut: float) -> tuple[np.ndarray, np.ndarray, float]:
    """Facets of a box cut by the 8 {111} planes: cubes, octahedra and rods in one family.

    Args:
      half_sizes: (a, b, c) half-widths of the {100} facets.
      corner_cut: Distance of the {111} planes as a fraction of the box's
        corner distance (a + b + c) / sqrt(3): >= 1 keeps a sharp box, 2/3 of
        a cube is a cuboctahedron, <= 1/3 of a cube is a pure octahedron.

    Returns:
      (normals (14, 3), offsets (14,), bounding radius) in body axes.
    """
    a, b, c = (float(s) for s in half_sizes)
    offsets_100 = np.array([a, a, b, b, c, c])
    corner = (a + b + c) / math.sqrt(3)
    offsets_111 = np.full(8, corner_cut * corner)
    # The body lies inside its box, so the box's half-diagonal bounds it.
    radius = math.sqrt(a * a + b * b + c * c)
    return np.concatenate([_AXES, _DIAGONALS]), np.concatenate([offsets_100, offsets_111]), radius


def tube(points: np.ndarray, radius: float) -> list[ConvexBody]:
    """A tube of circular cross-section along a 3-D polyline, as convex pieces.

    Each segment is an infinite cylinder cut by the mitre planes (bisecting
    the bend) at its two joints, so consecutive pieces meet without gap or
    overlap; the ends are closed by hemispheres. Valid while the two cut
    planes of a segment do not meet inside the tube: each segment longer than
    radius * (tan(bend_at_start / 2) + tan(bend_at_end / 2)).

    Args:
      points: (n, 3) polyline, n >= 2, in nm.
      radius: Tube radius in nm.

    Returns:
      Convex pieces whose chord lengths add up to the tube's thickness.
    """
    points = np.asarray(points, float)
    steps = np.diff(points, axis=0)
    lengths = np.linalg.norm(steps, axis=1)
    axes = steps / lengths[:, None]
    mitres = [axes[0]]
    for u, v in zip(axes[:-1], axes[1:], strict=True):
        m = u + v
        mitres.append(m / np.linalg.norm(m))
    mitres.append(axes[-1])
    pieces = []
    for i, u in enumerate(axes):
        # Evaluated around the segment's middle; both cut planes pass through
        # the segment's end points, half a step either side of it.
        half = 0.5 * steps[i]
        start, end = mitres[i], mitres[i + 1]
        planes = ((-start, float(start @ half)), (end, float(end @ half)))
        q = (np.eye(3) - np.outer(u, u)) / radius**2
        pieces.append(ConvexBody(points[i] + half, (q,), planes, 0.5 * lengths[i] + 2.0 * radius))
    cap_q = np.eye(3) / radius**2
    pieces.append(ConvexBody(points[0], (cap_q,), ((axes[0], 0.0),), radius))
    pieces.append(ConvexBody(points[-1], (cap_q,), ((-axes[-1], 0.0),), radius))
    return pieces


def render(
    bodies: list[tuple[ConvexBody, float]],
    shape: tuple[int, int],
    pixel_nm: float,
    *,
    subsample: int = 2,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """Adds weight x projected thickness of each body to a map.

    Each pixel's value is the mean over subsample x subsample beam lines
    inside it, so edges are anti-aliased the way a finite pixel would
    average them.

    Args:
      bodies: (body, weight) pairs; weight -1 subtracts (hollow shells).
      shape: (H, W) of the map; pixel (i, j) covers
        [j, j + 1) x [i, i + 1) times pixel_nm in (x, y).
      pixel_nm: Pixel size.
      subsample: Beam lines per pixel along each axis.
      out: Map to add to (float64); a new zero map if None.

    Returns:
      The map (nm).
    """
    out = np.zeros(shape) if out is None else out
    offsets = (np.arange(subsample) + 0.5) / subsample
    for body, weight in bodies:
        cx, cy = body.center[0] / pixel_nm, body.center[1] / pixel_nm
        r = body.radius / pixel_nm
        i0, i1 = max(int(math.floor(cy - r)), 0), min(int(math.ceil(cy + r)) + 1, shape[0])
        j0, j1 = max(int(math.floor(cx - r)), 0), min(int(math.ceil(cx + r)) + 1, shape[1])
        if i0 >= i1 or j0 >= j1:
            continue
        ys = ((np.arange(i0, i1)[:, None] + offsets[None, :]) * pixel_nm).reshape(-1)
        xs = ((np.arange(j0, j1)[:, None] + offsets[None, :]) * pixel_nm).reshape(-1)
        t = chord_lengths(body, xs[None, :], ys[:, None])
        t = t.reshape(i1 - i0, subsample, j1 - j0, subsample).mean(axis=(1, 3))
        out[i0:i1, j0:j1] += weight * t
    return out
