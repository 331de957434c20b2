"""The shared training loop: cadence, hooks, finalize, resume and the lock, on a tiny real step."""

import json

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from fewshot_jax.train_lib import checkpoint, loop


def counting_step(state, batch):
    """A real jitted step: the state accumulates the batch; the loss is its mean."""
    new = {'step': state['step'] + 1, 'total': state['total'] + batch}
    return new, {'loss': jnp.mean(batch)}


class Batches:
    """Batches 1, 2, 3, … with a resumable position."""

    def __init__(self, state):
        self.position = 0 if state is None else state['position']

    def __next__(self):
        self.position += 1
        return jnp.full((2,), float(self.position))

    def get_state(self):
        return {'position': self.position}


def config(**train):
    c = ml_collections.ConfigDict(
        {'train': {'log_every': 2, 'checkpoint_every': 3, 'progress': False, **train}}
    )
    return c


def initial():
    return {'step': jnp.zeros((), jnp.int32), 'total': jnp.zeros((2,))}


def read(workdir):
    return [json.loads(line) for line in (workdir / 'metrics.jsonl').read_text().splitlines()]


@pytest.mark.parametrize(
    ('every', 'total', 'expected'),
    [(5, 100, 5), (0.25, 100, 25), (0.01, 10, 1), (None, 10, None), (0, 10, None)],
)
def test_every_steps_reads_steps_or_fractions(every, total, expected):
    assert loop.every_steps(every, total) == expected


@pytest.mark.parametrize('bad', [-1, 1.5, 2.0000001, 'often'])
def test_bad_cadence_names_the_key(bad):
    with pytest.raises(loop.LoopConfigError, match='train.log_every'):
        loop.every_steps(bad, 10, name='train.log_every')


def test_is_due_hits_the_period_and_the_last_step():
    assert [d for d in range(1, 11) if loop.is_due(d, 4, 10)] == [4, 8, 10]
    assert not any(loop.is_due(d, None, 10) for d in range(1, 11))


def test_run_logs_hooks_checkpoints_and_finalizes(tmp_path):
    calls = []

    def hook_fn(step, state):
        calls.append(step)
        return {'total': float(np.asarray(state['total'])[0])}

    hooks = [loop.Hook('eval', hook_fn, every=4, at_start=True)]
    finalized = []

    def finalize(state):
        # Runs under the lock: a second run on the same workdir is refused meanwhile.
        with pytest.raises(checkpoint.WorkdirLockedError):
            checkpoint.WorkdirLock(tmp_path).acquire()
        finalized.append(float(np.asarray(state['total'])[0]))
        return {'extra': 1}

    result = loop.run(
        jax.jit(counting_step),
        initial(),
        Batches,
        total_steps=10,
        workdir=tmp_path,
        config=config(),
        hooks=hooks,
        finalize=finalize,
    )
    assert calls == [0, 4, 8, 10]
    assert finalized == [55.0]  # 1 + 2 + … + 10
    # final_loss is the mean over the steps since the previous log (step 9's checkpoint).
    assert result.summary['extra'] == 1 and result.summary['final_loss'] == 10.0
    lines = read(tmp_path)
    train_steps = [m['step'] for m in lines if 'loss' in m]
    assert train_steps == [2, 3, 4, 6, 8, 9, 10]  # log cadence plus every checkpoint
    evals = {m['step']: m['eval/total'] for m in lines if 'eval/total' in m}
    assert evals == {0: 0.0, 4: 10.0, 8: 36.0, 10: 55.0}
    assert checkpoint.checkpoint_steps(tmp_path)[-1] == 10


def test_resumed_run_continues_state_and_data(tmp_path):
    loop.run(jax.jit(counting_step), initial(), Batches, total_steps=6, workdir=tmp_path, config=config())
    # Longer run in the same workdir: resumes from step 6 with the data position restored.
    result = loop.run(
        jax.jit(counting_step), initial(), Batches, total_steps=9, workdir=tmp_path, config=config()
    )
    assert result.start_step == 6
    assert float(np.asarray(result.state['total'])[0]) == sum(range(1, 10))


def test_ctrl_c_during_a_save_is_raised_once_the_save_has_started(tmp_path, default_sigint):
    import os
    import signal

    ckpt = checkpoint.RunCheckpointer(tmp_path / 'checkpoints')
    done = []
    with pytest.raises(KeyboardInterrupt):
        with checkpoint._interrupt_after():
            os.kill(os.getpid(), signal.SIGINT)  # as if Ctrl-C came while orbax starts its writer
            ckpt.save(1, {'w': jnp.ones(3)}, {'position': 1}, {'seed': 0})
            done.append('saved')
    ckpt.close()  # joins the writer: no "cannot join thread before it is started"
    assert done == ['saved'] and ckpt.steps() == [1]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_sigterm_during_a_save_is_held_and_raised_as_an_interrupt(tmp_path):
    import os
    import signal

    from fewshot_jax.train_lib import signals

    previous = signal.getsignal(signal.SIGTERM)
    signals.stop_on_sigterm()
    try:
        ckpt = checkpoint.RunCheckpointer(tmp_path / 'checkpoints')
        done = []
        with pytest.raises(KeyboardInterrupt):
            with checkpoint._interrupt_after():
                os.kill(os.getpid(), signal.SIGTERM)  # as if the scheduler stopped the job here
                ckpt.save(1, {'w': jnp.ones(3)}, {'position': 1}, {'seed': 0})
                done.append('saved')
        ckpt.close()
        assert done == ['saved'] and ckpt.steps() == [1]
        assert signals.sigterm_received()
        assert signal.getsignal(signal.SIGTERM) is signals._raise_interrupt
    finally:
        signal.signal(signal.SIGTERM, previous)
