"""The pretraining loop end to end: outputs, resume after SIGKILL, faults."""

import functools
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pytest

from fewshot_jax.data.io import DataError
from fewshot_jax.pretrain.task import train_ssl
from fewshot_jax.train_lib import checkpoint
from fewshot_jax.train_lib.run_log import NonFiniteLossError
from tests.conftest import restore_saved_encoder, tiny_ssl_config

REPO = Path(__file__).resolve().parents[2]


def read_metrics(workdir):
    return [json.loads(line) for line in (Path(workdir) / 'metrics.jsonl').read_text().splitlines()]


def encoder_params(workdir, config):
    import jax.numpy as jnp

    from fewshot_jax.models import make_encoder

    model = make_encoder(config.model)
    target = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3))))
    target = jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), target)
    return restore_saved_encoder(workdir, target)


def launch_args(workdir, steps=8):
    return [
        sys.executable,
        str(REPO / 'launch.py'),
        '--config=configs/barlow_tem.py:demo',
        f'--workdir={workdir}',
        '--config.model.width=4',
        '--config.model.projector=(16,16,32)',
        '--config.data.num_images=32',
        '--config.data.synthetic_size=40',
        '--config.data.image_size=32',
        '--config.data.batch_size=8',
        f'--config.train.num_steps={steps}',
        '--config.train.log_every=1',
        '--config.train.checkpoint_every=2',
        '--config.train.progress=False',
        '--config.data.num_threads=2',
        '--config.monitor.tasks=()',
    ]


def test_sigkill_midway_then_resume_equals_uninterrupted_run(tmp_path):
    env = dict(os.environ, XLA_FLAGS='--xla_force_host_platform_device_count=2')
    # Uninterrupted reference, same command.
    subprocess.run(
        launch_args(tmp_path / 'ref'), cwd=REPO, env=env, check=True, capture_output=True, timeout=300
    )

    workdir = tmp_path / 'run'
    proc = subprocess.Popen(
        launch_args(workdir), cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.time() + 240
    while not (workdir / 'checkpoints' / '4').exists():
        assert proc.poll() is None, 'run ended before it could be interrupted'
        assert time.time() < deadline, 'no checkpoint appeared'
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (workdir / 'encoder').exists(), 'killed too late to test a resume'

    resumed = subprocess.run(
        launch_args(workdir), cwd=REPO, env=env, capture_output=True, text=True, timeout=300
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    # The console is quiet; the library's INFO lines (the resume among them) go to log.txt.
    assert 'resuming' in (workdir / 'log.txt').read_text()

    steps = [m['step'] for m in read_metrics(workdir)]
    assert steps == list(range(1, 9)), 'every step logged exactly once, in order'
    ref_metrics, run_metrics = read_metrics(tmp_path / 'ref'), read_metrics(workdir)
    np.testing.assert_allclose([m['loss'] for m in run_metrics], [m['loss'] for m in ref_metrics], rtol=1e-5)
    config = tiny_ssl_config(**{'train.num_steps': 8})
    ref, run = encoder_params(tmp_path / 'ref', config), encoder_params(workdir, config)
    for a, b in zip(jax.tree.leaves(ref), jax.tree.leaves(run), strict=True):
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-6)


def test_run_writes_outputs_and_loss_falls(tmp_path, caplog):
    config = tiny_ssl_config(
        **{'train.num_steps': 30, 'train.log_every': 5, 'train.checkpoint_every': 10, 'optim.lr': 0.05}
    )
    summary = train_ssl(config, tmp_path)
    assert summary['step'] == 30 and summary['resumed_from'] == 0
    metrics = read_metrics(tmp_path)
    assert [m['step'] for m in metrics] == [5, 10, 15, 20, 25, 30]
    assert metrics[-1]['loss'] < metrics[0]['loss']
    assert list((tmp_path / 'tb').glob('events.out.tfevents.*'))
    assert sorted(int(p.name) for p in (tmp_path / 'checkpoints').iterdir() if p.name.isdigit()) == [
        10,
        20,
        30,
    ]
    meta = json.loads(checkpoint.encoder_meta_path(tmp_path).read_text())
    assert meta['step'] == 30 and meta['model']['depth'] == 18

    # Running the finished command again resumes at the end and changes nothing.
    with caplog.at_level('WARNING'):
        again = train_ssl(config, tmp_path)
    assert not any('differs from the checkpoint' in r.getMessage() for r in caplog.records)
    assert again['resumed_from'] == 30
    assert [m['step'] for m in read_metrics(tmp_path)] == [5, 10, 15, 20, 25, 30]


def test_nan_loss_stops_with_step_and_keeps_last_good_checkpoint(tmp_path):
    config = tiny_ssl_config(
        **{'optim.lr': 1e30, 'optim.warmup_steps': 0, 'train.num_steps': 50, 'train.checkpoint_every': 1}
    )
    with pytest.raises(NonFiniteLossError, match=r'at step (\d+)') as err:
        train_ssl(config, tmp_path)
    bad_step = int(err.value.args[0].split('at step ')[1].split(';')[0])
    saved = sorted(int(p.name) for p in (tmp_path / 'checkpoints').iterdir() if p.name.isdigit())
    assert all(s < bad_step for s in saved)
    if saved:  # the last good checkpoint restores and holds finite params
        ckpt = checkpoint.RunCheckpointer(tmp_path / 'checkpoints')
        manager_steps = ckpt.steps()
        assert manager_steps[-1] == bad_step - 1
        ckpt.close()


def test_second_process_on_live_workdir_refuses_but_stale_lock_does_not(tmp_path):
    config = tiny_ssl_config(**{'train.num_steps': 2})
    with checkpoint.WorkdirLock(tmp_path):
        with pytest.raises(checkpoint.WorkdirLockedError, match=str(tmp_path)):
            train_ssl(config, tmp_path)
    # A killed holder leaves its lock file behind; it must not block the next run.
    holder = subprocess.Popen(
        [
            sys.executable,
            '-c',
            (
                'import sys, time; sys.path.insert(0, %r);'
                'from fewshot_jax.train_lib.checkpoint import WorkdirLock;'
                'WorkdirLock(%r).acquire(); print("locked", flush=True); time.sleep(60)'
            )
            % (str(REPO), str(tmp_path)),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout.readline().strip() == 'locked'
    with pytest.raises(checkpoint.WorkdirLockedError, match='pid'):
        checkpoint.WorkdirLock(tmp_path).acquire()
    holder.kill()
    holder.wait()
    assert (tmp_path / '.lock').exists()
    assert train_ssl(config, tmp_path)['step'] == 2


def test_corrupted_latest_checkpoint_is_skipped_with_warning(tmp_path, caplog):
    config = tiny_ssl_config(**{'train.num_steps': 4, 'train.checkpoint_every': 2})
    train_ssl(config, tmp_path)
    # Damage step 4: remove its array data, as a broken disk or a stray rm would.
    for f in (tmp_path / 'checkpoints' / '4' / 'state').rglob('*'):
        if f.is_file() and f.name != 'commit_success.txt':
            f.unlink()
    config.train.num_steps = 6
    with caplog.at_level('WARNING'):
        summary = train_ssl(config, tmp_path)
    assert any('train.num_steps: 4 -> 6' in r.getMessage() for r in caplog.records)
    assert summary['resumed_from'] == 2
    assert any('step 4' in r.getMessage() and 'unreadable' in r.getMessage() for r in caplog.records)
    assert len(list((tmp_path / 'corrupt_checkpoints').iterdir())) == 1
    assert [m['step'] for m in read_metrics(tmp_path)] == [1, 2, 3, 4, 5, 6]


def test_missing_or_empty_data_root_is_a_clear_error(tmp_path):
    config = tiny_ssl_config(**{'data.source': 'folder', 'data.root': str(tmp_path / 'nope')})
    with pytest.raises(DataError, match='nope'):
        train_ssl(config, tmp_path / 'w1')
    (tmp_path / 'empty').mkdir()
    config.data.root = str(tmp_path / 'empty')
    with pytest.raises(DataError, match='empty'):
        train_ssl(config, tmp_path / 'w2')
    config.data.root = ''
    with pytest.raises(DataError, match='data.root'):
        train_ssl(config, tmp_path / 'w3')


def test_model_init_starts_from_given_encoder_weights(tmp_path):
    from fewshot_jax.models import make_ssl_model
    from fewshot_jax.models.weights import WeightsError, export_torchvision, initial_variables
    from fewshot_jax.train_lib import sharding
    from fewshot_jax.train_lib.optim import make_optimizer
    from fewshot_jax.train_lib.state import init_state

    config = tiny_ssl_config(**{'train.num_steps': 2, 'num_devices': 1})
    train_ssl(config, tmp_path / 'first')
    trained = encoder_params(tmp_path / 'first', config)
    export_torchvision(trained, tmp_path / 'enc.safetensors')

    model, tx = make_ssl_model(config.model), make_optimizer(config.optim, 10)
    mesh = sharding.make_mesh(1)
    random_state = init_state(model, tx, 1, 32, mesh)
    for spec in (f'checkpoint:{tmp_path / "first"}', f'torchvision:{tmp_path / "enc.safetensors"}'):
        state = init_state(model, tx, 1, 32, mesh, functools.partial(initial_variables, spec, config.model))
        for a, b in zip(
            jax.tree.leaves(state.params['encoder']), jax.tree.leaves(trained['params']), strict=True
        ):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
        for a, b in zip(
            jax.tree.leaves(state.batch_stats['encoder']),
            jax.tree.leaves(trained['batch_stats']),
            strict=True,
        ):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
        # The projector keeps its random initialisation.
        for a, b in zip(
            jax.tree.leaves(state.params['projector']),
            jax.tree.leaves(random_state.params['projector']),
            strict=True,
        ):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))

    wider = tiny_ssl_config(**{'model.width': 8})
    with pytest.raises(WeightsError, match='model.width=4'):
        init_state(
            make_ssl_model(wider.model),
            tx,
            1,
            32,
            mesh,
            functools.partial(initial_variables, f'checkpoint:{tmp_path / "first"}', wider.model),
        )
