"""Per-example, per-view image augmentations that run on device inside `jax.jit`.

The Grain pipeline delivers uint8 batches at a base size; this module turns
them into float32 views in [0, 1] at the model's input size: a crop (a square
of random side, or a SimCLR-style rectangle of random area and aspect ratio),
resized with `jax.image.scale_and_translate`, a horizontal flip, colour jitter
in a random order (brightness, contrast, saturation, hue, gamma), then the
micrograph ops: intensity inversion, Gaussian blur and Gaussian noise. Every
draw comes from the key alone, so a view is a pure function of (key, image):
the same key gives the same pixels, and each example and each view gets its
own draws (the paper's notebooks drew one augmentation per batch; see DESIGN §3).

Grayscale micrographs arrive replicated to 3 channels; every op here except
saturation and hue acts on the three channels alike (noise is one field added
to all three), so a grayscale image stays grayscale.

Only `augment_config_from` reads an ml_collections config; jitted code sees
the frozen, hashable `AugmentConfig`, which may be passed as a static argument.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping

import dm_pix as pix
import jax
import jax.numpy as jnp
from jax import lax

CROP_MODES = ('random', 'area', 'none')
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
            image is resized) or a fixed side fraction in (0, 1].
        crop_range: (lo, hi) side fractions for crop='random'; the paper's
            Randcrop is (0.25, 0.5).
        crop_area: (lo, hi) fractions of the image area for crop='area'; SimCLR
            uses (0.08, 1), a milder common choice is (0.2, 1).
        crop_ratio: (lo, hi) width/height ratios for crop='area', drawn
            log-uniformly; must contain 1. Narrowed where needed so the box fits.
        flip_prob: probability of a horizontal (left-right) flip.
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
    """

    output_size: int
    crop: str | float = 'random'
    crop_range: tuple[float, float] = (0.25, 0.5)
    flip_prob: float = 0.5
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
        if not isinstance(size, int) or isinstance(size, bool) or size < 1:
            raise AugmentConfigError(f'augment output_size must be a positive int, got {size!r}')
        crop = self.crop
        if isinstance(crop, str):
            if crop not in CROP_MODES:
                raise AugmentConfigError(
                    f"augment.crop must be 'random', 'none' or a side fraction in (0, 1], got {crop!r}"
                )
        elif not _is_number(crop) or not 0.0 < crop <= 1.0:
            raise AugmentConfigError(
                f"augment.crop must be 'random', 'none' or a side fraction in (0, 1], got {crop!r}"
            )
        _check_range('crop_range', self.crop_range, 0.0, 1.0, low_open=True)
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
                f"augment.crop must be 'random', 'none' or a side fraction in (0, 1], got {value!r}"
            ) from None
    return value


def augment_config_from(cfg: Mapping, output_size: int) -> AugmentConfig:
    """Builds a validated `AugmentConfig` from the `augment` part of an experiment config.

    Args:
        cfg: an ml_collections ConfigDict (or any mapping) with any of the keys
            crop, crop_range, crop_area, crop_ratio, flip_prob, jitter_prob,
            brightness, contrast, saturation, hue, gamma, invert_prob, blur_prob,
            blur_sigma, noise_prob, noise_std. Missing keys take the
            `AugmentConfig` defaults, which leave the new ops off.
        output_size: side of the output views, in pixels (the model's input size).

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
    return AugmentConfig(output_size=output_size, **values)


def _to_float_rgb(image: jax.Array) -> jax.Array:
    """uint8 or float (H, W, 1|3) -> float32 (H, W, 3); float input is taken to be in [0, 1]."""
    image = jnp.asarray(image)
    if image.ndim != 3 or image.shape[-1] not in (1, 3):
        raise AugmentInputError(
            f'augment expects an image of shape (H, W, 1) or (H, W, 3), got shape {image.shape}'
        )
    if image.dtype == jnp.uint8:
        image = image.astype(jnp.float32) / 255.0
    elif jnp.issubdtype(image.dtype, jnp.floating):
        image = image.astype(jnp.float32)
    else:
        raise AugmentInputError(
            f'augment expects uint8 or float images, got dtype {image.dtype} '
            f'(convert 16-bit data to float in [0, 1] first)'
        )
    if image.shape[-1] == 1:
        image = jnp.repeat(image, 3, axis=-1)
    return image


def _resample_box(image, top, left, box_height, box_width, output_size: int) -> jax.Array:
    """Resamples the box [top, top+box_height) x [left, left+box_width) to S x S.

    scale_and_translate maps an input coordinate x (pixel centres at i + 0.5)
    to the output coordinate x * scale + translation. The box edge `top` must
    land on 0 and `top + box_height` on S, hence scale = S / box_height and
    translation = -top * scale. Coordinates may be fractional and traced.
    """
    scale_y = output_size / box_height
    scale_x = output_size / box_width
    scale = jnp.stack([jnp.asarray(scale_y, jnp.float32), jnp.asarray(scale_x, jnp.float32)])
    translation = jnp.stack(
        [jnp.asarray(-top * scale_y, jnp.float32), jnp.asarray(-left * scale_x, jnp.float32)]
    )
    return jax.image.scale_and_translate(
        image,
        (output_size, output_size, image.shape[-1]),
        spatial_dims=(0, 1),
        scale=scale,
        translation=translation,
        method='linear',
        antialias=True,
    )


def crop_resize(image, top, left, side, output_size: int) -> jax.Array:
    """Crops a square window and resizes it to `output_size` (linear, antialiased).

    Args:
        image: (H, W, C) uint8 or float image (C in {1, 3}).
        top: row of the window's top edge, in pixels (may be fractional, traced).
        left: column of the window's left edge, in pixels.
        side: window side in pixels; the window must lie inside the image.
        output_size: side S of the output.

    Returns:
        float32 (S, S, 3) array.
    """
    return _resample_box(_to_float_rgb(image), top, left, side, side, output_size)


def crop_window(key, height: int, width: int, cfg: AugmentConfig):
    """Draws a square crop window inside an image of the given size.

    The side is f * min(height, width), with f drawn uniformly from
    `cfg.crop_range` (crop='random') or fixed (crop=float); the top-left
    corner is uniform over all positions that keep the window inside.

    Args:
        key: a JAX PRNG key.
        height: image height in pixels (static).
        width: image width in pixels (static).
        cfg: augmentation settings; crop='none' is not a window and is rejected.

    Returns:
        (top, left, side) float32 scalars, in pixels.
    """
    if cfg.crop in ('none', 'area'):
        raise AugmentConfigError(
            f"crop_window needs augment.crop 'random' or a fraction, got {cfg.crop!r} "
            f"(crop='area' boxes come from area_crop_window)"
        )
    side_key, corner_key = jax.random.split(key)
    if cfg.crop == 'random':
        lo, hi = cfg.crop_range
        fraction = jax.random.uniform(side_key, (), jnp.float32, lo, hi)
    else:
        fraction = jnp.float32(cfg.crop)
    side = fraction * min(height, width)
    corner = jax.random.uniform(corner_key, (2,), jnp.float32)
    top = corner[0] * (height - side)
    left = corner[1] * (width - side)
    return top, left, side


def area_crop_window(key, height: int, width: int, cfg: AugmentConfig):
    """Draws a rectangular crop box by area fraction and aspect ratio (RandomResizedCrop).

    The box covers a fraction a ~ U(`cfg.crop_area`) of the image area; its
    width/height ratio r is log-uniform in `cfg.crop_ratio`, narrowed to the
    ratios for which a box of that area fits inside the image (so no draw is
    rejected and the area is exact); the corner is uniform over the positions
    that keep the box inside.

    Args:
        key: a JAX PRNG key.
        height: image height in pixels (static).
        width: image width in pixels (static).
        cfg: augmentation settings (crop='area').

    Returns:
        (top, left, box_height, box_width) float32 scalars, in pixels.
    """
    area_key, ratio_key, corner_key = jax.random.split(key, 3)
    lo, hi = cfg.crop_area
    area = jax.random.uniform(area_key, (), jnp.float32, lo, hi) * (height * width)
    # A box of this area fits iff area / height <= box_width <= width, i.e.
    # r = box_width**2 / area lies in [area / height**2, width**2 / area].
    log_lo = jnp.maximum(math.log(cfg.crop_ratio[0]), jnp.log(area / height**2))
    log_hi = jnp.minimum(math.log(cfg.crop_ratio[1]), jnp.log(width**2 / area))
    log_ratio = log_lo + jax.random.uniform(ratio_key, (), jnp.float32) * (log_hi - log_lo)
    box_width = jnp.minimum(jnp.sqrt(area * jnp.exp(log_ratio)), width)
    box_height = jnp.minimum(area / box_width, height)
    corner = jax.random.uniform(corner_key, (2,), jnp.float32)
    return corner[0] * (height - box_height), corner[1] * (width - box_width), box_height, box_width


def _jitter_ops(cfg: AugmentConfig) -> list[tuple[Callable, Callable]]:
    """(draw parameter from key, apply op) pairs for the enabled jitter ops."""
    ops = []
    if cfg.brightness > 0:
        ops.append(
            (
                lambda k: jax.random.uniform(k, (), jnp.float32, -cfg.brightness, cfg.brightness),
                pix.adjust_brightness,
            )
        )
    if cfg.contrast != (1, 1):
        ops.append(
            (
                lambda k: jax.random.uniform(k, (), jnp.float32, *cfg.contrast),
                pix.adjust_contrast,
            )
        )
    if cfg.saturation != (1, 1):
        ops.append(
            (
                lambda k: jax.random.uniform(k, (), jnp.float32, *cfg.saturation),
                pix.adjust_saturation,
            )
        )
    if cfg.hue > 0:
        ops.append(
            (
                lambda k: jax.random.uniform(k, (), jnp.float32, -cfg.hue, cfg.hue),
                pix.adjust_hue,
            )
        )
    # Appended last so that configs without gamma keep the keys of the ops above.
    if cfg.gamma != (1, 1):
        log_lo, log_hi = math.log(cfg.gamma[0]), math.log(cfg.gamma[1])
        ops.append(
            (
                lambda k: jnp.exp(jax.random.uniform(k, (), jnp.float32, log_lo, log_hi)),
                adjust_gamma,
            )
        )
    return ops


def adjust_gamma(image: jax.Array, gamma) -> jax.Array:
    """x -> x**gamma on [0, 1] intensities (gamma < 1 brightens the mid-tones)."""
    # The floor keeps the gradient-free power finite at 0 for any gamma > 0.
    return jnp.power(jnp.maximum(image, 0.0), gamma)


def _gaussian_kernel(sigma, radius: int) -> jax.Array:
    offsets = jnp.arange(-radius, radius + 1, dtype=jnp.float32)
    weights = jnp.exp(-0.5 * (offsets / sigma) ** 2)
    return weights / jnp.sum(weights)


def gaussian_blur(image: jax.Array, sigma, radius: int) -> jax.Array:
    """Separable Gaussian blur of an (H, W, C) image with edge-reflecting borders.

    Args:
        image: float32 (H, W, C).
        sigma: standard deviation in pixels (may be traced).
        radius: static kernel half-width; the kernel has 2 * radius + 1 taps.

    Returns:
        float32 (H, W, C).
    """
    kernel = _gaussian_kernel(sigma, radius)
    height, width = image.shape[0], image.shape[1]
    # 'symmetric' repeats the edge pixel (as scipy.ndimage's 'reflect'); a radius
    # beyond the image side needs repeated reflection, which np.pad does too.
    padded = jnp.pad(image, ((radius, radius), (radius, radius), (0, 0)), mode='symmetric')
    rows = sum(kernel[i] * padded[i : i + height] for i in range(2 * radius + 1))
    return sum(kernel[i] * rows[:, i : i + width] for i in range(2 * radius + 1))


def _blur_radius(cfg: AugmentConfig) -> int:
    return max(1, math.ceil(3.0 * cfg.blur_sigma[1]))


def micrograph_ops(key, image: jax.Array, cfg: AugmentConfig) -> jax.Array:
    """Intensity inversion, Gaussian blur and Gaussian noise, each with its own probability.

    Applied in that order after the colour jitter; each op is skipped (no
    compute) when its probability is 0.

    Args:
        key: a JAX PRNG key.
        image: float32 (H, W, 3) in [0, 1].
        cfg: augmentation settings.

    Returns:
        float32 (H, W, 3) in [0, 1].
    """
    invert_key, blur_key, noise_key = jax.random.split(key, 3)
    if cfg.invert_prob > 0:
        image = jnp.where(jax.random.bernoulli(invert_key, cfg.invert_prob), 1.0 - image, image)
    if cfg.blur_prob > 0:
        apply_key, sigma_key = jax.random.split(blur_key)
        sigma = jax.random.uniform(sigma_key, (), jnp.float32, *cfg.blur_sigma)
        blurred = gaussian_blur(image, sigma, _blur_radius(cfg))
        image = jnp.where(jax.random.bernoulli(apply_key, cfg.blur_prob), blurred, image)
    if cfg.noise_prob > 0:
        apply_key, std_key, field_key = jax.random.split(noise_key, 3)
        std = jax.random.uniform(std_key, (), jnp.float32, *cfg.noise_std)
        field = std * jax.random.normal(field_key, image.shape[:2] + (1,), jnp.float32)
        noisy = jnp.clip(image + field, 0.0, 1.0)
        image = jnp.where(jax.random.bernoulli(apply_key, cfg.noise_prob), noisy, image)
    return image


def color_jitter(key, image: jax.Array, cfg: AugmentConfig) -> jax.Array:
    """Applies each enabled jitter op with probability `cfg.jitter_prob`, in a random order.

    Args:
        key: a JAX PRNG key.
        image: float32 (H, W, 3) in [0, 1].
        cfg: augmentation settings.

    Returns:
        float32 (H, W, 3) in [0, 1].
    """
    ops = _jitter_ops(cfg)
    if not ops or cfg.jitter_prob == 0:
        return image
    order_key, apply_key, *param_keys = jax.random.split(key, 2 + len(ops))
    order = jax.random.permutation(order_key, len(ops))
    applied = jax.random.bernoulli(apply_key, cfg.jitter_prob, (len(ops),))
    params = [draw(k) for (draw, _), k in zip(ops, param_keys, strict=True)]

    def branch(index: int) -> Callable:
        def run(img):
            # Clip after every op: dm-pix's HSV conversions assume [0, 1].
            out = jnp.clip(ops[index][1](img, params[index]), 0.0, 1.0)
            return jnp.where(applied[index], out, img)

        return run

    branches = [branch(i) for i in range(len(ops))]
    for slot in range(len(ops)):
        image = lax.switch(order[slot], branches, image)
    return image


def augment_image(key, image, cfg: AugmentConfig) -> jax.Array:
    """Augments one image: crop-resize, horizontal flip, colour jitter, micrograph ops.

    Args:
        key: a JAX PRNG key; the output is a pure function of (key, image).
        image: (H, W, C) uint8 (0..255) or float (0..1) image, C in {1, 3};
            grayscale is replicated to 3 channels.
        cfg: augmentation settings.

    Returns:
        float32 (S, S, 3) in [0, 1], S = cfg.output_size.

    Raises:
        AugmentInputError: on a shape or dtype other than the above.
    """
    image = _to_float_rgb(image)
    height, width = image.shape[0], image.shape[1]
    crop_key, flip_key, jitter_key = jax.random.split(key, 3)
    size = cfg.output_size
    if cfg.crop == 'none':
        view = _resample_box(image, 0.0, 0.0, height, width, size)
    elif cfg.crop == 'area':
        top, left, box_height, box_width = area_crop_window(crop_key, height, width, cfg)
        view = _resample_box(image, top, left, box_height, box_width, size)
    else:
        top, left, side = crop_window(crop_key, height, width, cfg)
        view = _resample_box(image, top, left, side, side, size)
    if cfg.flip_prob > 0:
        flip = jax.random.bernoulli(flip_key, cfg.flip_prob)
        view = jnp.where(flip, view[:, ::-1], view)
    view = color_jitter(jitter_key, view, cfg)
    # A key folded from the view's key (not a 4th split) keeps the crop, flip and
    # jitter draws of configs that predate these ops bit-identical.
    view = micrograph_ops(jax.random.fold_in(key, 3), jnp.clip(view, 0.0, 1.0), cfg)
    return jnp.clip(view, 0.0, 1.0)


def augment_batch(key, images, cfg: AugmentConfig) -> jax.Array:
    """Augments each image of a batch with its own key.

    Args:
        key: a JAX PRNG key, split into one key per example.
        images: (N, H, W, C) uint8 or float batch, C in {1, 3}.
        cfg: augmentation settings.

    Returns:
        float32 (N, S, S, 3) in [0, 1].
    """
    images = jnp.asarray(images)
    if images.ndim != 4:
        raise AugmentInputError(
            f'augment_batch expects images of shape (N, H, W, C), got shape {images.shape}'
        )
    keys = jax.random.split(key, images.shape[0])
    return jax.vmap(augment_image, in_axes=(0, 0, None))(keys, images, cfg)


def two_views(key, images, cfg: AugmentConfig) -> tuple[jax.Array, jax.Array]:
    """Two independently augmented views of a batch (for SimCLR / Barlow Twins).

    Args:
        key: a JAX PRNG key, split into one key per view.
        images: (N, H, W, C) uint8 or float batch.
        cfg: augmentation settings.

    Returns:
        Two float32 (N, S, S, 3) arrays in [0, 1].
    """
    key_a, key_b = jax.random.split(key)
    return augment_batch(key_a, images, cfg), augment_batch(key_b, images, cfg)


def resize_batch(images, output_size: int) -> jax.Array:
    """Deterministic resize of whole images to S x S (for evaluation and probes).

    Uses the same linear, antialiased resampling as the augmentations, so a
    probe sees the pixels a crop='none' view without flip or jitter would.

    Args:
        images: (N, H, W, C) uint8 or float batch, C in {1, 3}.
        output_size: side S of the output.

    Returns:
        float32 (N, S, S, 3) in [0, 1].
    """
    images = jnp.asarray(images)
    if images.ndim != 4:
        raise AugmentInputError(
            f'resize_batch expects images of shape (N, H, W, C), got shape {images.shape}'
        )
    if not isinstance(output_size, int) or isinstance(output_size, bool) or output_size < 1:
        raise AugmentInputError(f'resize_batch output_size must be a positive int, got {output_size!r}')
    height, width = images.shape[1], images.shape[2]

    def resize_one(image):
        view = _resample_box(_to_float_rgb(image), 0.0, 0.0, height, width, output_size)
        return jnp.clip(view, 0.0, 1.0)

    return jax.vmap(resize_one)(images)
