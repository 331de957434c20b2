"""Per-example, per-view image augmentations that run on device inside `jax.jit`.

The Grain pipeline delivers uint8 batches at a base size; this module turns
them into float32 views in [0, 1] at the model's input size: a crop (a square
of random side, or a SimCLR-style rectangle of random area and aspect ratio),
resized with `jax.image.scale_and_translate`, a horizontal flip, an optional
rotation by a multiple of 90 degrees, colour jitter
in a random order (brightness, contrast, saturation, hue, gamma), then the
micrograph ops: intensity inversion, Gaussian blur and Gaussian noise. Every
draw comes from the key alone, so a view is a pure function of (key, image):
the same key gives the same pixels, and each example and each view gets its
own draws (the paper's notebooks drew one augmentation per batch; see DESIGN §3).

Grayscale micrographs arrive replicated to 3 channels; every op here except
saturation and hue acts on the three channels alike (noise is one field added
to all three), so a grayscale image stays grayscale.

The settings live in `augment_config`, the photometric ops in `augment_photometric`
(both re-exported here); this module holds the geometric part (crops, resizing) and
the per-image, per-batch and two-view entry points. Only `augment_config_from` reads an
ml_collections config; jitted code sees the frozen, hashable `AugmentConfig`, which may
be passed as a static argument.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from fewshot_jax.errors import is_count
from fewshot_jax.pretrain.augment.config import (
    AugmentConfig,
    AugmentConfigError,
    AugmentInputError,
)
from fewshot_jax.pretrain.augment.photometric import color_jitter, lower_dose, micrograph_ops

__all__ = [
    'area_crop_window',
    'augment_batch',
    'augment_image',
    'crop_resize',
    'crop_window',
    'pixel_window',
    'resize_batch',
    'two_views',
]


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


def pixel_window(key, image, size: int) -> jax.Array:
    """A ``size`` x ``size`` window of ``image`` at a uniformly drawn whole-pixel corner,
    copied as it is (no resampling: the view keeps the image's pixel size and noise).

    Raises:
        AugmentInputError: the image is smaller than the window.
    """
    height, width = image.shape[0], image.shape[1]
    if size > min(height, width):
        raise AugmentInputError(f'a {size}-px window does not fit a {height}x{width} image')
    top_key, left_key = jax.random.split(key)
    top = jax.random.randint(top_key, (), 0, height - size + 1)
    left = jax.random.randint(left_key, (), 0, width - size + 1)
    return jax.lax.dynamic_slice(image, (top, left, 0), (size, size, image.shape[-1]))


def augment_image(key, image, cfg: AugmentConfig) -> jax.Array:
    """Augments one image: a lower dose, crop-resize, flip, 90-degree rotation, colour jitter,
    micrograph ops.

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
    # Before the crop, so the added noise is resampled with the recorded noise it imitates;
    # a folded key leaves every other draw as it was without the op.
    image = lower_dose(jax.random.fold_in(key, 5), image, cfg)
    height, width = image.shape[0], image.shape[1]
    crop_key, flip_key, jitter_key = jax.random.split(key, 3)
    size = cfg.output_size
    if cfg.crop == 'none':
        view = _resample_box(image, 0.0, 0.0, height, width, size)
    elif cfg.crop == 'area':
        top, left, box_height, box_width = area_crop_window(crop_key, height, width, cfg)
        view = _resample_box(image, top, left, box_height, box_width, size)
    elif cfg.crop == 'window':
        view = pixel_window(crop_key, image, size)
    else:
        top, left, side = crop_window(crop_key, height, width, cfg)
        view = _resample_box(image, top, left, side, side, size)
    if cfg.flip_prob > 0:
        flip = jax.random.bernoulli(flip_key, cfg.flip_prob)
        view = jnp.where(flip, view[:, ::-1], view)
    if cfg.rotate90:
        # Folded from the view's key (not a 4th split) for the same reason as below.
        turns = jax.random.randint(jax.random.fold_in(key, 4), (), 0, 4)
        view = jax.lax.switch(turns, [lambda v, k=k: jnp.rot90(v, k) for k in range(4)], view)
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
        images: (N, H, W, C) uint8 or float batch; with `cfg.paired_channels`, C = 3
            and channels 0 and 1 are two acquisitions of each example's field.
        cfg: augmentation settings.

    Returns:
        Two float32 (N, S, S, 3) arrays in [0, 1].

    Raises:
        AugmentInputError: with `cfg.paired_channels` on images of fewer than 3 channels.
    """
    key_a, key_b = jax.random.split(key)
    images_a = images_b = images
    if cfg.paired_channels:
        if jnp.ndim(images) != 4 or images.shape[-1] != 3:
            raise AugmentInputError(
                'augment.paired_channels expects (N, H, W, 3) batches holding two acquisitions '
                f'in channels 0 and 1 (set data.keep_color=True), got shape {jnp.shape(images)}'
            )
        images_a, images_b = images[..., 0:1], images[..., 1:2]
    return augment_batch(key_a, images_a, cfg), augment_batch(key_b, images_b, cfg)


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
    if not is_count(output_size):
        raise AugmentInputError(f'resize_batch output_size must be a positive int, got {output_size!r}')
    height, width = images.shape[1], images.shape[2]

    def resize_one(image):
        view = _resample_box(_to_float_rgb(image), 0.0, 0.0, height, width, output_size)
        return jnp.clip(view, 0.0, 1.0)

    return jax.vmap(resize_one)(images)
