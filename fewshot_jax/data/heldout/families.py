"""Held-out labeled families: 3-D objects projected through `optics`, with random nuisances.

Each family has three classes that differ in 3-D shape or internal
structure, not in a 2-D outline a drawing routine would make easy, and an
unlabeled pool from the same physics (a mixture of the classes, some images
mixing classes, and empty support-only fields) for pretraining.

* `nanoparticles`: metal nanoparticles on an amorphous carbon film. solid
  particles, hollow nanocages (one shell) and core-shell particles (gold core
  in a silver shell) with the same outer size and shape distribution
  (ellipsoids and truncated cubes).
* `crystals`: magnetite nanocrystals on carbon, randomly oriented: cubes,
  octahedra and rods (elongated boxes) of the same volume distribution, all
  three cut by both {100} and {111} facets.
* `composites`: silica nanoparticles in a microtomed polymer section,
  dispersed, in strings or in compact aggregates at the same loading
  (`composites.py`).
* `assemblies`: amphiphile assemblies in vitreous ice (cryo-TEM): spherical
  micelles, worm-like micelles (3-D curved cylinders) and bilayer vesicles
  (hollow shells), at equal area coverage.

The nuisance ranges (defocus, dose, film thickness, particle count and size,
drift, camera) were set by the pixel/texture difficulty check described in
docs/heldout.md and nothing else.
"""

from __future__ import annotations

import dataclasses
import math
import zlib
from collections.abc import Callable, Sequence

import numpy as np

from fewshot_jax.data.heldout import projection as proj
from fewshot_jax.data.heldout.composites import COMPOSITE_CLASSES, composites
from fewshot_jax.data.heldout.optics import BACKGROUND_ADU, OFFSET_ADU, Detector, Optics, form_image
from fewshot_jax.data.heldout.specimen import film, granular, place


@dataclasses.dataclass(frozen=True)
class Grid:
    """The fine simulation grid: twice the detector sampling, plus an FFT margin.

    Attributes:
      shape: (H, W) of the fine grid, margin included.
      pixel_nm: Fine pixel size.
      pad: Margin in fine pixels on every side, cropped after the optics.
    """

    shape: tuple[int, int]
    pixel_nm: float
    pad: int

    @property
    def visible_nm(self) -> tuple[float, float]:
        """(start, end) in nm, along x and y, of the part the detector keeps."""
        return self.pad * self.pixel_nm, (self.shape[0] - self.pad) * self.pixel_nm

    @property
    def visible_area_nm2(self) -> float:
        """Area of the kept field."""
        lo, hi = self.visible_nm
        return (hi - lo) ** 2


def _loguniform(rng: np.random.Generator, low: float, high: float) -> float:
    return float(math.exp(rng.uniform(math.log(low), math.log(high))))


def _sizes(rng, n, median_range, spread_range) -> np.ndarray:
    """n lognormal sizes around a median drawn per image (one synthesis batch)."""
    median = rng.uniform(*median_range)
    return median * np.exp(rng.uniform(*spread_range) * rng.normal(size=n))


# Builders: (grid, rng, mix) -> (thickness maps, info). `mix` lists the classes
# an object may belong to (uniform choice per object); empty = no objects.
Builder = Callable[[Grid, np.random.Generator, Sequence[str]], tuple[dict, dict]]


def _carbon_support(grid: Grid, rng: np.random.Generator, info: dict) -> np.ndarray:
    """Amorphous carbon film, 3-15 nm thick (commercial grids: 3-20 nm)."""
    info['carbon_nm'] = rng.uniform(3.0, 15.0)
    t = film(
        grid.shape,
        grid.pixel_nm,
        rng,
        mean_nm=info['carbon_nm'],
        rough_nm=rng.uniform(0.2, 1.5),
        correlation_nm=rng.uniform(15.0, 60.0),
    )
    return granular(t, 'carbon', grid.pixel_nm, rng.uniform(0.05, 0.3), rng)


def _outer_shape(rng: np.random.Generator, radius: float):
    """A random outer shape of given volume-equivalent radius: ellipsoid or truncated cube.

    Returns a function scale -> ConvexBody (concentric, same orientation),
    and the inscribed radius at scale 1.
    """
    rotation = proj.random_rotation(rng)
    if rng.random() < 0.5:
        axes = rng.uniform(1.0, 1.3, size=3)
        axes = radius * axes / np.prod(axes) ** (1.0 / 3.0)
        return (lambda c, s: proj.ellipsoid(c, s * axes, rotation)), float(axes.min())
    half = radius * (math.pi / 6.0) ** (1.0 / 3.0)
    normals, offsets, bound = proj.cuboid_111((half, half, half), rng.uniform(0.75, 0.95))
    return (lambda c, s: proj.polyhedron(c, normals, s * offsets, rotation, radius=s * bound)), half


NANOPARTICLE_CLASSES = ('core_shell', 'hollow', 'solid')


def _nanoparticles(grid: Grid, rng: np.random.Generator, mix: Sequence[str]) -> tuple[dict, dict]:
    info: dict = {}
    maps = {'carbon': _carbon_support(grid, rng, info)}
    for name in ('silver', 'gold_silver', 'gold'):
        maps[name] = np.zeros(grid.shape)
    if not mix:
        return maps, info
    n = int(rng.integers(3, 13))
    radii = 0.5 * _sizes(rng, n, (12.0, 30.0), (0.08, 0.2))
    centres = place(1.2 * radii, grid.visible_nm, rng)
    info.update(particles=sum(c is not None for c in centres), median_diameter_nm=float(2 * np.median(radii)))
    for r, c in zip(radii, centres, strict=True):
        if c is None:
            continue
        centre = np.array([c[0], c[1], 0.0])
        shape, inscribed = _outer_shape(rng, r)
        kind = mix[int(rng.integers(len(mix)))]
        outer = shape(centre, 1.0)
        if kind == 'solid':
            parts = [('silver', outer, 1.0)]
        elif kind == 'hollow':
            # Galvanic-replacement nanocages: walls 12-35% of the size.
            inner = shape(centre, 1.0 - rng.uniform(0.12, 0.35))
            parts = [('gold_silver', outer, 1.0), ('gold_silver', inner, -1.0)]
        else:
            core = proj.sphere(centre, inscribed * rng.uniform(0.4, 0.7))
            parts = [('silver', outer, 1.0), ('silver', core, -1.0), ('gold', core, 1.0)]
        for material, body, weight in parts:
            proj.render([(body, weight)], grid.shape, grid.pixel_nm, out=maps[material])
    return maps, info


CRYSTAL_CLASSES = ('cube', 'octahedron', 'rod')
CRYSTAL_COUNT = (6, 15)  # particles per image, [low, high)
CRYSTAL_DIAMETER_NM = (20.0, 28.0)  # median volume-equivalent diameter per image
CRYSTAL_SPREAD = (0.05, 0.15)  # lognormal sigma of the sizes within an image
ROD_ELONGATION = (2.2, 3.6)  # long / short edge
# Corner cut of the {111} planes relative to the box corner: 1 = sharp box,
# 1/3 = pure octahedron (of a cube); see projection.cuboid_111.
_CRYSTAL_CUT = {'cube': (0.85, 1.0), 'octahedron': (0.34, 0.42), 'rod': (0.85, 1.0)}


def _crystal(rng: np.random.Generator, kind: str, radius: float, centre) -> proj.ConvexBody:
    """A randomly oriented crystal whose volume equals a sphere of `radius`."""
    elongation = rng.uniform(*ROD_ELONGATION) if kind == 'rod' else rng.uniform(1.0, 1.12)
    halves = np.array([1.0, 1.0, elongation])
    normals, offsets, bound = proj.cuboid_111(halves, rng.uniform(*_CRYSTAL_CUT[kind]))
    unit = proj.polyhedron(np.zeros(3), normals, offsets, radius=bound)
    # Volume at unit scale by integrating the chords over the body's shadow.
    g = np.linspace(-bound, bound, 32)
    volume = proj.chord_lengths(unit, g[None, :], g[:, None]).sum() * (g[1] - g[0]) ** 2
    scale = radius * (4.0 / 3.0 * math.pi / volume) ** (1.0 / 3.0)
    return proj.polyhedron(centre, normals, scale * offsets, proj.random_rotation(rng), radius=scale * bound)


def _crystals(grid: Grid, rng: np.random.Generator, mix: Sequence[str]) -> tuple[dict, dict]:
    info: dict = {}
    maps = {'carbon': _carbon_support(grid, rng, info), 'magnetite': np.zeros(grid.shape)}
    if not mix:
        return maps, info
    n = int(rng.integers(*CRYSTAL_COUNT))
    radii = 0.5 * _sizes(rng, n, CRYSTAL_DIAMETER_NM, CRYSTAL_SPREAD)
    # Rods reach up to ~1.7x the equivalent radius; every class gets the same room.
    centres = place(1.7 * radii, grid.visible_nm, rng)
    info.update(particles=sum(c is not None for c in centres), median_diameter_nm=float(2 * np.median(radii)))
    for r, c in zip(radii, centres, strict=True):
        if c is not None:
            kind = mix[int(rng.integers(len(mix)))]
            body = _crystal(rng, kind, r, np.array([c[0], c[1], 0.0]))
            proj.render([(body, 1.0)], grid.shape, grid.pixel_nm, out=maps['magnetite'])
    return maps, info


ASSEMBLY_CLASSES = ('spherical', 'vesicle', 'worm')


def _worm_path(rng, start, length, persistence, step, half_ice) -> np.ndarray:
    """A worm-like chain in 3-D, steered back into the ice layer |z| <= half_ice."""
    n = max(int(length / step), 2)
    direction = rng.normal(size=3)
    direction[2] *= 0.3  # thin ice: chains lie mostly flat
    direction /= np.linalg.norm(direction)
    points = [np.asarray(start, float)]
    # Bend per step of a worm-like chain: angle variance 2 step / persistence,
    # capped so the mitred tube pieces (projection.tube) stay valid.
    spread = math.sqrt(2.0 * step / persistence)
    for _ in range(n):
        turn = rng.normal(size=3) * spread
        turn -= (turn @ direction) * direction
        turn *= min(1.0, 0.35 / (np.linalg.norm(turn) + 1e-12))
        # A gentle push back towards the middle of the ice layer.
        turn[2] -= 0.1 * points[-1][2] / half_ice
        direction = direction + turn
        direction /= np.linalg.norm(direction)
        points.append(points[-1] + step * direction)
    return np.array(points)


def _assemblies(grid: Grid, rng: np.random.Generator, mix: Sequence[str]) -> tuple[dict, dict]:
    info: dict = {'ice_nm': rng.uniform(70.0, 130.0)}
    ice = film(
        grid.shape,
        grid.pixel_nm,
        rng,
        mean_nm=info['ice_nm'],
        rough_nm=rng.uniform(1.0, 6.0),
        correlation_nm=rng.uniform(40.0, 150.0),
        gradient_nm=rng.uniform(0.0, 15.0),
    )
    objects = np.zeros(grid.shape)
    if mix:
        core = rng.uniform(7.0, 13.0)  # hydrophobic core radius of this sample
        coverage = rng.uniform(0.06, 0.18)
        # Equal projected area for every class, so the amount of matter in
        # the field does not tell the classes apart.
        budget = coverage * grid.visible_area_nm2
        half_ice = 0.5 * info['ice_nm'] - core
        discs, worms = [], []
        while budget > 0:
            kind = mix[int(rng.integers(len(mix)))]
            r = core * math.exp(0.1 * rng.normal())
            if kind == 'worm':
                length = rng.uniform(40.0, 160.0)
                lo, hi = grid.visible_nm
                start = rng.uniform((lo, lo, -0.5 * half_ice), (hi, hi, 0.5 * half_ice))
                path = _worm_path(rng, start, length, rng.uniform(25.0, 80.0), r, half_ice)
                worms.append((path, r))
                budget -= 2 * r * length
            elif kind == 'vesicle':
                # Unilamellar vesicles: outer radius 1.6-3.6 cores, bilayer 3.5-5.5 nm.
                outer = rng.uniform(1.6, 3.6) * core
                discs.append((outer, rng.uniform(3.5, 5.5)))
                budget -= math.pi * outer**2
            else:
                discs.append((r, None))
                budget -= math.pi * r**2
        centres = place(np.array([d[0] for d in discs]), grid.visible_nm, rng) if discs else []
        for (outer, wall), c in zip(discs, centres, strict=True):
            if c is None:
                continue
            centre = np.array([c[0], c[1], 0.0])
            bodies = [(proj.sphere(centre, outer), 1.0)]
            if wall is not None:
                bodies.append((proj.sphere(centre, outer - wall), -1.0))
            proj.render(bodies, grid.shape, grid.pixel_nm, out=objects)
        for path, r in worms:
            proj.render([(b, 1.0) for b in proj.tube(path, r)], grid.shape, grid.pixel_nm, out=objects)
        info.update(objects=len(discs) + len(worms), core_radius_nm=core, coverage=coverage)
    # The assemblies displace ice; granularity belongs to the ice that is left.
    ice = granular(np.clip(ice - objects, 0.0, None), 'ice', grid.pixel_nm, rng.uniform(0.05, 0.3), rng)
    return {'ice': ice, 'amphiphile': objects}, info


@dataclasses.dataclass(frozen=True)
class Conditions:
    """Ranges the imaging nuisances are drawn from, per family.

    Attributes:
      defocus_nm: (most, least) underfocus, negative numbers.
      dose: e-/A^2, drawn log-uniformly.
      drift_px: Drift during the exposure, detector pixels.
    """

    defocus_nm: tuple[float, float] = (-3000.0, -500.0)
    dose: tuple[float, float] = (10.0, 100.0)
    drift_px: tuple[float, float] = (0.0, 1.5)


def draw_conditions(rng: np.random.Generator, c: Conditions) -> tuple[Optics, Detector]:
    """One exposure's microscope and camera settings (independent of the class)."""
    optics = Optics(
        voltage_v=200e3,
        cs_mm=rng.uniform(0.9, 1.4),  # uncorrected 200 kV objective lenses
        defocus_nm=rng.uniform(*c.defocus_nm),
        astigmatism_nm=rng.uniform(0.0, 150.0),
        astigmatism_angle=rng.uniform(0.0, np.pi),
        focal_spread_nm=rng.uniform(3.0, 8.0),  # Cc ~1.4 mm, 0.7-1.5 eV spread
        illumination_mrad=rng.uniform(0.05, 0.3),
        aperture_mrad=rng.uniform(8.0, 20.0),
    )
    detector = Detector(
        dose_e_per_a2=_loguniform(rng, *c.dose),
        background_adu=_loguniform(rng, *BACKGROUND_ADU),
        offset_adu=rng.uniform(*OFFSET_ADU),
        read_noise_adu=rng.uniform(2.0, 10.0),
        mtf_half=rng.uniform(0.2, 0.5),
        drift_px=rng.uniform(*c.drift_px),
        drift_angle=rng.uniform(0.0, 2.0 * np.pi),
        illumination_tilt=rng.uniform(-0.08, 0.08),
        tilt_angle=rng.uniform(0.0, 2.0 * np.pi),
    )
    return optics, detector


@dataclasses.dataclass(frozen=True)
class Family:
    """A held-out benchmark family.

    Attributes:
      name: CLI name.
      classes: Class names (sorted, as the class-folder reader sorts them).
      field_nm: Width of the written field of view; the pixel size is
        field_nm / size, so every image size shows the same scene.
      build: Specimen builder.
      conditions: Imaging nuisance ranges.
      empty_fraction: Share of support-only fields in the unlabeled pool.
      mixed_fraction: Share of unlabeled images whose objects mix classes.
      description: One line for docs and the CLI.
    """

    name: str
    classes: tuple[str, ...]
    field_nm: float
    build: Builder
    conditions: Conditions
    empty_fraction: float = 0.15
    mixed_fraction: float = 0.25
    description: str = ''


FAMILIES = {
    f.name: f
    for f in (
        Family(
            'nanoparticles',
            NANOPARTICLE_CLASSES,
            140.0,
            _nanoparticles,
            Conditions(),
            description=(
                'metal nanoparticles on carbon: solid vs hollow nanocage vs gold core in a silver shell'
            ),
        ),
        Family(
            'crystals',
            CRYSTAL_CLASSES,
            120.0,
            _crystals,
            Conditions(),
            description='randomly oriented magnetite nanocrystals on carbon: cubes vs octahedra vs rods',
        ),
        Family(
            'composites',
            COMPOSITE_CLASSES,
            250.0,
            composites,
            Conditions(),
            description=(
                'silica nanoparticles in a microtomed polymer section: dispersed vs strings vs aggregates'
            ),
        ),
        Family(
            'assemblies',
            ASSEMBLY_CLASSES,
            220.0,
            _assemblies,
            Conditions(defocus_nm=(-3000.0, -1000.0), dose=(10.0, 40.0)),
            description='cryo-TEM of amphiphile assemblies in ice: spherical micelles vs vesicles vs worms',
        ),
    )
}


def make_grid(family: Family, size: int) -> Grid:
    """The fine grid of a `size` x `size` detector image of this family."""
    fine = 2 * size
    pad = max(fine // 8, 8)
    return Grid((fine + 2 * pad, fine + 2 * pad), family.field_nm / fine, pad)


def render(
    family: Family, mix: Sequence[str], size: int, rng: np.random.Generator
) -> tuple[np.ndarray, dict]:
    """One micrograph of `family` whose objects belong to the classes in `mix`.

    Args:
      family: The family.
      mix: Classes an object may belong to; empty gives a support-only field.
      size: Detector pixels per side.
      rng: The only source of randomness.

    Returns:
      (uint16 (size, size) image, dict of the drawn parameters).
    """
    grid = make_grid(family, size)
    maps, info = family.build(grid, rng, tuple(mix))
    optics, detector = draw_conditions(rng, family.conditions)
    image = form_image(maps, grid.pixel_nm, optics, detector, rng, crop=grid.pad, binning=2)
    info.update(
        defocus_nm=optics.defocus_nm,
        dose_e_per_a2=detector.dose_e_per_a2,
        pixel_nm=2 * grid.pixel_nm,
        drift_px=detector.drift_px,
    )
    return image, {k: (round(float(v), 4) if isinstance(v, float) else v) for k, v in info.items()}


def image_rng(family: Family, seed: int, split: str, label: int, index: int) -> np.random.Generator:
    """The generator of one image: a function of (family, seed, split, class, index) only.

    Images do not depend on how many others are written, so --per_class=50
    writes the first 50 images of --per_class=100.
    """
    return np.random.default_rng(
        [zlib.crc32(family.name.encode()), seed, zlib.crc32(split.encode()), label, index]
    )


def labeled_image(family: Family, label: int, index: int, size: int, seed: int) -> tuple[np.ndarray, dict]:
    """Image `index` of class `family.classes[label]`."""
    rng = image_rng(family, seed, 'labeled', label, index)
    return render(family, (family.classes[label],), size, rng)


def unlabeled_image(family: Family, index: int, size: int, seed: int) -> tuple[np.ndarray, dict]:
    """Image `index` of the unlabeled pool: empty, one class, or mixed classes."""
    rng = image_rng(family, seed, 'unlabeled', 0, index)
    u = rng.random()
    if u < family.empty_fraction:
        mix: tuple[str, ...] = ()
    elif u < family.empty_fraction + family.mixed_fraction:
        mix = family.classes
    else:
        mix = (family.classes[int(rng.integers(len(family.classes)))],)
    image, info = render(family, mix, size, rng)
    info['content'] = '+'.join(mix) if mix else 'empty'
    return image, info
