"""The `composites` family: the dispersion state of silica nanoparticles in a polymer section.

Whether grafted or bare nanoparticles stay dispersed, form strings or
aggregate in a polymer matrix decides a nanocomposite's mechanical and
transport properties, and it is read from TEM of microtomed sections. Here
every class holds the same particles (silica spheres, one size distribution
per image) at the same volume loading in the same section; only their 3-D
arrangement differs:

* `dispersed`: particles placed at random in the section, not touching.
* `strings`: persistent chains of touching particles (a 3-D walk with a
  persistence of a few particles), as grafted particles form at intermediate
  grafting densities.
* `aggregates`: compact clusters of touching particles grown around a seed
  (each new particle touches a member near the cluster's middle).

Seen in projection through a 40-90 nm section, dispersed particles overlap
by chance and chains seen end-on look like clusters, so the classes are told
apart by the 3-D arrangement of many particles, not by any single outline.
The section carries the microtome's artefacts: a smooth thickness
undulation and chatter (a thickness ripple across the cutting direction).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from fewshot_jax.data.heldout import projection as proj
from fewshot_jax.data.heldout.specimen import film, granular

COMPOSITE_CLASSES = ('aggregates', 'dispersed', 'strings')
SECTION_NM = (40.0, 90.0)  # microtomed section thickness
LOADING = (0.015, 0.05)  # silica volume fraction of the section
DIAMETER_NM = (9.0, 16.0)  # median particle diameter per image
SPREAD = (0.05, 0.15)  # lognormal sigma of the diameters within an image
STRING_LENGTH = (4, 13)  # particles per chain, [low, high)
STRING_TURN = (0.35, 0.7)  # Gaussian kick per particle, relative to the unit step direction
AGGREGATE_SIZE = (8, 31)  # particles per cluster, [low, high)


def _fits(centre, radius, centres, radii, slack=0.5) -> bool:
    """True if a sphere at `centre` overlaps none of the placed ones.

    Touching is allowed; `slack` (nm) forgives the round-off of spheres placed
    exactly in contact along a chain or a cluster.
    """
    if not centres:
        return True
    d = np.linalg.norm(np.asarray(centres) - centre, axis=1)
    return bool(np.all(d >= np.asarray(radii) + radius - slack))


def _in_section(c, r, lo, hi, half) -> bool:
    """True if a sphere's centre lies in the field and the whole sphere inside the section."""
    return lo <= c[0] <= hi and lo <= c[1] <= hi and abs(c[2]) <= half - r


def _unit(rng: np.random.Generator) -> np.ndarray:
    v = rng.normal(size=3)
    return v / np.linalg.norm(v)


def _grow(kind: str, rng, radii: list[float], field: tuple[float, float], half: float, centres, placed_r):
    """Places one group (a chain, a cluster or a single particle) of the given radii.

    Appends the centres that fit to `centres` / `placed_r` and returns how
    many of `radii` were placed (a group that runs out of room stops short).
    """
    lo, hi = field
    for _ in range(40):
        start = np.array([rng.uniform(lo, hi), rng.uniform(lo, hi), rng.uniform(-half, half)])
        start[2] = np.clip(start[2], -half + radii[0], half - radii[0])
        if _in_section(start, radii[0], lo, hi, half) and _fits(start, radii[0], centres, placed_r):
            break
    else:
        return 0
    group, group_r = [start], [radii[0]]
    direction = _unit(rng)
    turn = rng.uniform(*STRING_TURN)
    for r in radii[1:]:
        if kind != 'strings':
            # Touch a member chosen near the middle: compact, not fractal.
            middle = np.mean(group, axis=0)
            near = np.argsort(np.linalg.norm(np.asarray(group) - middle, axis=1))
            closest = max(1, len(group) // 3 + 1)
        for _ in range(30):
            if kind == 'strings':
                step = direction + turn * rng.normal(size=3)
                # A gentle pull towards the section's middle plane, so chains
                # run through the section instead of ending at its surface.
                step -= 0.4 * (group[-1][2] / half) * np.array([0.0, 0.0, 1.0])
                step /= np.linalg.norm(step)
                c = group[-1] + (group_r[-1] + r) * step
            else:
                j = int(near[int(rng.integers(closest))])
                c = group[j] + (group_r[j] + r) * _unit(rng)
            if _in_section(c, r, lo, hi, half) and _fits(c, r, centres + group, placed_r + group_r):
                if kind == 'strings':
                    direction = step
                group.append(c)
                group_r.append(r)
                break
        else:
            break
    centres.extend(group)
    placed_r.extend(group_r)
    return len(group)


def composites(grid, rng: np.random.Generator, mix: Sequence[str]) -> tuple[dict, dict]:
    """Specimen builder of the family (see `families.Builder`)."""
    thickness = rng.uniform(*SECTION_NM)
    info: dict = {'section_nm': thickness}
    section = film(
        grid.shape,
        grid.pixel_nm,
        rng,
        mean_nm=thickness,
        rough_nm=rng.uniform(0.5, 3.0),
        correlation_nm=rng.uniform(30.0, 120.0),
    )
    # Chatter: the knife's vibration leaves a thickness ripple across the cut.
    angle = rng.uniform(0.0, math.pi)
    y, x = np.mgrid[0 : grid.shape[0], 0 : grid.shape[1]] * grid.pixel_nm
    period = rng.uniform(20.0, 80.0)
    phase = (x * math.cos(angle) + y * math.sin(angle)) * 2.0 * math.pi / period
    section = section * (1.0 + rng.uniform(0.0, 0.08) * np.sin(phase + rng.uniform(0, 2 * math.pi)))
    silica = np.zeros(grid.shape)
    if mix:
        lo, hi = grid.visible_nm
        loading = rng.uniform(*LOADING)
        median = rng.uniform(*DIAMETER_NM)
        spread = rng.uniform(*SPREAD)
        budget = loading * (hi - lo) ** 2 * thickness  # silica volume in the field
        half = 0.5 * thickness
        centres: list[np.ndarray] = []
        placed_r: list[float] = []
        misses = 0
        while budget > 0 and misses < 20:
            kind = mix[int(rng.integers(len(mix)))]
            if kind == 'strings':
                n = int(rng.integers(*STRING_LENGTH))
            elif kind == 'aggregates':
                n = int(rng.integers(*AGGREGATE_SIZE))
            else:
                n = 1
            radii = list(0.5 * median * np.exp(spread * rng.normal(size=n)))
            placed = _grow(kind, rng, radii, (lo, hi), half, centres, placed_r)
            misses += placed == 0
            budget -= sum(4.0 / 3.0 * math.pi * r**3 for r in radii[:placed])
        for c, r in zip(centres, placed_r, strict=True):
            proj.render([(proj.sphere(c, r), 1.0)], grid.shape, grid.pixel_nm, out=silica)
        info.update(particles=len(centres), loading=loading, median_diameter_nm=median)
    # The particles displace polymer; granularity belongs to the polymer left.
    left = np.clip(section - silica, 0.0, None)
    polymer = granular(left, 'polymer', grid.pixel_nm, rng.uniform(0.05, 0.3), rng)
    return {'polymer': polymer, 'silica': silica}, info
