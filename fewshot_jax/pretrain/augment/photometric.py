"""Photometric augmentations of one view: colour jitter (brightness, contrast, saturation,
hue, gamma, in a random order) and the micrograph ops (intensity inversion, Gaussian blur,
Gaussian noise). Each op acts on the three channels alike except saturation and hue, so a
grayscale image stays grayscale. `fewshot_jax.pretrain.augment.views` re-exports the public functions.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import dm_pix as pix
import jax
import jax.numpy as jnp
from jax import lax

from fewshot_jax.pretrain.augment.config import AugmentConfig


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


def noise_level(image: jax.Array) -> jax.Array:
    """The standard deviation of an image's white noise, from its horizontal neighbours.

    The difference of two neighbouring pixels holds twice the noise variance and, away
    from edges, little of the specimen; the median absolute deviation of those differences
    (x 1.4826, the normal distribution's factor) ignores the edges. Read from the first
    channel (a micrograph arrives as grayscale replicated to three).

    Args:
        image: float32 (H, W, C), W >= 2.

    Returns:
        A float32 scalar, in the image's intensity units.
    """
    gray = image[..., 0]
    diff = gray[:, 1:] - gray[:, :-1]
    mad = jnp.median(jnp.abs(diff - jnp.median(diff)))
    return 1.4826 * mad / math.sqrt(2.0)


def lower_dose(key, image: jax.Array, cfg: AugmentConfig) -> jax.Array:
    """The image as if recorded at a fraction f ~ U(cfg.dose) of its dose: white noise of
    variance ``noise_level(image)^2 (1/f - 1)`` added (one field for all channels), clipped
    to [0, 1]. Returns ``image`` unchanged when ``cfg.dose`` is (1, 1).

    Weak-contrast bright-field images sit near their mean intensity, so their shot noise
    is close to uniform over the field and a Gaussian of constant variance stands in for
    the Poisson counts the file no longer holds.
    """
    if tuple(cfg.dose) == (1.0, 1.0):
        return image
    fraction_key, field_key = jax.random.split(key)
    fraction = jax.random.uniform(fraction_key, (), jnp.float32, *cfg.dose)
    sigma = noise_level(image) * jnp.sqrt(1.0 / fraction - 1.0)
    field = sigma * jax.random.normal(field_key, image.shape[:2] + (1,), jnp.float32)
    return jnp.clip(image + field, 0.0, 1.0)


def micrograph_ops(key, image: jax.Array, cfg: AugmentConfig) -> jax.Array:
    """Intensity inversion, Gaussian blur, Gaussian noise (each with its own probability) and
    a smooth random illumination field.

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
    if cfg.illumination > 0:
        # Its own stream (fold_in), so the other ops draw what they drew before it existed.
        amp_key, grid_key = jax.random.split(jax.random.fold_in(key, 4))
        amplitude = jax.random.uniform(amp_key, (), jnp.float32, 0.0, cfg.illumination)
        grid = jax.random.normal(grid_key, (4, 4, 1), jnp.float32)
        field = jax.image.resize(grid, image.shape[:2] + (1,), 'bicubic')
        image = jnp.clip(image * (1.0 + amplitude * field), 0.0, 1.0)
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
