"""load_encoder / Encoder: workdirs (final encoder, steps, fallbacks), encode() inputs and outputs."""

import shutil
import subprocess
import sys

import jax
import numpy as np
import pytest

from fewshot_jax import Encoder, load_encoder
from fewshot_jax.encoder import EncoderInputError
from fewshot_jax.models import make_encoder
from fewshot_jax.models.weights import WeightsError
from tests.conftest import restore_saved_encoder, tiny_ssl_config


def tiny_trained_workdir(tmp_path_factory):
    """A finished tiny pretraining run (6 steps, checkpoints at 2, 4, 6), made once per session.

    It lives in the session's base temp folder so that test_notebook.py reuses it.
    """
    from fewshot_jax.pretrain.task import train_ssl

    workdir = tmp_path_factory.getbasetemp() / 'tiny_pretrained_run'
    if not (workdir / 'encoder' / 'encoder.json').exists():
        train_ssl(tiny_ssl_config(), workdir)
    return workdir


@pytest.fixture(scope='module')
def workdir(tmp_path_factory):
    return tiny_trained_workdir(tmp_path_factory)


@pytest.fixture(scope='module')
def images():
    return np.random.default_rng(0).random((7, 40, 40), dtype=np.float32)


def test_final_encoder_matches_the_saved_variables(workdir, images):
    encoder = load_encoder(workdir)
    assert isinstance(encoder, Encoder)
    assert encoder.step == 6 and encoder.name == workdir.name
    assert encoder.config['depth'] == 18 and encoder.config['width'] == 4
    assert encoder.feature_dim == 32

    # The project's own restore path and model builder give the same weights and features.
    config = tiny_ssl_config()
    module = make_encoder(config.model)
    target = jax.tree.map(np.zeros_like, jax.tree.map(np.asarray, encoder.variables))
    saved = restore_saved_encoder(workdir, target)
    for a, b in zip(jax.tree.leaves(saved), jax.tree.leaves(encoder.variables), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    rgb = np.repeat(images[..., None], 3, axis=-1)
    expected, _ = module.apply(saved, rgb, train=False)
    # float32 features span 0..~5e3 here; differences in convolution algorithm or summation
    # order are relative to that scale, not to each (possibly small) entry.
    scale = float(np.abs(expected).max())
    np.testing.assert_allclose(encoder.encode(images), expected, rtol=1e-5, atol=1e-6 * scale)


def test_steps_and_checkpoint_fallbacks(workdir, tmp_path):
    final = load_encoder(workdir)
    early = load_encoder(workdir, step=2)
    assert early.step == 2 and early.name == f'{workdir.name}@2'
    assert not np.array_equal(
        early.variables['params']['conv1']['kernel'], final.variables['params']['conv1']['kernel']
    )

    # Without encoder/ (a killed run), the newest checkpoint is read; step 6 is the final state.
    killed = tmp_path / 'killed'
    shutil.copytree(workdir, killed, ignore=shutil.ignore_patterns('encoder', '.lock'))
    latest = load_encoder(f'checkpoint:{killed}')
    assert latest.step == 6
    for a, b in zip(jax.tree.leaves(latest.variables), jax.tree.leaves(final.variables), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    at_4 = load_encoder(f'checkpoint:{killed}@4')
    np.testing.assert_array_equal(
        at_4.variables['batch_stats']['bn1']['mean'],
        load_encoder(workdir, step=4).variables['batch_stats']['bn1']['mean'],
    )

    # A damaged newest step falls back to the previous one.
    for item in (killed / 'checkpoints' / '6' / 'state').iterdir():
        if item.is_dir():
            shutil.rmtree(item)
        else:
            item.unlink()
    assert load_encoder(killed).step == 4
    with pytest.raises(WeightsError, match='checkpoint step 6 is unreadable'):
        load_encoder(killed, step=6)


def test_step_zero_is_the_random_init_the_run_started_from(workdir):
    from fewshot_jax.pretrain.task import build_ssl
    from fewshot_jax.train_lib import sharding

    # The builder re-creates the initial state from the config's seed; its encoder is what
    # pretraining started from, and what 'checkpoint:WORKDIR@0' must give back.
    config = tiny_ssl_config()
    start = build_ssl(config, sharding.make_mesh(None), 6).state
    init = load_encoder(f'checkpoint:{workdir}@0')
    assert init.step == 0 and init.name == f'{workdir.name}@0'
    expected = {'params': start.params['encoder'], 'batch_stats': start.batch_stats['encoder']}
    for a, b in zip(jax.tree.leaves(expected), jax.tree.leaves(init.variables), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    final = load_encoder(workdir)
    assert not np.array_equal(
        init.variables['params']['conv1']['kernel'], final.variables['params']['conv1']['kernel']
    )


def test_workdirs_without_weights_or_step_are_clear_errors(workdir, tmp_path):
    with pytest.raises(WeightsError, match='neither encoder/encoder.json .* nor checkpoints'):
        load_encoder(f'checkpoint:{tmp_path}')
    with pytest.raises(WeightsError, match=r'no step 5; it has checkpoint steps \[2, 4, 6\]'):
        load_encoder(workdir, step=5)


def test_encode_is_batch_independent_and_accepts_common_image_forms(workdir, images):
    encoder = load_encoder(workdir)
    reference = encoder.encode(images, batch_size=7)
    assert reference.shape == (7, 32) and reference.dtype == np.float32
    close = 1e-6 * float(np.abs(reference).max())  # float32 noise at the features' scale
    np.testing.assert_allclose(encoder.encode(images, batch_size=3), reference, rtol=1e-5, atol=close)
    np.testing.assert_allclose(encoder.encode(images[..., None]), reference, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(
        encoder.encode(np.repeat(images[..., None], 3, -1)), reference, rtol=1e-6, atol=1e-6
    )
    as_uint8 = np.round(images * 255).astype(np.uint8)
    np.testing.assert_allclose(
        encoder.encode(as_uint8), encoder.encode(as_uint8 / 255.0), rtol=1e-5, atol=close
    )
    as_uint16 = np.round(images * 65535).astype(np.uint16)
    np.testing.assert_allclose(
        encoder.encode(as_uint16), encoder.encode(as_uint16 / 65535.0), rtol=1e-5, atol=close
    )
    assert encoder.encode(images[:2, :33, :57]).shape == (2, 32)


def test_new_variables_replace_the_ones_used_before(workdir, images):
    # The online probe swaps in the current weights before every evaluation: encoding must
    # use them, on one device and on several, even after an earlier encode placed copies.
    encoder = load_encoder(workdir)
    before = {n: encoder.encode(images, num_devices=n) for n in (1, 2)}
    doubled = jax.tree.map(lambda a: np.asarray(a) * 2, encoder.variables['params'])
    encoder.variables = {'params': doubled, 'batch_stats': encoder.variables['batch_stats']}
    fresh = Encoder({'params': doubled, 'batch_stats': encoder.variables['batch_stats']}, encoder.config)
    for n in (1, 2):
        after = encoder.encode(images, num_devices=n)
        assert not np.allclose(after, before[n])
        np.testing.assert_allclose(after, fresh.encode(images, num_devices=n), rtol=1e-6, atol=1e-6)


def test_encode_feature_maps(workdir, images):
    maps = load_encoder(workdir).encode(
        images, layer=('stem', 'stage1', 'stage2', 'stage3', 'stage4', 'pooled'), batch_size=4
    )
    shapes = {name: value.shape for name, value in maps.items()}
    assert shapes == {
        'stem': (7, 20, 20, 4),
        'stage1': (7, 10, 10, 4),
        'stage2': (7, 5, 5, 8),
        'stage3': (7, 3, 3, 16),
        'stage4': (7, 2, 2, 32),
        'pooled': (7, 32),
    }
    np.testing.assert_allclose(maps['pooled'], maps['stage4'].mean(axis=(1, 2)), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    'bad, message',
    [
        (np.zeros((2, 16, 16, 2), np.float32), r'expected \(N, H, W\)'),
        (np.zeros((16, 16), np.float32), r'expected \(N, H, W\)'),
        (np.zeros((0, 16, 16), np.float32), 'no images'),
        (np.full((2, 16, 16), 200.0, np.float32), r'range over \[200, 200\]: expected \[0, 1\]'),
        (np.full((2, 16, 16), np.nan, np.float32), 'range over'),
        (np.zeros((2, 16, 16), np.int32), 'dtype int32'),
    ],
)
def test_encode_rejects_bad_images(workdir, bad, message):
    with pytest.raises(EncoderInputError, match=message):
        load_encoder(workdir).encode(bad)


def test_encode_rejects_bad_arguments(workdir, images):
    encoder = load_encoder(workdir)
    with pytest.raises(EncoderInputError, match="layer='stage5'"):
        encoder.encode(images, layer='stage5')
    with pytest.raises(EncoderInputError, match='batch_size=0'):
        encoder.encode(images, batch_size=0)


def test_overrides_and_export_round_trip(workdir, images, tmp_path):
    encoder = load_encoder(workdir)
    features = encoder.encode(images)
    unit = load_encoder(workdir, normalization='unit')
    assert unit.config['input_mean'] == [0.0, 0.0, 0.0]
    assert not np.allclose(unit.encode(images), features, rtol=1e-3)
    half = load_encoder(workdir, dtype='bfloat16').encode(images)
    np.testing.assert_allclose(half, features, rtol=0.1, atol=0.1 * np.abs(features).max())

    exported = load_encoder(encoder.export_torchvision(tmp_path / 'tiny.safetensors'))
    assert exported.config['variant'] == 'v1.5' and exported.step is None
    np.testing.assert_array_equal(exported.encode(images), features)


def test_importing_the_package_does_not_import_jax():
    code = 'import sys, fewshot_jax; assert "jax" not in sys.modules; print(fewshot_jax.__all__)'
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, check=True)
    assert 'load_encoder' in out.stdout
