"""Multi-host pretraining on one machine: 2 processes x 2 CPU devices vs 1 process x 4.

Real ``jax.distributed`` jobs (a coordinator on 127.0.0.1, gloo collectives) run
``launch.py`` in subprocesses (tests/helpers/multihost_harness.py). They must train exactly
like one process with the same global batch, write every file once, resume after
their processes die, read disjoint shares of the data, and stop with a clear
error on bad starts (a busy workdir, differing configs, no coordinator).
"""

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pytest

from fewshot_jax.data import pipeline
from fewshot_jax.train_lib import checkpoint
from tests.helpers.multihost_harness import (
    DATA_BATCH,
    DATA_IMAGES,
    REPO,
    batch_ids,
    data_job,
    free_port,
    index_source,
    launch_job,
)

# The ':tiny' preset (monitor off), without warm-up, at a learning rate that keeps the run out
# of chaos. Measured in one process (4 vs 2 devices, same batches): the tiny ResNet's training
# amplifies float32 reduction-order differences (~1e-6) to ~1e-2 in the loss within 4-6 steps
# even at lr 1e-4 (1e-5 for SimCLR). At lr 1e-6 both runs stay within the 8-vs-1 tolerance
# (1e-5, as in tests/pretrain/test_steps.py) at every step; each step's loss fingerprints its global
# batch, and the params' updates (~1e-4) are compared to 1% of their size.
LR = 1e-6
CONFIGS = {'barlow_twins': 'configs/barlow_tem.py:tiny', 'simclr': 'configs/simclr_tem.py:tiny'}


def overrides_of(steps):
    return {
        'optim.lr': LR,
        'optim.warmup_steps': 0,
        'train.checkpoint_every': 2,
        'train.keep_checkpoints': 10,
        'train.num_steps': steps,
    }


# A dead process is noticed after this many seconds without heartbeats.
FAULT_FLAGS = {'heartbeat_timeout': 10, 'shutdown_timeout': 20}
JOB_TIMEOUT = 400  # seconds; generous, the test machine is shared


def read_metrics(workdir):
    return [json.loads(line) for line in (Path(workdir) / 'metrics.jsonl').read_text().splitlines()]


def final_variables(workdir, step):
    """params and batch_stats of checkpoint ``step``, read as numpy."""
    path = checkpoint.checkpoint_item_path(workdir, step, 'state')
    meta = checkpoint.array_metadata(path)
    return checkpoint.restore_numpy(path, {k: meta[k] for k in ('params', 'batch_stats')})


def assert_same_run(run, ref, steps):
    """Per-step losses, final params and batch_stats agree within the 8-vs-1 tolerance."""
    run_metrics, ref_metrics = read_metrics(run), read_metrics(ref)
    assert [m['step'] for m in run_metrics] == list(range(1, steps + 1)), (
        'every step logged exactly once, in order'
    )
    assert [m['step'] for m in ref_metrics] == list(range(1, steps + 1))
    np.testing.assert_allclose(
        [m['loss'] for m in run_metrics], [m['loss'] for m in ref_metrics], rtol=1e-5, atol=1e-5
    )
    got, want = final_variables(run, steps), final_variables(ref, steps)
    for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(want), jax.tree.leaves(got), strict=True):
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-5, err_msg=jax.tree_util.keystr(path))
    # The updates since the first checkpoint agree to 1% of their size (and exist).
    run_start, ref_start = final_variables(run, 2), final_variables(ref, 2)
    ref_update = jax.tree.map(np.subtract, want['params'], ref_start['params'])
    run_update = jax.tree.map(np.subtract, got['params'], run_start['params'])
    size = max(float(np.max(np.abs(u))) for u in jax.tree.leaves(ref_update))
    gap = max(
        float(np.max(np.abs(a - b)))
        for a, b in zip(jax.tree.leaves(ref_update), jax.tree.leaves(run_update), strict=True)
    )
    assert size > 1e-5, f'the params did not move ({size:.1e}): nothing was compared'
    assert gap < 0.01 * size, f'updates differ by {gap:.1e}, {gap / size:.1%} of their size'


@pytest.mark.parametrize('count', [2, 4])
@pytest.mark.parametrize('cache_bytes', [0, 2**20])
def test_process_shares_read_disjoint_rows_that_make_the_one_process_batches(count, cache_bytes):
    spec = pipeline.PipelineSpec(
        image_size=8, global_batch=8, seed=5, channels=1, num_threads=2, prefetch=2, cache_bytes=cache_bytes
    )
    whole = pipeline.ssl_dataset(index_source(40), spec, process=(0, 1))
    reads, shares = [], []
    for p in range(count):
        mine = []
        shares.append(pipeline.ssl_dataset(index_source(40, mine), spec, process=(p, count)))
        # Batches 0-4 are epoch 0, 5-9 epoch 1 (reshuffled); the cache serves epoch 1.
        rows = [batch_ids(shares[p][b]) for b in range(10)]
        assert all(len(r) == 8 // count for r in rows)
        reads.append(mine)
    for b in range(10):
        assert sum((batch_ids(s[b]) for s in shares), []) == batch_ids(whole[b])
    first_epoch = [set(r[: 40 // count]) for r in reads]  # reads follow the batch order
    assert set().union(*first_epoch) == set(range(40))
    assert sum(len(s) for s in first_epoch) == 40, 'no image read by two processes in an epoch'
    if cache_bytes:  # each process decoded only what it served, each image once
        assert all(len(r) == len(set(r)) for r in reads)


def test_processes_of_a_real_job_read_disjoint_complete_shares(tmp_path):
    with data_job(tmp_path, tmp_path) as job:
        job.wait(JOB_TIMEOUT)
    results = [json.loads((tmp_path / f'ids.{i}.json').read_text()) for i in range(2)]
    assert [(r['process'], r['count']) for r in results] == [(0, 2), (1, 2)]
    read = [set(r['read']) for r in results]
    assert not read[0] & read[1], 'an image was read by both processes'
    assert read[0] | read[1] == set(range(DATA_IMAGES))
    spec = pipeline.PipelineSpec(image_size=8, global_batch=DATA_BATCH, seed=5, channels=1)
    whole = pipeline.ssl_dataset(index_source(DATA_IMAGES), spec, process=(0, 1))
    for b in range(DATA_IMAGES // DATA_BATCH):
        assert results[0]['batches'][b] + results[1]['batches'][b] == batch_ids(whole[b])


def test_two_processes_train_like_one_and_write_each_file_once(tmp_path):
    steps = 6
    overrides, config = overrides_of(steps), CONFIGS['barlow_twins']
    with (
        launch_job(tmp_path / 'ref', config, overrides, tmp_path, 'ref', processes=1, devices=4) as ref,
        launch_job(tmp_path / 'run', config, overrides, tmp_path, 'run', **FAULT_FLAGS) as job,
    ):
        ref.wait(JOB_TIMEOUT)
        outputs = [f.output for f in job.wait(JOB_TIMEOUT)]
    run = tmp_path / 'run'
    assert_same_run(run, tmp_path / 'ref', steps)

    # The health line, then the summary from process 0 only.
    for i in range(2):
        assert (
            f'multihost: process {i} of 2, 2 local / 4 global cpu devices, global batch 8 '
            f'(4 per process, 2 per device)'
        ) in outputs[i]
    assert 'pretrain finished' in outputs[0] and 'pretrain finished' not in outputs[1]
    # Written once, by process 0: metrics (checked above), events, encoder, log.txt.
    assert len(list((run / 'tb').glob('events.out.tfevents.*'))) == 1
    assert sorted(p.name for p in run.glob('log*.txt')) == ['log.1.txt', 'log.txt']
    assert (run / 'log.txt').read_text().count('exported the encoder of step 6') == 1
    assert 'exported the encoder' not in (run / 'log.1.txt').read_text()
    assert json.loads(checkpoint.encoder_meta_path(run).read_text())['step'] == steps
    assert checkpoint.checkpoint_steps(run) == [2, 4, 6]
    assert not [p for p in (run / 'checkpoints').iterdir() if 'tmp' in p.name]
    # Each process's iterator state is saved.
    data = checkpoint.read_config_item(checkpoint.checkpoint_item_path(run, steps, 'data'))
    assert data['process_count'] == 2 and len(data['per_process']) == 2
    assert data['per_process'][0]['next_index'] == steps


def test_killed_process_stops_the_job_and_a_resumed_job_equals_one_process(tmp_path):
    steps = 10
    overrides, config = overrides_of(steps), CONFIGS['simclr']
    run = tmp_path / 'run'
    with launch_job(tmp_path / 'ref', config, overrides, tmp_path, 'ref', processes=1, devices=4) as ref:
        with launch_job(run, config, overrides, tmp_path, 'first', **FAULT_FLAGS) as job:
            job.wait_for(lambda: (run / 'checkpoints' / '2').exists(), JOB_TIMEOUT, 'checkpoint of step 2')
            job.kill(1)
            killed = time.monotonic()
            survivor = job.wait(FAULT_FLAGS['heartbeat_timeout'] + 50, ok=False)[0]
        # Process 0 stops by itself, with an error, once process 1 misses its heartbeats.
        assert survivor.returncode != 0, survivor.output[-3000:]
        assert survivor.ended - killed < FAULT_FLAGS['heartbeat_timeout'] + 50
        assert 'JAX distributed service detected fatal errors' in survivor.output, survivor.output[-3000:]
        assert not (run / 'encoder').exists(), 'killed too late to test a resume'

        with launch_job(run, config, overrides, tmp_path, 'resumed', **FAULT_FLAGS) as again:
            outputs = [f.output for f in again.wait(JOB_TIMEOUT)]
        ref.wait(JOB_TIMEOUT)
    assert 'resumed_from: 0' not in outputs[0] and 'resumed_from: ' in outputs[0]
    assert 'resuming' in (run / 'log.txt').read_text()
    assert_same_run(run, tmp_path / 'ref', steps)


def test_bad_starts_stop_every_process_with_a_clear_error(tmp_path):
    config, overrides = CONFIGS['barlow_twins'], {'train.num_steps': 2}
    busy = tmp_path / 'busy'
    holder = subprocess.Popen(
        [
            sys.executable,
            '-c',
            (
                'import sys, time; sys.path.insert(0, %r);'
                'from fewshot_jax.train_lib.checkpoint import WorkdirLock;'
                'WorkdirLock(%r).acquire(); print("locked", flush=True); time.sleep(600)'
            )
            % (str(REPO), str(busy)),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == 'locked'
        second = launch_job(busy, config, overrides, tmp_path, 'second_job', **FAULT_FLAGS)
        mismatch = launch_job(
            tmp_path / 'mismatch',
            config,
            overrides,
            tmp_path,
            'mismatch',
            per_process={1: {'data.batch_size': 16}},
            **FAULT_FLAGS,
        )
        lonely = launch_job(
            tmp_path / 'lonely',
            config,
            overrides,
            tmp_path,
            'lonely',
            processes=1,
            coordinator_address=f'127.0.0.1:{free_port()}',
            num_processes=2,
            process_id=1,
            coordinator_timeout=5,
        )
        with second, mismatch, lonely:
            refused = second.wait(JOB_TIMEOUT, ok=False)
            differing = mismatch.wait(JOB_TIMEOUT, ok=False)
            [alone] = lonely.wait(JOB_TIMEOUT, ok=False)
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    # A second job on a workdir in use: all its processes refuse, naming the holder.
    for f in refused:
        assert f.returncode == 1 and 'is in use by a live run (pid' in f.output, f.output[-3000:]
    assert not (busy / 'metrics.jsonl').exists()
    # Processes started with different configs: all stop, naming the field and both values.
    for f in differing:
        assert f.returncode == 1, f.output[-3000:]
        assert 'data.batch_size: 8 (process 0) vs 16 (process 1)' in f.output, f.output[-3000:]
    assert not (tmp_path / 'mismatch' / 'checkpoints').exists()
    # No coordinator: a clear error after --coordinator_timeout, not a hang.
    assert alone.returncode == 3, alone.output[-3000:]
    assert 'did not assemble within --coordinator_timeout=5s' in alone.output
    assert '127.0.0.1:' in alone.output
