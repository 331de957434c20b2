"""The one training loop: lock, resume, metrics, NaN guard, cadence, hooks.

A training task is builders + :func:`run`. The loop owns everything between
"here is a jitted step, a state and a batch source" and "the run is done":

- the workdir lock (a second live run on the same workdir is refused);
- resume from the newest readable checkpoint (train state, data-iterator state,
  config), with a warning naming every config field that changed;
- ``metrics.jsonl`` + TensorBoard, with the loss checked for NaN/inf before
  any checkpoint of that state is written;
- the progress bar, periodic checkpoints and evaluation hooks (big_vision's
  evaluators are the model: a hook gets ``(step, state)`` at its cadence and
  returns metrics);
- a ``finalize(state)`` callback that runs under the lock after the last step
  (pretraining exports the encoder there).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import jax
import ml_collections
import numpy as np
from tqdm import tqdm

from fewshot_jax.errors import ConfigError
from fewshot_jax.train_lib import checkpoint
from fewshot_jax.train_lib.run_log import MetricsLog, fetch_and_check

log = logging.getLogger(__name__)


class LoopConfigError(ConfigError):
    """A cadence or loop setting that cannot be used."""


class RunInterrupted(KeyboardInterrupt):
    """Ctrl-C during training; the message says where the run stopped and how to resume."""


def every_steps(every: int | float | None, total_steps: int, *, name: str = 'every') -> int | None:
    """Resolves a cadence to whole steps.

    Args:
        every: steps (an int >= 1), a fraction of the run (0 < float < 1), or None/0 (never).
        total_steps: the run's length.
        name: the config key, for the error message.

    Returns:
        The period in steps (>= 1), or None for "never".
    """
    if every is None or (isinstance(every, (int, float)) and every == 0):
        return None
    if isinstance(every, float) and 0 < every < 1:
        return max(1, round(every * total_steps))
    if (
        isinstance(every, (int, float))
        and not isinstance(every, bool)
        and every >= 1
        and float(every) == int(every)
    ):
        return int(every)
    raise LoopConfigError(
        f'{name}={every!r}: expected a number of steps (an integer >= 1), '
        f'a fraction of the run (0 < x < 1), or 0 for never'
    )


def is_due(done: int, period: int | None, total_steps: int) -> bool:
    """True at every ``period``-th step and at the last step (never if ``period`` is None)."""
    return period is not None and (done % period == 0 or done == total_steps)


@dataclasses.dataclass(frozen=True)
class Hook:
    """An evaluation run at a cadence: ``fn(step, state) -> metrics``.

    Attributes:
        name: metrics are logged as ``f'{name}/{key}'``.
        fn: receives the number of steps done and the train state.
        every: steps, or a fraction of the run (see :func:`every_steps`); the
            last step is always evaluated.
        at_start: also evaluate before the first step of a fresh run (step 0),
            e.g. a random-init reference value.
    """

    name: str
    fn: Callable[[int, Any], dict]
    every: int | float
    at_start: bool = False


@dataclasses.dataclass
class LoopResult:
    """What :func:`run` returns.

    Attributes:
        state: the final train state.
        start_step: where this invocation started (0 unless resumed).
        total_steps: the run's length.
        metrics: the last logged training metrics (host floats).
        summary: ``{'step', 'total_steps', 'resumed_from', 'final_loss'}`` plus
            whatever ``finalize`` returned.
    """

    state: Any
    start_step: int
    total_steps: int
    metrics: dict
    summary: dict


def _flat(tree, prefix=''):
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(_flat(value, f'{prefix}{key}.'))
        else:
            out[f'{prefix}{key}'] = list(value) if isinstance(value, tuple) else value
    return out


UNSET = '(unset)'  # the value shown for a field that only one of two configs has


def config_changes(saved: dict, current: dict) -> list[tuple[str, Any, Any]]:
    """Every field that differs between two nested configs, sorted by dotted name.

    Tuples and lists compare equal (a config restored from JSON has lists).

    Returns:
        ``(dotted name, saved value, current value)`` per differing field; ``UNSET`` stands
        for a field that only one of them has.
    """
    old, new = _flat(saved), _flat(current)
    return [
        (k, old.get(k, UNSET), new.get(k, UNSET))
        for k in sorted(old.keys() | new.keys())
        if old.get(k, UNSET) != new.get(k, UNSET)
    ]


def warn_config_changes(saved: dict, current: dict) -> list[str]:
    """Logs a warning for every config field that differs from the checkpoint's.

    Resuming with a changed config is allowed (e.g. more steps), but it is no
    longer the run that was checkpointed: a new ``train.num_steps`` reshapes the
    learning-rate schedule, a new batch size or seed changes the data order.

    Returns:
        The dotted names of the fields that differ.
    """
    changed = config_changes(saved, current)
    if changed:
        log.warning(
            'resuming with a config that differs from the checkpoint in %s: %s',
            len(changed),
            ', '.join(f'{k}: {old!r} -> {new!r}' for k, old, new in changed),
        )
    return [k for k, _, _ in changed]


def _mean_metrics(host_metrics: list[tuple[int, dict]]) -> dict:
    keys = host_metrics[-1][1].keys()
    return {k: float(np.mean([np.asarray(m[k]) for _, m in host_metrics])) for k in keys}


def _run_hooks(
    hooks: Sequence[Hook],
    periods: list[int | None],
    done: int,
    total: int,
    state,
    metrics_log: MetricsLog,
    *,
    force: bool = False,
) -> dict:
    out = {}
    for hook, period in zip(hooks, periods, strict=True):
        if force or is_due(done, period, total):
            values = hook.fn(done, state)
            out.update({f'{hook.name}/{k}': float(v) for k, v in values.items()})
    if out:
        metrics_log.write(done, out, prefix='')
    return out


def _recorded_metrics(workdir: Path, step: int) -> dict:
    """The training metrics ``metrics.jsonl`` holds for ``step`` (empty if none were logged)."""
    path = workdir / 'metrics.jsonl'
    found = {}
    if path.is_file():
        for line in path.read_text().splitlines():
            record = json.loads(line) if line.strip() else {}
            if record.get('step') == step and 'loss' in record:
                found = {k: v for k, v in record.items() if k not in ('step', 'time')}
    return found


def run(
    step_fn: Callable,
    state,
    make_batches: Callable[[dict | None], Iterator],
    *,
    total_steps: int,
    workdir: str | os.PathLike,
    config: ml_collections.ConfigDict,
    hooks: Sequence[Hook] = (),
    finalize: Callable[[Any], dict] | None = None,
    desc: str = 'train',
) -> LoopResult:
    """Runs (or resumes) ``total_steps`` of ``step_fn`` in ``workdir``.

    Args:
        step_fn: jitted ``(state, batch) -> (state, metrics)``; metrics hold ``'loss'``.
        state: the initial train state (its shapes and shardings are the restore target).
        make_batches: ``data_state -> iterator`` of device-ready batches; called with the
            checkpointed iterator state on resume, else None. The iterator's
            ``get_state()`` is saved with every checkpoint.
        total_steps: the run's length in steps.
        workdir: where ``checkpoints/``, ``metrics.jsonl``, ``tb/`` go.
        config: the run's config; saved with checkpoints, and ``config.train``'s
            ``log_every``, ``checkpoint_every``, ``keep_checkpoints``, ``progress`` set the
            cadence (steps or fractions of the run).
        hooks: evaluations at their own cadence (see :class:`Hook`).
        finalize: ``state -> dict`` run under the lock after the last step.
        desc: the progress bar's label.
    """
    workdir = Path(workdir)
    train_cfg = config.get('train', ml_collections.ConfigDict())
    log_every = every_steps(train_cfg.get('log_every', 10), total_steps, name='train.log_every')
    ckpt_every = every_steps(
        train_cfg.get('checkpoint_every', 100), total_steps, name='train.checkpoint_every'
    )
    hook_periods = [every_steps(h.every, total_steps, name=f'{h.name} every') for h in hooks]
    # Refuse at once if a live run holds the workdir, before anything is restored.
    with checkpoint.WorkdirLock(workdir):
        ckpt = checkpoint.RunCheckpointer(
            workdir / checkpoint.CHECKPOINT_DIR, max_to_keep=train_cfg.get('keep_checkpoints', 3)
        )
        start, data_state = 0, None
        restored = ckpt.restore_latest(state)
        if restored is not None:
            start, state, data_state, saved_config = restored
            log.info('resuming %s from step %d', workdir, start)
            warn_config_changes(saved_config, config.to_dict())
        batches = make_batches(data_state)
        metrics_log = MetricsLog(workdir, resume_step=start)
        pending, last = [], {}
        done, interrupted = start, False
        try:
            if start == 0 and total_steps > 0:
                _run_hooks(
                    [h for h in hooks if h.at_start],
                    [None] * sum(h.at_start for h in hooks),
                    0,
                    total_steps,
                    state,
                    metrics_log,
                    force=True,
                )
            bar = tqdm(
                range(start, total_steps),
                initial=start,
                total=total_steps,
                desc=desc,
                disable=jax.process_index() != 0 or not train_cfg.get('progress', True),
                dynamic_ncols=True,
            )
            for step in bar:
                state, metrics = step_fn(state, next(batches))
                done = step + 1
                pending.append((done, metrics))
                must_save = is_due(done, ckpt_every, total_steps) or done == total_steps
                if is_due(done, log_every, total_steps) or must_save:
                    # Checked before any save: a NaN state never reaches a checkpoint.
                    host = fetch_and_check(pending)
                    pending = []
                    last = _mean_metrics(host)
                    metrics_log.write(done, last)
                    bar.set_postfix(loss=f'{last["loss"]:.4f}')
                _run_hooks(hooks, hook_periods, done, total_steps, state, metrics_log)
                if must_save:
                    ckpt.save(done, state, batches.get_state(), config.to_dict())
        except KeyboardInterrupt:
            interrupted = True
        finally:
            # Waits for the save in flight: after Ctrl-C the newest checkpoint is complete.
            ckpt.close()
            metrics_log.close()
        if interrupted:
            saved = checkpoint.checkpoint_steps(workdir)
            resume = f'resumes from step {saved[-1]}' if saved else 'starts again from step 0'
            raise RunInterrupted(
                f'interrupted at step {done} of {total_steps} in {workdir}; rerunning the same '
                f'command {resume}'
            )
        if start >= total_steps:
            # Nothing ran: the run was finished earlier. Its loss is the one it recorded.
            last = _recorded_metrics(workdir, total_steps)
            log.info('%s was already finished (step %d of %d); nothing to train', workdir, start, total_steps)
        summary = {
            'step': total_steps,
            'total_steps': total_steps,
            'resumed_from': start,
            'final_loss': last.get('loss', float('nan')),
        }
        if start >= total_steps:
            summary['already_finished'] = True
        if finalize is not None:
            summary.update(finalize(state))
    return LoopResult(state=state, start_step=start, total_steps=total_steps, metrics=last, summary=summary)
