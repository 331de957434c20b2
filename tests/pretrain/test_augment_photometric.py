"""Grayscale micrograph augmentations (augment_photometric.py): gamma, blur, inversion, noise,
illumination, and the settings that turn them on."""

import dataclasses

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from fewshot_jax.pretrain import augment
from fewshot_jax.pretrain.augment.views import AugmentConfig
from tests.pretrain.test_augment import NO_JITTER, batch_fn, random_uint8

GRAY_ONLY = dict(jitter_prob=1.0, contrast=(1, 1), saturation=(1, 1), hue=0)


def test_gamma_raises_every_pixel_to_one_drawn_power():
    image = jnp.asarray(0.05 + 0.9 * np.random.default_rng(4).random((16, 16, 3)), jnp.float32)
    cfg = AugmentConfig(output_size=16, gamma=(0.5, 2.0), **GRAY_ONLY)
    powers = []
    for seed in range(5):
        out = np.asarray(augment.color_jitter(jax.random.key(seed), image, cfg), np.float64)
        power = np.log(out) / np.log(np.asarray(image, np.float64))
        np.testing.assert_allclose(power, power.flat[0], rtol=1e-4)
        assert 0.5 - 1e-5 <= power.flat[0] <= 2.0 + 1e-5
        powers.append(power.flat[0])
    assert len(set(np.round(powers, 4))) == 5


def gaussian_blur_reference(image, sigma, radius):
    """Plain loops: normalised Gaussian taps, indices mirrored at the edges (edge pixel repeated)."""
    taps = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    taps /= taps.sum()
    height, width, _ = image.shape

    def mirror(i, n):
        while i < 0 or i >= n:
            i = -i - 1 if i < 0 else 2 * n - i - 1
        return i

    rows = np.zeros_like(image, np.float64)
    for y in range(height):
        for k, t in enumerate(taps):
            rows[y] += t * image[mirror(y + k - radius, height)]
    out = np.zeros_like(rows)
    for x in range(width):
        for k, t in enumerate(taps):
            out[:, x] += t * rows[:, mirror(x + k - radius, width)]
    return out


@pytest.mark.parametrize('sigma, radius', [(0.7, 3), (2.0, 6), (3.0, 12)])
def test_gaussian_blur_matches_loop_reference(sigma, radius):
    image = np.random.default_rng(5).random((10, 14, 3)).astype(np.float32)
    out = np.asarray(jax.jit(augment.gaussian_blur, static_argnums=2)(image, sigma, radius))
    np.testing.assert_allclose(out, gaussian_blur_reference(image, sigma, radius), atol=1e-5)


def test_blur_prob_one_blurs_every_view_with_its_own_sigma():
    images = np.repeat(random_uint8((1, 32, 32, 1), seed=9), 8, axis=0)
    sharp_cfg = AugmentConfig(output_size=32, crop='none', **NO_JITTER)
    blur_cfg = dataclasses.replace(sharp_cfg, blur_prob=1.0, blur_sigma=(0.5, 2.0))
    sharp = np.asarray(batch_fn(jax.random.key(0), images, sharp_cfg))
    blurred = np.asarray(batch_fn(jax.random.key(0), images, blur_cfg))
    # Each view is the sharp image blurred with some sigma in range: find that sigma.
    found = []
    for view in blurred:
        best = 1.25
        for step in (0.05, 0.002, 0.0001):  # grid searches, each finer around the last best
            grid = np.clip(best + step * np.arange(-25, 26), 0.5, 2.0)
            errors = [np.abs(view - gaussian_blur_reference(sharp[0], s, 6)).max() for s in grid]
            best = grid[int(np.argmin(errors))]
        assert min(errors) < 1e-4
        found.append(round(float(best), 3))
    assert len(set(found)) >= 6


def test_invert_prob_one_inverts_and_a_half_inverts_some():
    images = random_uint8((16, 24, 24, 1), seed=10)
    plain = AugmentConfig(output_size=24, crop='none', **NO_JITTER)
    base = np.asarray(batch_fn(jax.random.key(1), images, plain))
    inverted = np.asarray(batch_fn(jax.random.key(1), images, dataclasses.replace(plain, invert_prob=1.0)))
    np.testing.assert_allclose(inverted, 1.0 - base, atol=1e-6)
    half = np.asarray(batch_fn(jax.random.key(1), images, dataclasses.replace(plain, invert_prob=0.5)))
    flags = [bool(np.allclose(h, 1.0 - b, atol=1e-6)) for h, b in zip(half, base, strict=True)]
    kept = [bool(np.allclose(h, b, atol=1e-6)) for h, b in zip(half, base, strict=True)]
    assert all(f != k for f, k in zip(flags, kept, strict=True))
    assert 0 < sum(flags) < len(flags)


def test_noise_is_one_gray_field_with_the_drawn_std_and_its_own_draw_per_example():
    images = np.full((6, 48, 48, 1), 128, np.uint8)
    cfg = AugmentConfig(output_size=48, crop='none', noise_prob=1.0, noise_std=(0.02, 0.08), **NO_JITTER)
    views = np.asarray(batch_fn(jax.random.key(2), images, cfg), np.float64)
    residual = views - 128 / 255
    np.testing.assert_array_equal(views[..., 0], views[..., 1])
    np.testing.assert_array_equal(views[..., 0], views[..., 2])
    stds = residual[..., 0].std(axis=(1, 2))
    assert np.all(stds > 0.02 * 0.85) and np.all(stds < 0.08 * 1.15)
    assert np.all(np.abs(residual[..., 0].mean(axis=(1, 2))) < 0.01)
    for i in range(len(views)):
        for j in range(i):
            assert np.abs(views[i] - views[j]).max() > 1e-2


def test_all_ops_on_are_deterministic_by_key_and_stay_in_range():
    images = random_uint8((4, 40, 40, 1), seed=11)
    cfg = AugmentConfig(
        output_size=32,
        crop='area',
        crop_area=(0.08, 1.0),
        brightness=0.3,
        gamma=(0.5, 2.0),
        invert_prob=0.5,
        blur_prob=0.5,
        noise_prob=0.5,
        saturation=(1, 1),
        hue=0,
    )
    first = np.asarray(batch_fn(jax.random.key(7), images, cfg))
    second = np.asarray(batch_fn(jax.random.key(7), images, cfg))
    other = np.asarray(batch_fn(jax.random.key(8), images, cfg))
    np.testing.assert_array_equal(first, second)
    assert all(np.abs(a - b).max() > 1e-3 for a, b in zip(first, other, strict=True))
    assert first.min() >= 0.0 and first.max() <= 1.0
    np.testing.assert_array_equal(first[..., 0], first[..., 2])  # grayscale stays grayscale


def test_new_ops_off_leave_the_default_views_unchanged():
    # Turning on an op whose probability is 0 must not move any other draw.
    images = random_uint8((4, 40, 40, 1), seed=12)
    cfg = AugmentConfig(output_size=32, brightness=0.2)
    quiet = dataclasses.replace(cfg, blur_sigma=(1.0, 3.0), noise_std=(0.1, 0.2), crop_area=(0.3, 0.6))
    np.testing.assert_array_equal(
        np.asarray(batch_fn(jax.random.key(4), images, cfg)),
        np.asarray(batch_fn(jax.random.key(4), images, quiet)),
    )


@pytest.mark.parametrize(
    'field, value',
    [
        ('crop_area', (0.0, 1.0)),
        ('crop_area', (0.5, 1.2)),
        ('crop_ratio', (1.2, 2.0)),
        ('crop_ratio', (0.0, 1.5)),
        ('gamma', (0.0, 2.0)),
        ('gamma', (2.0, 0.5)),
        ('invert_prob', 1.5),
        ('blur_prob', -0.2),
        ('blur_sigma', (0.5, 40.0)),
        ('noise_prob', 'yes'),
        ('noise_std', (0.1, 0.05)),
    ],
)
def test_invalid_new_fields_raise_naming_the_field(field, value):
    with pytest.raises(augment.AugmentConfigError, match=field) as error:
        AugmentConfig(output_size=32, **{field: value})
    assert repr(value) in str(error.value)


def test_config_from_reads_the_new_fields():
    cfg = ml_collections.ConfigDict(
        {
            'crop': 'area',
            'crop_area': [0.2, 1.0],
            'gamma': [0.7, 1.4],
            'blur_prob': 0.5,
            'noise_std': [0.0, 0.03],
        }
    )
    built = augment.augment_config_from(cfg, output_size=64)
    assert built == AugmentConfig(
        output_size=64,
        crop='area',
        crop_area=(0.2, 1.0),
        gamma=(0.7, 1.4),
        blur_prob=0.5,
        noise_std=(0.0, 0.03),
    )
    hash(built)
    with pytest.raises(augment.AugmentConfigError, match='crop_window needs'):
        augment.crop_window(jax.random.key(0), 32, 32, built)


def test_illumination_is_a_smooth_gray_gain_field_with_its_own_draw_per_example():
    images = np.full((6, 48, 48, 1), 128, np.uint8)
    base = dict(output_size=48, crop='none', **NO_JITTER)
    plain = np.asarray(batch_fn(jax.random.key(3), images, AugmentConfig(**base)), np.float64)
    lit = np.asarray(batch_fn(jax.random.key(3), images, AugmentConfig(**base, illumination=0.5)), np.float64)
    gain = lit[..., 0] / plain[..., 0]
    np.testing.assert_array_equal(lit[..., 0], lit[..., 2])  # one field for the three channels
    assert lit.min() >= 0.0 and lit.max() <= 1.0
    assert np.all(np.abs(gain - 1) <= 0.5 * 4.0)  # amplitude <= 0.5 times a few standard normals
    assert np.all(gain.std(axis=(1, 2)) > 1e-3)  # every view is relit...
    # ...smoothly: neighbouring pixels differ far less than the field varies across the image.
    step = np.abs(np.diff(gain, axis=1)).max(axis=(1, 2))
    assert np.all(step < 0.2 * (gain.max(axis=(1, 2)) - gain.min(axis=(1, 2))))
    for i in range(len(lit)):
        for j in range(i):
            assert np.abs(lit[i] - lit[j]).max() > 1e-3
    with pytest.raises(augment.AugmentConfigError, match='augment.illumination must be'):
        AugmentConfig(output_size=48, illumination=1.5)
