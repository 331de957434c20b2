"""Synthetic negative-stain virus micrographs with exact particle masks.

A stand-in for the TEM virus identification task (256 px images, one virus
type per image). Five particle architectures that differ in shape and internal
structure rather than in brightness: small icosahedral capsids, enveloped
spiky particles (influenza-like fringe), brick-shaped particles with a
dumbbell core (poxvirus-like), filaments with walls and cross-striations,
and ovoid particles with a criss-cross surface (orf-like). The magnification
varies over a narrow range (0.75-1.35), as in a set imaged at a few fixed
magnifications, and the structures that tell the types apart (outline, spike
fringe, dense core, 3-4 px thread spacing) stay resolved at the 64 px demo size.
Imaging nuisances, strong uneven illumination included, carry no label.
"""

from __future__ import annotations

import numpy as np

from fewshot_jax.data.synthetic import microscope
from fewshot_jax.data.synthetic.render import Canvas, closed_curve, spread_points, worm_path
from fewshot_jax.data.synthetic.scenes import background_clutter

CLASS_NAMES = ('icosahedral', 'enveloped_spiky', 'brick', 'filamentous', 'ovoid_striated')


def _rot(angle: float) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[c, -s], [s, c]])


def _icosahedral(canvas: Canvas, rng, centre, u):
    r = rng.uniform(7, 12) * u
    t = rng.uniform(0, np.pi / 3) + np.arange(6) * np.pi / 3
    hexagon = centre + r * np.stack([np.cos(t), np.sin(t)], axis=1)
    canvas.polygon(hexagon, rng.uniform(0.35, 0.55), in_mask=True)
    canvas.polygon(hexagon, rng.uniform(0.8, 1.0), outline_width=max(1.0, 1.3 * u))
    if rng.random() < 0.5:  # stain-penetrated (empty) capsid: dark centre
        canvas.disk(centre, 0.45 * r, rng.uniform(0.05, 0.2))


def _enveloped_spiky(canvas: Canvas, rng, centre, u):
    r = rng.uniform(14, 26) * u
    # Round (pleomorphic but never as elongated as the ovoid type), with a fringe
    # of spikes at least a pixel long at the 64 px demo size.
    outline = closed_curve(rng, centre, r, rng.uniform(0.05, 0.2), rng.uniform(0.85, 1.0), 72)
    spike_len = rng.uniform(4, 6) * u
    normals = outline - outline.mean(axis=0)
    normals /= np.linalg.norm(normals, axis=1, keepdims=True) + 1e-9
    for p, n in zip(outline, normals, strict=True):  # the glycoprotein fringe
        canvas.polyline(np.stack([p, p + spike_len * n]), max(1.0, 1.0 * u), 0.75, in_mask=True)
    canvas.polygon(outline, rng.uniform(0.2, 0.4), in_mask=True)
    canvas.polygon(outline, rng.uniform(0.8, 1.0), outline_width=max(1.0, 1.5 * u))


def _brick(canvas: Canvas, rng, centre, u):
    length = rng.uniform(15, 22)
    half = np.array([length, length * rng.uniform(0.6, 0.8)]) * u
    t = np.linspace(0, 2 * np.pi, 48, endpoint=False)
    # Superellipse: a rectangle with rounded corners.
    x = half[0] * np.sign(np.cos(t)) * np.abs(np.cos(t)) ** 0.3
    y = half[1] * np.sign(np.sin(t)) * np.abs(np.sin(t)) ** 0.3
    rot = _rot(rng.uniform(0, np.pi))
    body = centre + np.stack([x, y], axis=1) @ rot.T
    canvas.polygon(body, rng.uniform(0.3, 0.5), in_mask=True)
    for _ in range(int(rng.integers(8, 20))):  # surface tubules
        a = rng.uniform(-0.7, 0.7, 2) * half
        b = a + rng.normal(0, 3, 2) * u
        canvas.polyline(centre + np.stack([a, b]) @ rot.T, max(1.0, u), 0.6)
    lobe = 0.45 * half[0]
    ends = centre + np.array([[-lobe, 0.0], [lobe, 0.0]]) @ rot.T
    core = rng.uniform(1.2, 1.5)  # dense enough to show at the 64 px demo size
    for e in ends:  # dumbbell-shaped core
        canvas.disk(e, 0.45 * half[1], core)
    canvas.polyline(ends, 0.4 * half[1], core)


def _filamentous(canvas: Canvas, rng, centre, u):
    width = rng.uniform(8, 12) * u
    path = worm_path(
        rng,
        np.zeros(2),
        rng.uniform(0, 2 * np.pi),
        rng.uniform(60, 200) * u,
        rng.uniform(100, 400) * u,
        step=max(1.0, 2 * u),
    )
    path = path - path.mean(axis=0) + centre
    canvas.polyline(path, width, rng.uniform(0.3, 0.5), in_mask=True)
    tangent = np.gradient(path, axis=0)
    tangent /= np.linalg.norm(tangent, axis=1, keepdims=True) + 1e-9
    normal = np.stack([-tangent[:, 1], tangent[:, 0]], axis=1)
    wall = rng.uniform(0.8, 1.0)
    for side in (-0.42, 0.42):
        canvas.polyline(path + side * width * normal, max(1.0, 1.2 * u), wall)
    stride = max(1, int(round(rng.uniform(2.5, 4.0) * u / max(1.0, 2 * u))))
    for i in range(0, len(path), stride):  # helical nucleocapsid striations
        p, n = path[i], normal[i]
        canvas.polyline(np.stack([p - 0.35 * width * n, p + 0.35 * width * n]), 1.0, 0.7)


def _ovoid_striated(canvas: Canvas, rng, centre, u):
    a = rng.uniform(20, 30) * u
    b = a * rng.uniform(0.5, 0.65)
    rot = _rot(rng.uniform(0, np.pi))
    t = np.linspace(0, 2 * np.pi, 64, endpoint=False)
    outline = centre + np.stack([a * np.cos(t), b * np.sin(t)], axis=1) @ rot.T
    canvas.polygon(outline, rng.uniform(0.25, 0.4), in_mask=True)
    # Threads 3-4 px apart at the 64 px demo size, so the pattern stays resolved.
    spacing = rng.uniform(6.0, 8.0) * u
    thread = rng.uniform(0.9, 1.1)
    tilt = rng.uniform(0.5, 1.0)
    for direction in (tilt, -tilt):  # criss-cross surface threads: chords of the ellipse
        v = np.array([np.cos(direction), np.sin(direction)])
        n = np.array([-v[1], v[0]])
        for d in np.arange(-a, a, spacing):
            # Solve |(d n + s v) / (a, b)| = 1 for s in the ellipse's frame.
            p0, dv = d * n / (a, b), v / (a, b)
            qa, qb, qc = dv @ dv, 2 * p0 @ dv, p0 @ p0 - 1
            disc = qb * qb - 4 * qa * qc
            if disc <= 0:
                continue
            s = (-qb + np.array([-1.0, 1.0]) * np.sqrt(disc)) / (2 * qa)
            chord = (d * n)[None, :] + s[:, None] * v[None, :]
            canvas.polyline(centre + 0.9 * chord @ rot.T, max(1.0, 1.0 * u), thread)
    canvas.polygon(outline, rng.uniform(0.8, 1.0), outline_width=max(1.0, 1.3 * u))


_MAKERS = (_icosahedral, _enveloped_spiky, _brick, _filamentous, _ovoid_striated)
_COUNTS = ((3, 25), (1, 7), (1, 4), (1, 5), (1, 5))
_SPACING = (22, 50, 50, 60, 55)  # minimum centre distance in units of u


def virus_scene(rng: np.random.Generator, size: int, label: int, imaging=None):
    """Draws one virus micrograph of class `CLASS_NAMES[label]`.

    imaging: a `synthetic_microscope.Imaging` (None: the conditions are drawn from `rng`).

    Returns:
      (image float32 (size, size) in [0, 1], mask uint8 (size, size) in {0, 1}).
    """
    # A narrow magnification range: the real set is imaged at a few fixed
    # magnifications, and what tells the types apart (outline, fringe, core,
    # striations) must stay resolved at the 64 px demo size.
    mag = float(np.exp(rng.uniform(np.log(0.75), np.log(1.35))))
    # The real set's 256 px images are framed around the particles: zoom 2x
    # relative to the other tasks' length unit.
    u = 2.0 * size / 256.0 * mag
    canvas = Canvas(size, with_mask=True)
    background_clutter(canvas, rng, u / 2)
    lo, hi = _COUNTS[label]
    count = min(30, max(1, int(rng.integers(lo, hi) / (2 * mag) ** 2 * 2)))
    # Micrographs are framed on the virus: keep centres off the border.
    inset = min(0.3 * size, 0.4 * _SPACING[label] * u)
    centres = inset + spread_points(rng, size - 2 * inset, count, _SPACING[label] * u)
    for centre in centres:
        _MAKERS[label](canvas, rng, centre, u)
    image = microscope.image_specimen(rng, imaging, canvas.density, mag, max_illumination=0.8)
    return image, canvas.mask
