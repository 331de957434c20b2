"""The lower-dose augmentation: noise estimated from the image itself, raised as a lower dose
would raise it, drawn independently per view."""

import dataclasses

import jax
import numpy as np
import pytest

from fewshot_jax.pretrain import augment
from fewshot_jax.pretrain.augment.views import AugmentConfig
from tests.pretrain.test_augment import NO_JITTER, batch_fn, random_uint8


def _noisy_field(sigma, shape=(4, 64, 64), seed=0):
    """A smooth specimen (a slow ramp and a disc) plus white Gaussian noise of std ``sigma``."""
    rng = np.random.default_rng(seed)
    n, h, w = shape
    yy, xx = np.mgrid[0:h, 0:w]
    clean = 0.45 + 0.1 * xx / w + 0.1 * ((yy - h / 2) ** 2 + (xx - w / 3) ** 2 < (h / 5) ** 2)
    return np.clip(clean + sigma * rng.standard_normal((n, h, w)), 0, 1).astype(np.float32), clean


def _loop_noise_level(gray):
    """1.4826 x median |d - median d| / sqrt 2 over horizontal neighbour differences d."""
    diffs = []
    for row in gray:
        for x in range(len(row) - 1):
            diffs.append(float(row[x + 1]) - float(row[x]))
    centre = np.median(diffs)
    return 1.4826 * np.median([abs(d - centre) for d in diffs]) / np.sqrt(2)


def test_noise_level_matches_a_loop_and_reads_the_white_noise_not_the_specimen():
    images, _ = _noisy_field(0.03)
    for image in images:
        got = float(augment.noise_level(np.repeat(image[..., None], 3, axis=-1)))
        assert got == pytest.approx(_loop_noise_level(image), rel=1e-5)
        assert got == pytest.approx(0.03, rel=0.08)


@pytest.mark.parametrize('fraction', [0.25, 0.5])
def test_a_fixed_dose_fraction_raises_the_noise_by_one_over_its_square_root(fraction):
    sigma = 0.02
    images, clean = _noisy_field(sigma, shape=(6, 64, 64), seed=1)
    cfg = AugmentConfig(output_size=64, crop='none', dose=(fraction, fraction), **NO_JITTER)
    views = np.asarray(batch_fn(jax.random.key(0), images[..., None], cfg), np.float64)
    np.testing.assert_array_equal(views[..., 0], views[..., 2])  # one field for all channels
    residual = views[..., 0] - clean
    want = sigma / np.sqrt(fraction)
    assert residual.std(axis=(1, 2)) == pytest.approx(np.full(6, want), rel=0.1)
    assert np.abs(residual.mean(axis=(1, 2))).max() < 0.01


def test_each_view_draws_its_own_dose_and_noise():
    images, _ = _noisy_field(0.02, shape=(3, 48, 48), seed=2)
    cfg = AugmentConfig(output_size=48, crop='none', dose=(0.3, 0.9), **NO_JITTER)
    first, second = augment.two_views(jax.random.key(5), images[..., None], cfg)
    added_a = np.asarray(first)[..., 0] - images
    added_b = np.asarray(second)[..., 0] - images
    for a, b in zip(added_a, added_b, strict=True):
        assert abs(np.corrcoef(a.ravel(), b.ravel())[0, 1]) < 0.1
    stds = added_a.std(axis=(1, 2))
    assert stds.max() - stds.min() > 1e-3  # the fraction is drawn per example


def test_dose_off_leaves_every_view_bit_identical():
    images = random_uint8((4, 40, 40, 1), seed=12)
    cfg = AugmentConfig(output_size=32, crop='area', brightness=0.2, rotate90=True)
    np.testing.assert_array_equal(
        np.asarray(batch_fn(jax.random.key(4), images, cfg)),
        np.asarray(batch_fn(jax.random.key(4), images, dataclasses.replace(cfg, dose=(1.0, 1.0)))),
    )
    # On, it changes the pixels but no geometric draw: the same crop of a noisier image
    # (a smooth specimen with noise of std 0.01, so a moved crop would differ by far more).
    field, _ = _noisy_field(0.01, shape=(4, 40, 40), seed=3)
    field = field[..., None]
    lowered = batch_fn(jax.random.key(4), field, dataclasses.replace(cfg, dose=(0.5, 0.5)))
    difference = np.abs(np.asarray(lowered) - np.asarray(batch_fn(jax.random.key(4), field, cfg)))
    assert difference.mean() < 0.02 and difference.max() > 1e-3


@pytest.mark.parametrize('value', [(0.0, 1.0), (0.5, 1.2), (0.8, 0.5), 'half'])
def test_a_bad_dose_range_is_refused_naming_the_field(value):
    with pytest.raises(augment.AugmentConfigError, match='augment.dose') as error:
        AugmentConfig(output_size=32, dose=value)
    assert repr(value) in str(error.value)
