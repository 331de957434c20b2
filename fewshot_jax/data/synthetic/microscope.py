"""A small bright-field TEM image-formation model with randomised realism knobs.

A scene is a density map (projected stain mass or thickness, >= 0). The model
adds stain granularity and a grainy support film, forms the image
(mass-thickness contrast: transmitted intensity falls off exponentially with
density; or the reverse polarity of negative stain / dark field), applies
uneven illumination, blur and Poisson shot noise, and rescales to [0, 1].
Every knob is drawn per image and independently of the scene class, so no
single intensity cue gives a label away.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import numpy as np
from scipy import ndimage

from fewshot_jax.data.synthetic.render import smooth_noise

# The ranges `draw_knobs` draws from (grain scale and blur in pixels at 256 px, dose in
# counts per background pixel at 256 px; see `draw_knobs` for how they scale with size).
DARK_OBJECTS_PROB = 0.7
CONTRAST = (0.5, 1.2)
GRAIN_AMPLITUDE = (0.05, 0.35)
GRAIN_SCALE = (0.6, 2.0)
BLUR = (0.3, 1.6)
DOSE = (10.0, 300.0)  # drawn log-uniformly
BLACK = (0.0, 0.2)
WHITE = (0.8, 1.0)


@dataclasses.dataclass(frozen=True)
class Knobs:
    """Imaging conditions of one synthetic micrograph.

    Attributes:
      dark_objects: True for dark-stained objects on a bright background.
      contrast: scale of the object signal (projected density to optical density).
      illumination: relative amplitude of the slowly varying illumination.
      grain_amplitude: strength of the stain / support-film granularity.
      grain_scale: correlation length of that granularity in pixels.
      blur: Gaussian blur sigma in pixels (defocus, detector).
      dose: mean electron counts per background pixel (lower is noisier).
      black, white: output levels the 0.5 / 99.5 percentiles map to.
      illumination_scale: correlation length of the illumination's random
        part, as a fraction of the image side.
    """

    dark_objects: bool
    contrast: float
    illumination: float
    grain_amplitude: float
    grain_scale: float
    blur: float
    dose: float
    black: float
    white: float
    illumination_scale: float = 0.2


def _size_factors(size: int) -> tuple[float, float]:
    """(resolution factor, binning) of a `size` px image against the 256 px reference."""
    # A small image stands for a binned large one: binning k x k pixels sums
    # their counts, so the per-pixel dose grows by k^2.
    return float(np.sqrt(size / 256.0)), max(1.0, 256.0 / size) ** 2


def typical_knobs(
    size: int,
    mag: float = 1.0,
    max_illumination: float = 0.35,
    illumination_scales: tuple[float, float] | None = None,
) -> Knobs:
    """The middle of every range `draw_knobs` draws from (dark objects; dose: geometric mean)."""
    res, binning = _size_factors(size)
    return Knobs(
        illumination_scale=0.2 if illumination_scales is None else float(np.mean(illumination_scales)),
        dark_objects=True,
        contrast=float(np.mean(CONTRAST)),
        illumination=max_illumination / 2,
        grain_amplitude=float(np.mean(GRAIN_AMPLITUDE)),
        grain_scale=float(np.mean(GRAIN_SCALE) * res * np.sqrt(mag)),
        blur=float(np.mean(BLUR) * res),
        dose=float(np.sqrt(DOSE[0] * DOSE[1]) * binning),
        black=float(np.mean(BLACK)),
        white=float(np.mean(WHITE)),
    )


KNOB_NAMES = tuple(f.name for f in dataclasses.fields(Knobs))


@dataclasses.dataclass(frozen=True)
class Imaging:
    """How a scene's specimen is imaged.

    Attributes:
      rng: generator for the imaging conditions; None draws them from the scene's own
        generator (the default stream). A generator of their own images the same specimen
        under independent conditions (a second acquisition of one field).
      fixed: `Knobs` fields held at one value for every image instead of drawn: a value,
        or 'typical' for the middle of the drawn range (`typical_knobs`). The draws still
        happen, so the other knobs and the noise are those of the unfixed image.
    """

    rng: np.random.Generator | None = None
    fixed: Mapping[str, float | bool | str] = dataclasses.field(default_factory=dict)


def draw_knobs(
    rng: np.random.Generator,
    size: int,
    mag: float = 1.0,
    max_illumination: float = 0.35,
    illumination_scales: tuple[float, float] | None = None,
) -> Knobs:
    """Draws imaging conditions for one image.

    Args:
      rng: random generator.
      size: image side in pixels (blur and grain scale mildly with it, so a
        64 px image looks like a downsampled 256 px one rather than a blurrier one).
      mag: magnification factor of the scene (larger features, coarser grain).
      max_illumination: upper end of the illumination unevenness range.
      illumination_scales: range of the illumination's correlation length
        (fractions of the side) to draw from; None keeps 0.2 and draws nothing,
        so the random stream of callers that do not ask is unchanged.

    Returns:
      Knobs.
    """
    res, binning = _size_factors(size)
    knobs = Knobs(
        dark_objects=bool(rng.random() < DARK_OBJECTS_PROB),
        contrast=float(rng.uniform(*CONTRAST)),
        illumination=float(rng.uniform(0.0, max_illumination)),
        grain_amplitude=float(rng.uniform(*GRAIN_AMPLITUDE)),
        grain_scale=float(rng.uniform(*GRAIN_SCALE) * res * np.sqrt(mag)),
        blur=float(rng.uniform(*BLUR) * res),
        dose=float(np.exp(rng.uniform(*np.log(DOSE))) * binning),
        black=float(rng.uniform(*BLACK)),
        white=float(rng.uniform(*WHITE)),
    )
    if illumination_scales is not None:
        knobs = dataclasses.replace(knobs, illumination_scale=float(rng.uniform(*illumination_scales)))
    return knobs


def form_image(rng: np.random.Generator, density: np.ndarray, knobs: Knobs) -> np.ndarray:
    """Turns a density map into a TEM-like micrograph.

    Args:
      rng: random generator (grain, illumination and shot noise are drawn from it).
      density: float32 (H, W) with H == W, values >= 0 (about 1 for a solid object).
      knobs: imaging conditions.

    Returns:
      float32 (H, W) image in [0, 1].
    """
    size = density.shape[0]
    grain = smooth_noise(rng, size, knobs.grain_scale)
    film = smooth_noise(rng, size, 4.0 * knobs.grain_scale)
    # Stain pools unevenly inside objects and speckles the film around them.
    thickness = knobs.contrast * density * (1.0 + 0.6 * knobs.grain_amplitude * grain)
    thickness += knobs.grain_amplitude * (0.25 * grain + 0.15 * film)
    if knobs.dark_objects:
        signal = np.exp(-1.6 * np.maximum(thickness, -0.5))
    else:
        signal = 0.2 + np.maximum(thickness + 0.3, 0.0)
    field = _illumination_field(rng, size, knobs.illumination_scale)
    illum = 1.0 + knobs.illumination * field
    signal *= np.clip(illum, 0.2, None)
    if knobs.blur > 0.35:
        signal = ndimage.gaussian_filter(signal, knobs.blur, mode='reflect', truncate=3.0)
    counts = rng.poisson(np.maximum(signal, 0.0) * knobs.dose).astype(np.float32)
    return _rescale(counts, knobs.black, knobs.white)


def image_specimen(
    scene_rng: np.random.Generator,
    imaging: Imaging | None,
    density: np.ndarray,
    mag: float,
    **knob_ranges,
) -> np.ndarray:
    """Images a specimen: draws the imaging conditions, then forms the micrograph.

    Every scene generator ends here, after its structure (and clutter) is drawn, so the
    imaging conditions can come from a stream of their own (see `Imaging`).

    Args:
      scene_rng: the scene's generator; draws the conditions unless `imaging.rng` is set.
      imaging: where the conditions come from and which are fixed; None: the defaults.
      density: the specimen's density map (see `form_image`).
      mag: magnification factor (see `draw_knobs`).
      **knob_ranges: further `draw_knobs` arguments (max_illumination, illumination_scales).

    Returns:
      float32 (H, W) image in [0, 1].
    """
    imaging = imaging or Imaging()
    rng = scene_rng if imaging.rng is None else imaging.rng
    size = density.shape[0]
    knobs = draw_knobs(rng, size, mag, **knob_ranges)
    if imaging.fixed:
        typical = typical_knobs(size, mag, **knob_ranges)
        knobs = dataclasses.replace(
            knobs,
            **{k: getattr(typical, k) if v == 'typical' else v for k, v in imaging.fixed.items()},
        )
    return form_image(rng, density, knobs)


def _illumination_field(rng: np.random.Generator, size: int, scale: float) -> np.ndarray:
    """Slow illumination falloff: a random tilt plus very low-frequency noise."""
    ramp = np.linspace(-1.0, 1.0, size, dtype=np.float32)
    angle = rng.uniform(0, 2 * np.pi)
    tilt = np.cos(angle) * ramp[None, :] + np.sin(angle) * ramp[:, None]
    return 0.6 * tilt + 0.6 * smooth_noise(rng, size, size * scale)


def _rescale(img: np.ndarray, black: float, white: float) -> np.ndarray:
    """Maps robust percentiles to [black, white] and clips to [0, 1]."""
    lo, hi = np.percentile(img, (0.5, 99.5))
    if hi - lo < 1e-6:
        hi = lo + 1.0
    out = (img - lo) * ((white - black) / (hi - lo)) + black
    return np.clip(out, 0.0, 1.0).astype(np.float32)
