"""Checkpoints (orbax): the train state, the data-iterator state and the config.

Layout of a workdir::

    workdir/
      .lock                 held (flock) by the live run's process 0; released when it dies
      checkpoints/<step>/   state (arrays), data (iterator state(s)), config (JSON)
      encoder/              final encoder variables + encoder.json (what later stages load)
      metrics.jsonl, tb/    written by the loop

Orbax writes each step to a temporary folder and renames it when complete, so
a killed save leaves no half-written step behind; a step that is nevertheless
unreadable (a damaged disk, a file removed by hand) is skipped with a warning
and the previous one is used.

In a job of several processes every process takes part in each save and
restore (orbax writes the replicated arrays once and process 0 writes the
metadata and JSON items); the ``data`` item then holds every process's
iterator state (``{'process_count': P, 'per_process': [...]}``) and each
process resumes from its own.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import shutil
import signal
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from jax.experimental import multihost_utils

from fewshot_jax import integrity
from fewshot_jax.train_lib import sharding, signals

log = logging.getLogger(__name__)

ENCODER_DIR = 'encoder'
# The encoder weights pretraining started from (step 0): the random-init baseline of the same
# seed, read back with the weight spec 'checkpoint:WORKDIR@0'.
INIT_ENCODER_DIR = 'encoder_init'
ENCODER_META = 'encoder.json'
CHECKPOINT_DIR = 'checkpoints'


class WorkdirLockedError(RuntimeError):
    """Another live process is training in the same workdir."""


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be used by this run (not a damaged one: those are skipped)."""


class WorkdirLock:
    """An exclusive ``flock`` on ``workdir/.lock`` for the lifetime of a run (a job).

    The kernel drops the lock when the holder exits, however it dies, so a
    stale lock file left by a killed run never blocks a new one. In a job of
    several processes only process 0 takes the lock and every process learns
    the outcome (a collective: all must call :meth:`acquire`), so the job's own
    processes are never refused and every process of a second job stops with
    the same error.
    """

    def __init__(self, workdir: str | os.PathLike):
        self.path = Path(workdir) / '.lock'
        self._fd = None

    def acquire(self) -> WorkdirLock:
        if jax.process_count() == 1:
            return self._lock()
        refusal = b''
        if jax.process_index() == 0:
            try:
                self._lock()
            except (WorkdirLockedError, OSError) as err:
                refusal = f'{type(err).__name__}: {err}'.encode()
        refusal = sharding.process_allgather_bytes(refusal)[0]
        if refusal:
            raise WorkdirLockedError(f'process 0 of this job could not lock the workdir: {refusal.decode()}')
        return self

    def _lock(self) -> WorkdirLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode(errors='replace').strip() or 'unknown'
            os.close(fd)
            raise WorkdirLockedError(
                f'workdir {self.path.parent} is in use by a live run ({holder}); wait for it to '
                f'finish, stop it, or choose another --workdir'
            ) from None
        os.ftruncate(fd, 0)
        job = f', process 0 of a {jax.process_count()}-process job' if jax.process_count() > 1 else ''
        os.pwrite(fd, f'pid {os.getpid()} on {socket.gethostname()}{job}\n'.encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()


class RunCheckpointer:
    """Saves and restores ``(state, data-iterator state, config)`` by step.

    Args:
        directory: where step folders go (``workdir/checkpoints``).
        max_to_keep: keep the last K steps.
    """

    def __init__(self, directory: str | os.PathLike, max_to_keep: int = 3):
        self.directory = Path(directory).absolute()
        options = ocp.CheckpointManagerOptions(
            max_to_keep=max_to_keep, create=True, cleanup_tmp_directories=True
        )
        self.manager = ocp.CheckpointManager(
            self.directory, options=options, item_names=('state', 'data', 'config')
        )

    def save(self, step: int, state, data_state: dict, config: dict) -> None:
        """Starts an asynchronous save of ``step`` (call :meth:`wait` before exiting).

        Every process calls it; with several processes, their data-iterator states
        are gathered first (orbax writes JSON items from process 0 only).
        """
        args = ocp.args.Composite(
            state=ocp.args.StandardSave(state),
            data=ocp.args.JsonSave(_gather_data_states(data_state)),
            config=ocp.args.JsonSave(config),
        )
        with _interrupt_after():
            self.manager.save(step, args=args, force=True)

    def steps(self) -> list[int]:
        return sorted(self.manager.all_steps())

    def restore_latest(self, target_state):
        """Restores the newest readable step into the shape/sharding of ``target_state``.

        Unreadable steps are skipped with a warning, newest first, and moved to
        ``<workdir>/corrupt_checkpoints/`` (kept for inspection) so that the run
        can write those steps again.

        Returns:
            ``(step, state, data_state, config)``, or None if no readable step exists;
            ``data_state`` is this process's iterator state.

        Raises:
            CheckpointError: if the step holds differing iterator states of a different
                number of processes than this job has.
        """
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, target_state)

        def read(step):
            return self.manager.restore(
                step,
                args=ocp.args.Composite(
                    state=ocp.args.StandardRestore(abstract),
                    data=ocp.args.JsonRestore(),
                    config=ocp.args.JsonRestore(),
                ),
            )

        found, unreadable = first_readable(reversed(self.steps()), read, str(self.directory))
        if unreadable:
            self._set_aside(unreadable)
        if found is None:
            return None
        step, restored = found
        return (step, restored['state'], _own_data_state(restored['data'], step), restored['config'])

    def _set_aside(self, steps: list[int]) -> None:
        if jax.process_index() == 0:
            aside = self.directory.parent / 'corrupt_checkpoints'
            aside.mkdir(exist_ok=True)
            for step in steps:
                target = aside / f'{step}-{int(time.time())}'
                shutil.move(str(self.directory / str(step)), target)
                log.warning('moved unreadable checkpoint step %d to %s', step, target)
        if jax.process_count() > 1:
            # Nobody reloads the step list before process 0 has moved the steps away.
            multihost_utils.sync_global_devices('fewshot_jax set aside checkpoints')
        self.manager.reload()

    def wait(self) -> None:
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()


@contextlib.contextmanager
def _interrupt_after():
    """Holds a Ctrl-C (or a SIGTERM) that arrives inside the block until the block has run to
    its end.

    Orbax starts an asynchronous save by creating its writer thread and then starting it;
    a KeyboardInterrupt between the two leaves a thread that closing the manager cannot
    join, and the run would end in a traceback instead of saying where it stopped. Only
    signals whose handler raises KeyboardInterrupt are held (``signals.interrupting_signals``).
    """
    handlers = {s: signal.getsignal(s) for s in signals.interrupting_signals()}
    received = []
    for signum in handlers:
        signal.signal(signum, lambda signum, frame: received.append((signum, frame)))
    try:
        yield
    finally:
        for signum, handler in handlers.items():
            signal.signal(signum, handler)
    if received:
        signum, frame = received[0]
        handlers[signum](signum, frame)  # raises KeyboardInterrupt, as it would have


def _gather_data_states(data_state: dict) -> dict:
    """This process's iterator state, or on several processes all of them, in process order."""
    if jax.process_count() == 1:
        return data_state
    states = sharding.process_allgather_bytes(json.dumps(data_state).encode())
    return {'process_count': len(states), 'per_process': [json.loads(s) for s in states]}


def _own_data_state(saved: dict, step: int) -> dict:
    """This process's iterator state from a checkpoint's ``data`` item.

    A one-process checkpoint holds one state, and a job resumes from it on any
    number of processes: the pipelines count positions in global batches, so
    every process is at the same one. States of several processes are taken
    per process when the count matches, or shared when they are all equal.
    """
    if not (isinstance(saved, dict) and set(saved) == {'process_count', 'per_process'}):
        return saved
    states = saved['per_process']
    if len(states) == jax.process_count():
        return states[jax.process_index()]
    if all(s == states[0] for s in states):
        return states[0]
    raise CheckpointError(
        f'checkpoint step {step} holds different data-iterator states for {len(states)} '
        f'processes, and this job has {jax.process_count()}: resume it with {len(states)} '
        f'processes'
    )


def save_encoder(
    workdir: str | os.PathLike, variables, model_config: dict, step: int, folder: str = ENCODER_DIR
) -> Path:
    """Writes the encoder's variables and how to rebuild it to ``workdir/<folder>``.

    Args:
        variables: ``{'params': ..., 'batch_stats': ...}`` of the ResNet alone.
        model_config: ``config.model`` as a dict (depth, width, variant, …).
        step: the training step these weights come from.
        folder: ``ENCODER_DIR`` (the finished encoder) or ``INIT_ENCODER_DIR`` (step 0).
    """
    path = Path(workdir).absolute() / folder
    checkpointer = ocp.StandardCheckpointer()
    checkpointer.save(encoder_variables_path(workdir, folder), variables, force=True)
    checkpointer.wait_until_finished()
    if jax.process_index() == 0:
        # Checked by every reader (models/weights/workdir.py): a damaged export is an error
        # naming the file, never an encoder with wrong weights.
        digest = integrity.sha256_folder(encoder_variables_path(workdir, folder))
        meta = integrity.seal({'model': model_config, 'step': int(step), 'sha256': {'variables': digest}})
        encoder_meta_path(workdir, folder).write_text(json.dumps(meta, indent=2))
        log.info('exported the encoder of step %d to %s', step, path)
    return path


def first_readable(
    steps, read: Callable[[int], Any], where: str, is_damage: Callable[[Exception], bool] = lambda err: True
):
    """The first step of ``steps`` that ``read`` can read: the one damaged-step policy.

    Steps whose read raises an error that ``is_damage`` accepts are skipped with a
    warning (newest first, so a run falls back to the previous checkpoint); other
    errors propagate.

    Returns:
        ``((step, value) or None, [unreadable steps])``.
    """
    unreadable = []
    for step in steps:
        try:
            return (step, read(step)), unreadable
        except Exception as err:  # noqa: BLE001 - any damaged step falls back
            if not is_damage(err):
                raise
            log.warning(
                'checkpoint step %d in %s is unreadable (%s: %s); trying the previous one',
                step,
                where,
                type(err).__name__,
                str(err)[:300],
            )
            unreadable.append(step)
    return None, unreadable


def checkpoint_steps(workdir: str | os.PathLike) -> list[int]:
    """A workdir's completed checkpoint steps, ascending (orbax's temporary folders excluded)."""
    folder = Path(workdir) / CHECKPOINT_DIR
    if not folder.is_dir():
        return []
    return sorted(int(p.name) for p in folder.iterdir() if p.is_dir() and p.name.isdigit())


def encoder_meta_path(workdir: str | os.PathLike, folder: str = ENCODER_DIR) -> Path:
    """``workdir/<folder>/encoder.json``: the encoder's model config and step (``encoder/``: the
    finished encoder; ``encoder_init/``: the weights the run started from)."""
    return Path(workdir) / folder / ENCODER_META


def encoder_variables_path(workdir: str | os.PathLike, folder: str = ENCODER_DIR) -> Path:
    """Where :func:`save_encoder` writes the finished encoder's arrays."""
    return Path(workdir).absolute() / folder / 'variables'


def checkpoint_item_path(workdir: str | os.PathLike, step: int, item: str) -> Path:
    """The folder of one item (``'state'``, ``'data'``, ``'config'``) of checkpoint ``step``."""
    return Path(workdir).absolute() / CHECKPOINT_DIR / str(step) / item


def read_config_item(folder: Path) -> Any:
    """A checkpoint's JSON ``config`` item (written by :meth:`RunCheckpointer.save`)."""
    return ocp.Checkpointer(ocp.JsonCheckpointHandler()).restore(folder)


def restore_numpy(path: Path, collections: dict) -> dict:
    """Restores the subtrees named in ``collections`` from an array checkpoint as numpy.

    Numpy arrays need no devices, so a checkpoint written on 8 GPUs opens on a laptop.

    Args:
        path: an orbax PyTree folder (``encoder/variables`` or ``checkpoints/<step>/state``).
        collections: the metadata subtrees to read, e.g. ``{'params': {...}}``; build it
            from :func:`array_metadata`.
    """
    # The handler, not a Checkpointer: it reads the array tree without looking for
    # step-level metadata files (which sit one folder up and would log warnings).
    handler = ocp.PyTreeCheckpointHandler()
    item = jax.tree.map(lambda m: np.zeros(m.shape, m.dtype), collections)
    restore_args = jax.tree.map(lambda m: ocp.RestoreArgs(restore_type=np.ndarray), collections)
    try:
        return handler.restore(
            path, args=ocp.args.PyTreeRestore(item=item, restore_args=restore_args, partial_restore=True)
        )
    finally:
        handler.close()


def array_metadata(path: Path) -> Any:
    """The tree of shapes and dtypes stored in an orbax PyTree folder."""
    handler = ocp.PyTreeCheckpointHandler()
    try:
        metadata = handler.metadata(path)
    finally:
        handler.close()
    return getattr(metadata, 'tree', metadata)
