"""Frozen features: one forward path (sharded = single device), the cache and its keys, checks."""

import jax
import numpy as np
import pytest

from fewshot_jax.encoder import Encoder
from fewshot_jax.models import make_encoder
from fewshot_jax.models.weights import WeightsError, model_config
from fewshot_jax.probe import baselines, features
from fewshot_jax.train_lib.checkpoint import save_encoder

TINY = model_config(18, 4, 'v1.5')


@pytest.fixture(scope='module')
def images():
    rng = np.random.default_rng(0)
    return (rng.random((13, 32, 32)) * 255).astype(np.uint8)


@pytest.fixture(scope='module')
def trained_workdir(tmp_path_factory):
    """A workdir holding an exported tiny encoder (random weights, seed 5)."""
    workdir = tmp_path_factory.mktemp('encoder_run')
    variables = make_encoder(TINY).init(jax.random.key(5), np.zeros((1, 32, 32, 3), np.float32), train=False)
    save_encoder(workdir, jax.tree.map(np.asarray, variables), TINY, step=7)
    return workdir


def test_batches_split_over_eight_devices_give_single_device_features(images):
    assert len(jax.local_devices()) == 8  # conftest
    variables = make_encoder(TINY).init(jax.random.key(1), np.zeros((1, 32, 32, 3), np.float32), train=False)
    encoder = Encoder(variables, TINY)
    many = encoder.encode(images, batch_size=6, num_devices=None)  # 8 per batch, last padded
    one = encoder.encode(images, batch_size=6)
    np.testing.assert_allclose(many, one, rtol=1e-5, atol=1e-6)
    # The extractor uses that same forward path.
    extractor = features.make_extractor('random-init', model=TINY, seed=1, batch_size=6)
    # Same forward path; float32 convolutions of another compiled shape may sum in another
    # order (the Eigen-convolution default), so equal within float32 noise.
    np.testing.assert_allclose(extractor.extract(images), many, rtol=1e-5, atol=1e-5)


def test_cache_is_reused_and_keyed_by_weights_data_and_layer(tmp_path, images, trained_workdir):
    labels = np.arange(13) % 3
    names = ('a', 'b', 'c')
    spec = f'checkpoint:{trained_workdir}'
    extractor = features.make_extractor(spec, name='tiny BT')
    first = features.compute_features(extractor, images, labels, names, cache_dir=tmp_path)
    assert not first.cached and first.path.is_file() and first.features.shape == (13, 32)
    again = features.compute_features(
        features.make_extractor(spec, name='tiny BT'), images, labels, names, cache_dir=tmp_path
    )
    assert again.cached
    np.testing.assert_array_equal(again.features, first.features)
    # Other weights (random-init of the same architecture), other images, another layer: new keys.
    other = features.make_extractor('random-init', name='tiny BT', model=TINY, seed=5 + 1)
    assert not features.compute_features(other, images, labels, names, cache_dir=tmp_path).cached
    changed = images.copy()
    changed[0, 0, 0] ^= 1
    assert not features.compute_features(extractor, changed, labels, names, cache_dir=tmp_path).cached
    stage3 = features.make_extractor(spec, name='tiny BT', layer='stage3')
    maps = features.compute_features(stage3, images, labels, names, cache_dir=tmp_path, layer='stage3')
    assert not maps.cached and maps.features.shape == (13, 16)  # stage3 map, average pooled
    assert len(list(tmp_path.glob('*.npz'))) == 4


def test_a_damaged_cache_file_is_recomputed(tmp_path, images):
    labels = np.arange(13) % 2
    extractor = features.make_extractor('texture')
    first = features.compute_features(extractor, images, labels, ('x', 'y'), cache_dir=tmp_path)
    first.path.write_bytes(b'not an npz')
    again = features.compute_features(extractor, images, labels, ('x', 'y'), cache_dir=tmp_path)
    assert not again.cached
    np.testing.assert_array_equal(again.features, first.features)


def test_baselines_and_random_init(images):
    raw = features.make_extractor('raw-pixels', name='raw pixels')
    np.testing.assert_array_equal(
        raw.extract(images), baselines.raw_pixels(images.astype(np.float32) / 255.0)
    )
    texture = features.make_extractor('texture').extract(images)
    assert texture.shape == (13, baselines.TEXTURE_DIM)
    intensity = features.make_extractor('intensity', name='intensity')
    np.testing.assert_array_equal(
        intensity.extract(images), baselines.intensity_features(images.astype(np.float32) / 255.0)
    )
    assert intensity.fingerprint != features.make_extractor('texture').fingerprint
    same = features.make_extractor('random-init', model=TINY, seed=3)
    assert same.fingerprint == features.make_extractor('random-init', model=TINY, seed=3).fingerprint
    assert same.fingerprint != features.make_extractor('random-init', model=TINY, seed=4).fingerprint
    assert same.model['depth'] == 18 and same.model['width'] == 4


def test_parse_entry():
    assert features.parse_entry('BT TEM=checkpoint:runs/bt') == ('BT TEM', 'checkpoint:runs/bt')
    assert features.parse_entry('random-init') == ('random-init', 'random-init')
    with pytest.raises(features.FeatureError, match='display name'):
        features.parse_entry('=keras:/x.h5')


def test_bad_encoders_are_named(tmp_path):
    with pytest.raises(WeightsError, match='does not exist'):
        features.make_extractor(f'checkpoint:{tmp_path}/missing_run', name='mine')
    not_an_encoder = tmp_path / 'notes.h5'
    not_an_encoder.write_text('hello')
    with pytest.raises(WeightsError):
        features.make_extractor(f'keras:{not_an_encoder}')
    with pytest.raises(features.FeatureError, match="'random-init' needs a model"):
        features.make_extractor('random-init', name='rnd')


def test_feature_sets_must_agree_and_be_finite():
    good = features.FeatureSet('A', 'a', np.ones((4, 3), np.float32), 'data1', ('x', 'y'))
    other_data = features.FeatureSet('B', 'b', np.ones((4, 3), np.float32), 'data2', ('x', 'y'))
    other_classes = features.FeatureSet('C', 'c', np.ones((4, 3), np.float32), 'data1', ('x', 'z'))
    bad = np.ones((4, 3), np.float32)
    bad[2, 1] = np.inf
    not_finite = features.FeatureSet('D', 'd', bad, 'data1', ('x', 'y'))
    features.check_feature_sets([good])
    with pytest.raises(features.FeatureError, match="encoder 'B'.*other images"):
        features.check_feature_sets([good, other_data])
    with pytest.raises(features.FeatureError, match="encoder 'C': class names"):
        features.check_feature_sets([good, other_classes])
    with pytest.raises(features.FeatureError, match=r"encoder 'D'.*image 2 \(img2.png\)"):
        features.check_feature_sets([good, not_finite], [f'img{i}.png' for i in range(4)])
    with pytest.raises(features.FeatureError, match='used twice'):
        features.check_feature_sets([good, good])


def test_several_layers_are_pooled_and_concatenated_in_order(images):
    extractor = features.make_extractor('random-init', model=TINY, seed=3, layer='stage2+pooled')
    got = extractor.extract(images)
    encoder = Encoder(
        make_encoder(TINY).init(jax.random.key(3), np.zeros((1, 32, 32, 3), np.float32), train=False), TINY
    )
    maps = encoder.encode(images, layer=('stage2', 'pooled'))
    want = []
    for i in range(len(images)):
        stage2 = maps['stage2'][i]
        # A plain loop over positions: the mean of the stage2 map, then the pooled vector.
        total = np.zeros(stage2.shape[-1], np.float64)
        for y in range(stage2.shape[0]):
            for x in range(stage2.shape[1]):
                total += stage2[y, x]
        want.append(np.concatenate([total / (stage2.shape[0] * stage2.shape[1]), maps['pooled'][i]]))
    np.testing.assert_allclose(got, np.asarray(want), rtol=1e-5, atol=1e-6)
    assert extractor.fingerprint != features.make_extractor('random-init', model=TINY, seed=3).fingerprint


@pytest.mark.parametrize('layer', ['', 'stage9', 'pooled+pooled', 'stage2+'])
def test_bad_layer_settings_are_named(layer):
    with pytest.raises(features.FeatureError, match='probe.layer='):
        features.layer_names(layer)


def _turned(image: np.ndarray, turns: int) -> np.ndarray:
    """``image`` (H, W) turned by ``turns`` quarter turns anticlockwise, pixel by pixel."""
    out = image
    for _ in range(turns):
        side_h, side_w = out.shape
        turned = np.empty((side_w, side_h), out.dtype)
        for y in range(side_w):
            for x in range(side_h):
                turned[y, x] = out[x, side_w - 1 - y]
        out = turned
    return out


def test_orientation_averaging_is_the_mean_over_the_eight_orientations(images):
    extractor = features.make_extractor('random-init', model=TINY, seed=3, average_orientations=True)
    plain = features.make_extractor('random-init', model=TINY, seed=3)
    got = extractor.extract(images)
    # The reference: each of the eight orientations built pixel by pixel, encoded plainly.
    views = []
    for turns in range(4):
        turned = np.stack([_turned(image, turns) for image in images])
        views += [turned, turned[:, :, ::-1]]
    want = np.mean([plain.extract(np.ascontiguousarray(view)) for view in views], axis=0)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    # Exactly invariant: a turned or mirrored image set has the same averaged features.
    turned_once = np.stack([_turned(image, 1) for image in images])
    np.testing.assert_allclose(extractor.extract(turned_once), got, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(extractor.extract(images[:, ::-1].copy()), got, rtol=1e-5, atol=1e-6)
    assert not np.allclose(plain.extract(turned_once), plain.extract(images), atol=1e-4)
    # A separate cache key; baselines ignore the switch.
    assert extractor.fingerprint != plain.fingerprint
    texture = features.make_extractor('texture', average_orientations=True)
    assert texture.fingerprint == features.make_extractor('texture').fingerprint
