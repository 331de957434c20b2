"""The BatchNorm-statistics-only control: the init's weights, statistics of the probe's images."""

import jax
import numpy as np
import pytest

from fewshot_jax.encoder import Encoder, load_encoder
from fewshot_jax.models import make_encoder
from fewshot_jax.models.weights import model_config
from fewshot_jax.probe import bn_stats, features
from fewshot_jax.train_lib.checkpoint import INIT_ENCODER_DIR, save_encoder

TINY = model_config(18, 4, 'v1.5')


@pytest.fixture(scope='module')
def images():
    rng = np.random.default_rng(1)
    # Bright, low-contrast micrograph-like images: far from what mean-0 / var-1 statistics suit.
    return (150 + 40 * rng.random((11, 32, 32))).astype(np.uint8)


@pytest.fixture(scope='module')
def init_workdir(tmp_path_factory):
    """A pretraining workdir holding only its step-0 encoder (``checkpoint:W@0``)."""
    workdir = tmp_path_factory.mktemp('pretrain_run')
    variables = make_encoder(TINY).init(jax.random.key(2), np.zeros((1, 32, 32, 3), np.float32), train=False)
    save_encoder(workdir, jax.tree.map(np.asarray, variables), TINY, step=0, folder=INIT_ENCODER_DIR)
    return workdir


def _numpy_first_bn_stats(images, kernel, mean, std):
    """Mean and biased variance per channel of conv1's output (7x7, stride 2, pad 3, no bias)."""
    x = np.repeat(images.astype(np.float64)[..., None] / 255.0, 3, axis=-1)
    x = (x - np.asarray(mean)) / np.asarray(std)
    x = np.pad(x, ((0, 0), (3, 3), (3, 3), (0, 0)))
    out_side = images.shape[1] // 2
    out = np.zeros((len(images), out_side, out_side, kernel.shape[-1]))
    for r in range(out_side):
        for c in range(out_side):
            patch = x[:, 2 * r : 2 * r + 7, 2 * c : 2 * c + 7, :]
            out[:, r, c, :] = np.einsum('nhwc,hwco->no', patch, kernel.astype(np.float64))
    return out.mean(axis=(0, 1, 2)), out.var(axis=(0, 1, 2))


def test_params_are_the_init_and_first_statistics_match_numpy(init_workdir, images):
    init = load_encoder(f'checkpoint:{init_workdir}@0')
    variables = bn_stats.reestimate_batch_stats(init.module, init.variables, images, batch_size=4)
    for got, want in zip(
        jax.tree.leaves(variables['params']), jax.tree.leaves(init.variables['params']), strict=True
    ):
        np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
    old, new = init.variables['batch_stats'], variables['batch_stats']
    assert jax.tree.structure(old) == jax.tree.structure(new)
    for got, was in zip(jax.tree.leaves(new), jax.tree.leaves(old), strict=True):
        assert not np.allclose(np.asarray(got), np.asarray(was))
    kernel = np.asarray(init.variables['params']['conv1']['kernel'])
    mean, var = _numpy_first_bn_stats(images, kernel, TINY['input_mean'], TINY['input_std'])
    np.testing.assert_allclose(new['bn1']['mean'], mean, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(new['bn1']['var'], var, rtol=1e-4, atol=1e-6)


def test_one_batch_statistics_reproduce_the_train_mode_forward(init_workdir, images):
    """With every image in one batch, inference with the new statistics is the train-mode pass."""
    init = load_encoder(f'checkpoint:{init_workdir}@0')
    variables = bn_stats.reestimate_batch_stats(init.module, init.variables, images, batch_size=64)
    x = np.repeat(images[..., None].astype(np.float32) / 255.0, 3, axis=-1)
    (train_out, _), _ = init.module.apply(init.variables, x, train=True, mutable=['batch_stats'])
    eval_out, _ = init.module.apply(variables, x, train=False)
    np.testing.assert_allclose(np.asarray(eval_out), np.asarray(train_out), rtol=2e-3, atol=2e-4)


def test_bn_stats_entry_in_the_probe(init_workdir, images, tmp_path):
    spec = f'bn-stats:checkpoint:{init_workdir}@0'
    extractor = features.make_extractor(spec, name='BN stats only', batch_size=4)
    init = load_encoder(f'checkpoint:{init_workdir}@0')
    variables = bn_stats.reestimate_batch_stats(init.module, init.variables, images, batch_size=4)
    want = Encoder(variables, init.config).encode(images, batch_size=4)
    got = features.compute_features(extractor, images, np.zeros(len(images)), ['a'], cache_dir=tmp_path)
    np.testing.assert_allclose(got.features, want, rtol=1e-5, atol=1e-6)
    plain = features.make_extractor(f'checkpoint:{init_workdir}@0', batch_size=4)
    assert not np.allclose(plain.extract(images), got.features, atol=1e-3)
    assert extractor.fingerprint != plain.fingerprint
    assert extractor.fingerprint != features.make_extractor(spec, batch_size=8).fingerprint
    again = features.compute_features(extractor, images, np.zeros(len(images)), ['a'], cache_dir=tmp_path)
    assert again.cached


def test_bad_entries_are_named():
    with pytest.raises(bn_stats.BatchStatsError, match='bn-stats:<weight spec>'):
        bn_stats.base_spec('bn-stats: ')
    assert bn_stats.base_spec('checkpoint:runs/x@0') is None
    with pytest.raises(bn_stats.BatchStatsError, match='batch_size=0'):
        bn_stats.reestimate_batch_stats(
            None, {'params': {}, 'batch_stats': {}}, np.zeros((2, 8, 8)), batch_size=0
        )
    with pytest.raises(bn_stats.BatchStatsError, match='dtype int64'):
        bn_stats.reestimate_batch_stats(
            None, {'params': {}, 'batch_stats': {}}, np.zeros((2, 8, 8), np.int64)
        )
