"""Per-example, per-view image augmentations that run on device inside `jax.jit`.

The Grain pipeline delivers uint8 batches at a base size; this module turns
them into float32 views in [0, 1] at the model's input size: a square crop
(random side and corner), resized with `jax.image.scale_and_translate`, a
horizontal flip and colour jitter in a random order. Every draw comes from the
key alone, so a view is a pure function of (key, image): the same key gives
the same pixels, and each example and each view gets its own draws (the
paper's notebooks drew one augmentation per batch; see DESIGN §3).

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

CROP_MODES = ('random', 'none')


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
        crop: 'random' (side fraction drawn from `crop_range`), 'none' (the
            whole image is resized) or a fixed side fraction in (0, 1].
        crop_range: (lo, hi) side fractions for crop='random'; the paper's
            Randcrop is (0.25, 0.5).
        flip_prob: probability of a horizontal (left-right) flip.
        jitter_prob: probability that each colour-jitter op is applied.
        brightness: max additive brightness delta; 0 disables the op.
        contrast: (lo, hi) contrast factor range; (1, 1) disables the op.
        saturation: (lo, hi) saturation factor range; (1, 1) disables the op.
        hue: max hue shift as a fraction of the colour wheel; 0 disables the op.
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

    def __post_init__(self):
        # Configs hand over lists; tuples keep the dataclass hashable for jit.
        for name in ('crop_range', 'contrast', 'saturation'):
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
            raise AugmentConfigError(
                f'augment output_size must be a positive int, got {size!r}'
            )
        crop = self.crop
        if isinstance(crop, str):
            if crop not in CROP_MODES:
                raise AugmentConfigError(
                    f"augment.crop must be 'random', 'none' or a side fraction in (0, 1], "
                    f'got {crop!r}'
                )
        elif not _is_number(crop) or not 0.0 < crop <= 1.0:
            raise AugmentConfigError(
                f"augment.crop must be 'random', 'none' or a side fraction in (0, 1], got {crop!r}"
            )
        _check_range('crop_range', self.crop_range, 0.0, 1.0, low_open=True)
        _check_probability('flip_prob', self.flip_prob)
        _check_probability('jitter_prob', self.jitter_prob)
        if not _is_number(self.brightness) or not 0.0 <= self.brightness <= 1.0:
            raise AugmentConfigError(
                f'augment.brightness must be a max delta in [0, 1], got {self.brightness!r}'
            )
        _check_range('contrast', self.contrast, 0.0, math.inf)
        _check_range('saturation', self.saturation, 0.0, math.inf)
        # A shift of 0.5 already reaches the opposite colour; more just wraps.
        if not _is_number(self.hue) or not 0.0 <= self.hue <= 0.5:
            raise AugmentConfigError(
                f'augment.hue must be a max shift in [0, 0.5] of the colour wheel, '
                f'got {self.hue!r}'
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
                f"augment.crop must be 'random', 'none' or a side fraction in (0, 1], "
                f'got {value!r}'
            ) from None
    return value


def augment_config_from(cfg: Mapping, output_size: int) -> AugmentConfig:
    """Builds a validated `AugmentConfig` from the `augment` part of an experiment config.

    Args:
        cfg: an ml_collections ConfigDict (or any mapping) with any of the keys
            crop, crop_range, flip_prob, jitter_prob, brightness, contrast,
            saturation, hue. Missing keys take the `AugmentConfig` defaults.
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
    if cfg.crop == 'none':
        raise AugmentConfigError(
            "crop_window needs augment.crop 'random' or a fraction, got 'none'"
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


def _jitter_ops(cfg: AugmentConfig) -> list[tuple[Callable, Callable]]:
    """(draw parameter from key, apply op) pairs for the enabled jitter ops."""
    ops = []
    if cfg.brightness > 0:
        ops.append((
            lambda k: jax.random.uniform(k, (), jnp.float32, -cfg.brightness, cfg.brightness),
            pix.adjust_brightness,
        ))
    if cfg.contrast != (1, 1):
        ops.append((
            lambda k: jax.random.uniform(k, (), jnp.float32, *cfg.contrast),
            pix.adjust_contrast,
        ))
    if cfg.saturation != (1, 1):
        ops.append((
            lambda k: jax.random.uniform(k, (), jnp.float32, *cfg.saturation),
            pix.adjust_saturation,
        ))
    if cfg.hue > 0:
        ops.append((
            lambda k: jax.random.uniform(k, (), jnp.float32, -cfg.hue, cfg.hue),
            pix.adjust_hue,
        ))
    return ops


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
    """Augments one image: crop-resize, horizontal flip, colour jitter.

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
    else:
        top, left, side = crop_window(crop_key, height, width, cfg)
        view = _resample_box(image, top, left, side, side, size)
    if cfg.flip_prob > 0:
        flip = jax.random.bernoulli(flip_key, cfg.flip_prob)
        view = jnp.where(flip, view[:, ::-1], view)
    view = color_jitter(jitter_key, view, cfg)
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
        raise AugmentInputError(
            f'resize_batch output_size must be a positive int, got {output_size!r}'
        )
    height, width = images.shape[1], images.shape[2]

    def resize_one(image):
        view = _resample_box(_to_float_rgb(image), 0.0, 0.0, height, width, output_size)
        return jnp.clip(view, 0.0, 1.0)

    return jax.vmap(resize_one)(images)
