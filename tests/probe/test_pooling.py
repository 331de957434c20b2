"""Pooling a feature map into one vector per image: plain loops as the reference."""

import numpy as np
import pytest

from fewshot_jax.encoder import Encoder
from fewshot_jax.models.weights import model_config
from fewshot_jax.probe import features, pooling

TINY = model_config(18, 4, 'v1.5')


def _loop_pool(feature_map, power):
    """Per image and channel: (mean over locations of value ** power) ** (1 / power)."""
    n, h, w, c = feature_map.shape
    out = np.zeros((n, c))
    for i in range(n):
        for ch in range(c):
            total = 0.0
            for y in range(h):
                for x in range(w):
                    total += max(float(feature_map[i, y, x, ch]), 1e-6) ** power
            out[i, ch] = (total / (h * w)) ** (1.0 / power)
    return out


def test_average_and_gem_match_plain_loops():
    rng = np.random.default_rng(0)
    feature_map = rng.exponential(size=(3, 4, 5, 6)).astype(np.float32)
    np.testing.assert_allclose(
        pooling.pool_map(feature_map, 'average'), feature_map.mean(axis=(1, 2)), rtol=1e-6
    )
    gem = pooling.pool_map(feature_map, 'gem')
    np.testing.assert_allclose(gem, _loop_pool(feature_map, pooling.GEM_POWER), rtol=1e-5)
    # Between the average and the maximum, strictly where a channel's values differ.
    assert np.all(gem > feature_map.mean(axis=(1, 2)))
    assert np.all(gem < feature_map.max(axis=(1, 2)))


def test_gem_of_a_constant_map_is_the_constant_and_a_single_hot_spot_outweighs_the_average():
    constant = np.full((1, 3, 3, 2), 0.7, np.float32)
    np.testing.assert_allclose(pooling.pool_map(constant, 'gem'), 0.7, rtol=1e-6)
    spot = np.zeros((1, 4, 4, 1), np.float32)
    spot[0, 1, 2, 0] = 16.0  # one object in an empty field
    assert pooling.pool_map(spot, 'average')[0, 0] == pytest.approx(1.0)
    assert pooling.pool_map(spot, 'gem')[0, 0] == pytest.approx(16.0 / 16 ** (1 / 3), rel=1e-5)


def test_an_unknown_pooling_or_a_vector_is_refused_in_one_line():
    with pytest.raises(pooling.PoolingError, match=r"probe.pooling='max': expected one of"):
        pooling.pool_map(np.zeros((1, 2, 2, 1), np.float32), 'max')
    with pytest.raises(pooling.PoolingError, match=r'expected a feature map'):
        pooling.pool_map(np.zeros((2, 3), np.float32), 'gem')
    with pytest.raises(pooling.PoolingError, match=r"probe.pooling='Gem'"):
        features.make_extractor('random-init', model=TINY, pooling='Gem')


def test_gem_features_pool_the_last_stage_map_and_average_stays_the_networks_pool():
    rng = np.random.default_rng(1)
    images = (rng.random((5, 32, 32)) * 255).astype(np.uint8)
    plain = features.make_extractor('random-init', model=TINY, seed=2)
    averaged = features.make_extractor('random-init', model=TINY, seed=2, pooling='average')
    gem = features.make_extractor('random-init', model=TINY, seed=2, pooling='gem')
    assert averaged.fingerprint == plain.fingerprint  # old caches stay valid
    assert gem.fingerprint != plain.fingerprint
    maps = features._random_encoder(Encoder, dict(TINY), 2, 'same weights').encode(
        images, layer=('stage3', 'stage4')
    )
    stage3, stage4 = maps['stage3'], maps['stage4']
    np.testing.assert_allclose(plain.extract(images), stage4.mean(axis=(1, 2)), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(
        gem.extract(images), _loop_pool(stage4, pooling.GEM_POWER), rtol=1e-4, atol=1e-6
    )
    # Several layers: each map pooled the same way, 'pooled' standing for the last stage.
    joined = features.make_extractor('random-init', model=TINY, seed=2, pooling='gem', layer='stage3+pooled')
    want = np.concatenate(
        [_loop_pool(stage3, pooling.GEM_POWER), _loop_pool(stage4, pooling.GEM_POWER)], axis=1
    )
    np.testing.assert_allclose(joined.extract(images), want, rtol=1e-4, atol=1e-6)
    # Baselines ignore the pooling.
    texture = features.make_extractor('texture', pooling='gem')
    assert texture.fingerprint == features.make_extractor('texture').fingerprint
