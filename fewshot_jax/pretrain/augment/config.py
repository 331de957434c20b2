"""The augmentation settings: the frozen, hashable `AugmentConfig` and its validation.

Only `augment_config_from` reads an ml_collections config; jitted code sees the frozen
`AugmentConfig`, which may be passed as a static argument. `fewshot_jax.pretrain.augment.views`
re-exports everything public here.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping

from fewshot_jax.errors import is_count

CROP_MODES = ('random', 'area', 'none', 'window')
_RANGE_FIELDS = (
    'crop_range',
    'crop_area',
    'crop_ratio',
    'contrast',
    'saturation',
    'gamma',
    'blur_sigma',
    'noise_std',
)
# A larger sigma would need a kernel wider than any image this project trains on.
_MAX_BLUR_SIGMA = 16.0


class AugmentConfigError(ValueError):
    """An augmentation setting is missing, mistyped or out of range."""


class AugmentInputError(ValueError):
    """An image handed to the augmentations has an unsupported shape or dtype."""


def _is_number(value) -> bool:
    # bool is an int subclass; `flip_prob=True` is a typo, not a probability.
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _check_probability(name: str, value) -> None:
    if not _is_number(value) or not 0.0 <= value <= 1.0:
        raise AugmentConfigError(f'augment.{name} must be a probability in [0, 1], got {value!r}')


def _check_range(name: str, value, low: float, high: float, *, low_open: bool = False) -> None:
    ok = (
        isinstance(value, tuple)
        and len(value) == 2
        and all(_is_number(v) and math.isfinite(v) for v in value)
    )
    if ok:
        lo, hi = value
        above_low = lo > low if low_open else lo >= low
        ok = above_low and lo <= hi <= high
    if not ok:
        bracket = '(' if low_open else '['
        raise AugmentConfigError(
            f'augment.{name} must be a pair (lo, hi) with {bracket}{low} <= lo <= hi <= {high}], '
            f'got {value!r}'
        )


@dataclasses.dataclass(frozen=True)
class AugmentConfig:
    """Static augmentation settings; frozen and hashable so `jit` can treat it as static.

    Attributes:
        output_size: side S of the square output views, in pixels.
        crop: 'random' (square, side fraction drawn from `crop_range`), 'area'
            (rectangle: area fraction from `crop_area`, aspect ratio from
            `crop_ratio`, as SimCLR/BYOL's RandomResizedCrop), 'none' (the whole
            image is resized), 'window' (a square of `output_size` pixels cut at the
            image's own sampling, nothing resized: see `window`) or a fixed side
            fraction in (0, 1].
        window: for crop='window', the view's side as a fraction of the image side
            (`augment_config_from` turns it into `output_size`). A micrograph series has
            one pixel size, so an object's size and the noise's spatial frequencies are
            properties of the specimen and the microscope; resized crops teach the
            encoder to ignore both, windows keep them. Measured worse than resized area
            crops on the held-out tuning family (two overlapping windows share their shot
            noise exactly, which a contrastive task can match; benchmarks/RESULTS.md), so
            no preset uses it.
        crop_range: (lo, hi) side fractions for crop='random'; the paper's
            Randcrop is (0.25, 0.5).
        crop_area: (lo, hi) fractions of the image area for crop='area'; SimCLR
            uses (0.08, 1), a milder common choice is (0.2, 1).
        crop_ratio: (lo, hi) width/height ratios for crop='area', drawn
            log-uniformly; must contain 1. Narrowed where needed so the box fits.
        flip_prob: probability of a horizontal (left-right) flip.
        rotate90: rotate each view by k * 90 degrees, k uniform in {0, 1, 2, 3}; with
            `flip_prob=0.5` every view is one of the square's 8 symmetries, drawn
            uniformly. Label-preserving for micrographs, which have no up or left.
        jitter_prob: probability that each colour-jitter op is applied.
        brightness: max additive brightness delta; 0 disables the op.
        contrast: (lo, hi) contrast factor range; (1, 1) disables the op.
        saturation: (lo, hi) saturation factor range; (1, 1) disables the op.
        hue: max hue shift as a fraction of the colour wheel; 0 disables the op.
        gamma: (lo, hi) range of the exponent g in x -> x**g, drawn log-uniformly;
            (1, 1) disables the op. A jitter op (applied with `jitter_prob`).
        invert_prob: probability of x -> 1 - x (bright-field <-> dark-field
            polarity). Label-preserving only where polarity carries no label.
        blur_prob: probability of a Gaussian blur.
        blur_sigma: (lo, hi) blur standard deviation in output pixels, drawn
            uniformly; the kernel spans +-3 * hi pixels.
        noise_prob: probability of adding Gaussian noise.
        noise_std: (lo, hi) noise standard deviation (in [0, 1] intensity units),
            drawn uniformly; one noise field for all three channels.
        dose: (lo, hi) fraction f of the recorded dose a view keeps, drawn uniformly per
            view; (1, 1) disables the op. Shot noise is what a lower dose changes: at a
            fraction f of the dose, the noise's standard deviation relative to the signal
            grows by 1 / sqrt(f), so white noise of variance sigma^2 (1/f - 1) is added to
            the stored image before the crop, sigma being the image's own noise level
            (estimated from neighbouring pixels; `photometric.noise_level`). A series is
            recorded at doses that differ between exposures and no class depends on the
            dose; independent draws per view also stop two overlapping crops from sharing
            their noise exactly, a cue the pretext could match without the specimen.
        illumination: max amplitude a of a smooth random illumination field: each view
            is multiplied by 1 + a' * f, with a' uniform in [0, a] and f a 4x4 grid of
            standard normals resized smoothly to the image; 0 disables the op. Uneven
            illumination identifies a micrograph without saying anything about its
            content, a shortcut this takes away from the pretext task.
        paired_channels: each example holds two acquisitions of one field in channels 0
            and 1 (e.g. a colour file with red = first, green = second: a defocus pair,
            two detectors, two exposures); `two_views` then draws view 1 from channel 0
            and view 2 from channel 1, each as a grayscale image. The two views then
            differ in every imaging condition, which no augmentation can redraw.
    """

    output_size: int
    crop: str | float = 'random'
    crop_range: tuple[float, float] = (0.25, 0.5)
    window: float = 0.5
    flip_prob: float = 0.5
    rotate90: bool = False
    jitter_prob: float = 0.8
    brightness: float = 0.0
    contrast: tuple[float, float] = (0.2, 1.8)
    saturation: tuple[float, float] = (0.2, 1.8)
    hue: float = 0.2
    crop_area: tuple[float, float] = (0.08, 1.0)
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)
    gamma: tuple[float, float] = (1.0, 1.0)
    invert_prob: float = 0.0
    blur_prob: float = 0.0
    blur_sigma: tuple[float, float] = (0.1, 2.0)
    noise_prob: float = 0.0
    noise_std: tuple[float, float] = (0.0, 0.05)
    dose: tuple[float, float] = (1.0, 1.0)
    illumination: float = 0.0
    paired_channels: bool = False

    def __post_init__(self):
        # Configs hand over lists; tuples keep the dataclass hashable for jit.
        for name in _RANGE_FIELDS:
            value = getattr(self, name)
            if isinstance(value, list):
                object.__setattr__(self, name, tuple(value))
        self.validate()

    def validate(self) -> None:
        """Checks every field.

        Raises:
            AugmentConfigError: (a ValueError) naming the first bad field and value.
        """
        size = self.output_size
        if not is_count(size):
            raise AugmentConfigError(f'augment output_size must be a positive int, got {size!r}')
        crop = self.crop
        if isinstance(crop, str):
            if crop not in CROP_MODES:
                raise AugmentConfigError(
                    f'augment.crop must be one of {CROP_MODES} or a side fraction in (0, 1], got {crop!r}'
                )
        elif not _is_number(crop) or not 0.0 < crop <= 1.0:
            raise AugmentConfigError(
                f'augment.crop must be one of {CROP_MODES} or a side fraction in (0, 1], got {crop!r}'
            )
        _check_range('crop_range', self.crop_range, 0.0, 1.0, low_open=True)
        if not _is_number(self.window) or not 0.0 < self.window <= 1.0:
            raise AugmentConfigError(f'augment.window must be a side fraction in (0, 1], got {self.window!r}')
        _check_range('crop_area', self.crop_area, 0.0, 1.0, low_open=True)
        _check_range('crop_ratio', self.crop_ratio, 0.0, math.inf, low_open=True)
        if not self.crop_ratio[0] <= 1.0 <= self.crop_ratio[1]:
            raise AugmentConfigError(
                f'augment.crop_ratio must contain 1 (lo <= 1 <= hi), got {self.crop_ratio!r}'
            )
        _check_probability('flip_prob', self.flip_prob)
        _check_probability('jitter_prob', self.jitter_prob)
        if not _is_number(self.brightness) or not 0.0 <= self.brightness <= 1.0:
            raise AugmentConfigError(
                f'augment.brightness must be a max delta in [0, 1], got {self.brightness!r}'
            )
        _check_range('contrast', self.contrast, 0.0, math.inf)
        _check_range('saturation', self.saturation, 0.0, math.inf)
        _check_range('gamma', self.gamma, 0.0, math.inf, low_open=True)
        for name in ('invert_prob', 'blur_prob', 'noise_prob'):
            _check_probability(name, getattr(self, name))
        _check_range('blur_sigma', self.blur_sigma, 0.0, _MAX_BLUR_SIGMA, low_open=True)
        _check_range('noise_std', self.noise_std, 0.0, 1.0)
        _check_range('dose', self.dose, 0.0, 1.0, low_open=True)
        if not _is_number(self.illumination) or not 0.0 <= self.illumination <= 1.0:
            raise AugmentConfigError(
                f'augment.illumination must be a max amplitude in [0, 1], got {self.illumination!r}'
            )
        if not isinstance(self.rotate90, bool):
            raise AugmentConfigError(f'augment.rotate90 must be True or False, got {self.rotate90!r}')
        if not isinstance(self.paired_channels, bool):
            raise AugmentConfigError(
                f'augment.paired_channels must be True or False, got {self.paired_channels!r}'
            )
        # A shift of 0.5 already reaches the opposite colour; more just wraps.
        if not _is_number(self.hue) or not 0.0 <= self.hue <= 0.5:
            raise AugmentConfigError(
                f'augment.hue must be a max shift in [0, 0.5] of the colour wheel, got {self.hue!r}'
            )


_CONFIG_KEYS = tuple(f.name for f in dataclasses.fields(AugmentConfig) if f.name != 'output_size')


def _parse_crop(value):
    # A command-line override of a str-typed ml_collections field stays a str
    # ('0.25'), so numeric strings are read as fractions.
    if isinstance(value, str) and value not in CROP_MODES:
        try:
            return float(value)
        except ValueError:
            raise AugmentConfigError(
                f'augment.crop must be one of {CROP_MODES} or a side fraction in (0, 1], got {value!r}'
            ) from None
    return value


def augment_config_from(cfg: Mapping, output_size: int) -> AugmentConfig:
    """Builds a validated `AugmentConfig` from the `augment` part of an experiment config.

    Args:
        cfg: an ml_collections ConfigDict (or any mapping) with any of the keys
            crop, crop_range, window, crop_area, crop_ratio, flip_prob, rotate90, jitter_prob,
            brightness, contrast, saturation, hue, gamma, invert_prob, blur_prob,
            blur_sigma, noise_prob, noise_std, dose, illumination, paired_channels. Missing
            keys take the `AugmentConfig` defaults, which leave the new ops off.
        output_size: side of the stored images the views are cut from, in pixels (the
            model's input size); with crop='window' the views are `window` of it.

    Returns:
        The frozen config.

    Raises:
        AugmentConfigError: on an unknown key (likely a typo) or a bad value.
    """
    unknown = sorted(set(cfg.keys()) - set(_CONFIG_KEYS))
    if unknown:
        raise AugmentConfigError(
            f'unknown augment config key(s) {unknown}; expected some of {list(_CONFIG_KEYS)}'
        )
    values = {name: cfg[name] for name in _CONFIG_KEYS if name in cfg}
    if 'crop' in values:
        values['crop'] = _parse_crop(values['crop'])
    if values.get('crop') == 'window':
        window = values.get('window', AugmentConfig.window)
        if _is_number(window) and 0.0 < window <= 1.0:
            output_size = max(1, round(window * output_size))
    return AugmentConfig(output_size=output_size, **values)
