"""Tests for fewshot_jax.probe.baselines: raw-pixel and texture-feature references."""

import numpy as np
import pytest

from fewshot_jax.probe import baselines
from fewshot_jax.probe.baselines import BaselineInputError


def _images(n=3, size=64, seed=0):
    return np.random.default_rng(seed).random((n, size, size)).astype(np.float32)


def test_raw_pixels_is_block_mean_flattened():
    x = _images(2, 64)
    feats = baselines.raw_pixels(x, side=32)
    assert feats.shape == (2, 32 * 32) and feats.dtype == np.float32
    # Reference: a plain loop over 2 x 2 blocks.
    for i in range(2):
        for r in range(32):
            for c in range(32):
                block = x[i, 2 * r : 2 * r + 2, 2 * c : 2 * c + 2]
                assert feats[i, r * 32 + c] == pytest.approx(block.mean(), abs=1e-6)


def test_raw_pixels_identity_at_native_side_and_channel_axis():
    x = _images(2, 32)
    np.testing.assert_allclose(baselines.raw_pixels(x), x.reshape(2, -1), atol=1e-7)
    np.testing.assert_allclose(baselines.raw_pixels(x[..., None]), x.reshape(2, -1), atol=1e-7)
    ints = (x * 255).astype(np.uint8)
    assert baselines.raw_pixels(ints).dtype == np.float32


@pytest.mark.parametrize(
    'bad, match',
    [
        (np.zeros((64, 64), np.float32), r'\(n, H, W\)'),
        (np.zeros((2, 64, 64, 3), np.float32), r'\(n, H, W\)'),
        (np.zeros((0, 64, 64), np.float32), 'empty'),
        (np.zeros((2, 48, 64), np.float32), 'not a multiple of side=32'),
        (np.array([[['a']]]), 'numeric'),
    ],
)
def test_raw_pixels_rejects_bad_shapes(bad, match):
    with pytest.raises(BaselineInputError, match=match):
        baselines.raw_pixels(bad)


def test_raw_pixels_rejects_nan_naming_the_image():
    x = _images(3, 64)
    x[2, 5, 5] = np.nan
    with pytest.raises(BaselineInputError, match=r'images\[2\].*NaN'):
        baselines.raw_pixels(x)


@pytest.mark.parametrize('side', [0, -4, 2.5, True])
def test_raw_pixels_rejects_bad_side(side):
    with pytest.raises(BaselineInputError, match='side must be a positive integer'):
        baselines.raw_pixels(_images(1, 64), side=side)


def test_texture_features_shape_and_finiteness():
    feats = baselines.texture_features(_images(4, 64))
    assert feats.shape == (4, baselines.TEXTURE_DIM) and feats.dtype == np.float32
    assert np.isfinite(feats).all()
    # Non-square images and a trailing channel axis are accepted.
    assert baselines.texture_features(_images(2, 48)[:, :, :32, None]).shape == (2, 32)


def test_texture_features_ignore_brightness_contrast_and_translation():
    x = _images(1, 64)
    feats = baselines.texture_features(x)
    # Power spectrum: blind to affine intensity changes and circular shifts.
    spectrum = feats[:, :16]
    np.testing.assert_allclose(baselines.texture_features(0.5 * x + 0.2)[:, :16], spectrum, atol=1e-3)
    shifted = np.roll(x, (7, 13), axis=(1, 2))
    np.testing.assert_allclose(baselines.texture_features(shifted)[:, :16], spectrum, atol=1e-3)


def test_texture_power_spectrum_matches_a_plain_loop():
    x = _images(1, 32, seed=4)[0]
    z = (x - x.mean()) / (x.std() + 1e-6)
    power = np.abs(np.fft.fft2(z)) ** 2
    expected = np.zeros(16)
    for u in range(32):
        for v in range(32):
            fu = u / 32 if u < 16 else (u - 32) / 32
            fv = v / 32 if v < 16 else (v - 32) / 32
            f = np.hypot(fu, fv)
            if f < 0.5:
                expected[int(f * 32)] += power[u, v]
    np.testing.assert_allclose(
        baselines.texture_features(x[None])[0, :16], np.log(expected + 1e-6), rtol=1e-4
    )


def test_texture_features_separate_orientations():
    # Vertical stripes and horizontal stripes: identical spectra up to a transpose,
    # different orientation histograms.
    stripes = np.tile((np.arange(64) % 8 < 4).astype(np.float32), (64, 1))
    feats = baselines.texture_features(np.stack([stripes, stripes.T]))
    np.testing.assert_allclose(feats[0, :16], feats[1, :16], atol=1e-3)
    assert np.abs(feats[0, 16:24] - feats[1, 16:24]).max() > 0.1


def test_texture_features_reject_small_and_nan_images():
    with pytest.raises(BaselineInputError, match='at least 16x16'):
        baselines.texture_features(_images(2, 8))
    x = _images(2, 32)
    x[0, 0, 0] = np.inf
    with pytest.raises(BaselineInputError, match=r'images\[0\]'):
        baselines.texture_features(x)


def _loop_quantile(values, q):
    """numpy's default ('linear') quantile, written out: interpolate between order statistics."""
    ordered = sorted(values)
    position = q * (len(ordered) - 1)
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (position - low) * (ordered[high] - ordered[low])


def test_intensity_features_match_a_plain_loop():
    x = _images(2, 16, seed=3) ** 2  # skewed grey levels
    feats = baselines.intensity_features(x)
    assert feats.shape == (2, baselines.INTENSITY_DIM) and feats.dtype == np.float32
    for i in range(2):
        pixels = [float(v) for v in x[i].ravel()]
        n = len(pixels)
        mean = sum(pixels) / n
        sd = (sum((p - mean) ** 2 for p in pixels) / n) ** 0.5
        skew = sum(((p - mean) / sd) ** 3 for p in pixels) / n
        kurt = sum(((p - mean) / sd) ** 4 for p in pixels) / n - 3
        want = [mean, sd, skew, kurt] + [_loop_quantile(pixels, q) for q in baselines.INTENSITY_QUANTILES]
        np.testing.assert_allclose(feats[i], want, rtol=1e-5, atol=1e-6)


def test_intensity_features_ignore_arrangement_and_handle_constant_images():
    x = _images(1, 32, seed=4)
    shuffled = np.random.default_rng(0).permutation(x.ravel()).reshape(x.shape)
    np.testing.assert_allclose(
        baselines.intensity_features(x), baselines.intensity_features(shuffled), atol=1e-6
    )
    flat = baselines.intensity_features(np.full((1, 8, 8, 1), 0.25, np.float32))
    assert np.isfinite(flat).all() and flat[0, 1:4].tolist() == [0.0, 0.0, 0.0]
    with pytest.raises(BaselineInputError, match=r'images\[0\] contains NaN'):
        baselines.intensity_features(np.full((1, 8, 8), np.nan, np.float32))
