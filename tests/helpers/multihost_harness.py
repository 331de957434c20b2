"""Multi-process jobs on localhost for the tests, and the worker of the data check.

A job is several ``launch.py`` processes (or workers of this file) started
together, each with its own fake CPU devices, talking through
``jax.distributed`` (coordinator on 127.0.0.1) and gloo collectives. Every
wait is bounded; a job that fails or overruns is killed whole and its
processes' logs are put in the error.

Run as a script, this file is the data-check worker::

    python tests/helpers/multihost_harness.py data --coordinator=127.0.0.1:PORT \
        --num_processes=2 --process_id=0 --out=ids.0.json
"""

from __future__ import annotations

import dataclasses
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

# The data check's source: DATA_IMAGES constant images (image i has the value i), read
# in global batches of DATA_BATCH rows.
DATA_IMAGES, DATA_BATCH = 48, 8


def free_port() -> int:
    """A TCP port nobody listens on right now (the OS picks it)."""
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def process_env(devices: int) -> dict:
    """The environment of one process: ``devices`` fake CPU devices, unbuffered output.

    The test session's other XLA flags and its persistent compilation cache
    (tests/conftest.py) are inherited, so later jobs reuse earlier jobs' executables.
    """
    env = dict(os.environ)
    env.update(
        XLA_FLAGS=with_device_count(env.get('XLA_FLAGS', ''), devices),
        JAX_PLATFORMS='cpu',
        PYTHONUNBUFFERED='1',
    )
    return env


def with_device_count(xla_flags: str, devices: int) -> str:
    """``xla_flags`` with its fake CPU device count set to ``devices`` (other flags kept)."""
    kept = [f for f in xla_flags.split() if not f.startswith('--xla_force_host_platform_device')]
    return ' '.join(kept + [f'--xla_force_host_platform_device_count={devices}'])


class JobError(AssertionError):
    """A job failed or overran; the message holds every process's log."""


@dataclasses.dataclass
class Finished:
    """One process's end: exit status, when it ended (time.monotonic) and its output."""

    returncode: int
    ended: float
    output: str


class Job:
    """Processes started together; logs go to ``log_dir/<name>.<i>.log``.

    Args:
        commands: one argv per process.
        env: the environment of every process.
        log_dir: where the logs go.
        name: a label for the logs and errors.
    """

    def __init__(self, commands: list[list[str]], env: dict, log_dir: Path, name: str):
        self.name = name
        self.logs = [Path(log_dir) / f'{name}.{i}.log' for i in range(len(commands))]
        self.procs = []
        for command, log in zip(commands, self.logs, strict=True):
            with log.open('w') as out:
                self.procs.append(
                    subprocess.Popen(command, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT)
                )
        self.started = time.monotonic()
        self._ended: dict[int, float] = {}

    def output(self, i: int) -> str:
        return self.logs[i].read_text(errors='replace')

    def all_output(self) -> str:
        return '\n'.join(
            f'----- {self.name} process {i} (exit {p.poll()}) -----\n{self.output(i)[-6000:]}'
            for i, p in enumerate(self.procs)
        )

    def kill(self, i: int | None = None) -> None:
        """SIGKILLs process ``i`` (or every process still running) by its id."""
        for j, proc in enumerate(self.procs):
            if (i is None or i == j) and proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
                proc.wait()

    def poll_ends(self) -> None:
        for i, proc in enumerate(self.procs):
            if i not in self._ended and proc.poll() is not None:
                self._ended[i] = time.monotonic()

    def wait(self, timeout: float, *, ok: bool = True) -> list[Finished]:
        """Waits for every process; kills all of them after ``timeout`` seconds.

        Args:
            ok: also require exit status 0 from every process.

        Raises:
            JobError: on a timeout, or (with ``ok``) a failed process, with all logs.
        """
        deadline = time.monotonic() + timeout
        while any(p.poll() is None for p in self.procs):
            self.poll_ends()
            if time.monotonic() > deadline:
                self.kill()
                raise JobError(
                    f'{self.name}: still running after {timeout:.0f}s; killed\n{self.all_output()}'
                )
            time.sleep(0.05)
        self.poll_ends()
        done = [Finished(p.returncode, self._ended[i], self.output(i)) for i, p in enumerate(self.procs)]
        if ok and any(f.returncode for f in done):
            raise JobError(f'{self.name}: a process failed\n{self.all_output()}')
        return done

    def wait_for(self, condition, timeout: float, what: str) -> None:
        """Polls ``condition()`` while every process runs; kills the job if it never holds."""
        deadline = time.monotonic() + timeout
        while not condition():
            if any(p.poll() is not None for p in self.procs):
                self.kill()
                raise JobError(f'{self.name}: a process ended before {what}\n{self.all_output()}')
            if time.monotonic() > deadline:
                self.kill()
                raise JobError(f'{self.name}: no {what} after {timeout:.0f}s; killed\n{self.all_output()}')
            time.sleep(0.05)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.kill()


def launch_command(workdir: Path, config: str, overrides: dict, **flags) -> list[str]:
    """``python launch.py --config=... --workdir=... --config.k=v ... --flag=v ...``."""
    return (
        [sys.executable, str(REPO / 'launch.py'), f'--config={config}', f'--workdir={workdir}']
        + [f'--config.{k}={v}' for k, v in overrides.items()]
        + [f'--{k}={v}' for k, v in flags.items()]
    )


def launch_job(
    workdir: Path,
    config: str,
    overrides: dict,
    log_dir: Path,
    name: str,
    *,
    processes: int = 2,
    devices: int = 2,
    per_process: dict | None = None,
    **flags,
) -> Job:
    """Starts ``launch.py`` as ``processes`` processes of one job (one process: no multihost).

    Args:
        per_process: ``{process_id: {override: value}}`` extra config overrides of one
            process (to start a job with differing configs).
        flags: more ``launch.py`` flags (``heartbeat_timeout``, …).
    """
    env = process_env(devices)
    if processes == 1:
        if 'coordinator_address' not in flags:
            flags['multihost'] = 'no'
        return Job([launch_command(workdir, config, overrides, **flags)], env, log_dir, name)
    port = free_port()
    commands = []
    for i in range(processes):
        mine = {**overrides, **(per_process or {}).get(i, {})}
        commands.append(
            launch_command(
                workdir,
                config,
                mine,
                coordinator_address=f'127.0.0.1:{port}',
                num_processes=processes,
                process_id=i,
                **flags,
            )
        )
    return Job(commands, env, log_dir, name)


def data_job(out_dir: Path, log_dir: Path, processes: int = 2) -> Job:
    """Starts the data-check worker (below) as ``processes`` processes of one job."""
    port = free_port()
    commands = [
        [
            sys.executable,
            str(Path(__file__).resolve()),
            'data',
            f'--coordinator=127.0.0.1:{port}',
            f'--num_processes={processes}',
            f'--process_id={i}',
            f'--out={out_dir / f"ids.{i}.json"}',
        ]
        for i in range(processes)
    ]
    return Job(commands, process_env(2), log_dir, 'data')


def index_source(n: int, reads: list | None = None):
    """An unlabeled source whose image ``i`` is the constant ``i/255``; records reads."""
    import numpy as np

    from fewshot_jax.data.arrays import ArraySource

    class Recording(ArraySource):
        def __getitem__(self, i):
            if reads is not None:
                reads.append(int(i))
            return super().__getitem__(i)

    return Recording(np.stack([np.full((8, 8), i / 255.0, np.float32) for i in range(n)]))


def batch_ids(batch) -> list[int]:
    """The source index of each row of a uint8 batch of :func:`index_source` images."""
    return [int(v) for v in batch[:, 0, 0, 0]]


def _data_worker(argv: list[str]) -> None:
    """Reads one epoch of the pretraining pipeline as process ``i`` of a real JAX job.

    Writes ``{'process', 'count', 'read', 'batches'}``: the source indices this process
    read and the ids of the rows it yielded per global batch, over one epoch.
    """
    import json

    args = dict(a.lstrip('-').split('=', 1) for a in argv)
    import jax

    jax.config.update('jax_cpu_collectives_implementation', 'gloo')
    jax.distributed.initialize(
        args['coordinator'],
        num_processes=int(args['num_processes']),
        process_id=int(args['process_id']),
        initialization_timeout=60,
        heartbeat_timeout_seconds=10,
        shutdown_timeout_seconds=30,
    )
    from fewshot_jax.data import pipeline

    reads = []
    spec = pipeline.PipelineSpec(
        image_size=8,
        global_batch=DATA_BATCH,
        seed=5,
        channels=1,
        num_threads=2,
        prefetch=2,
        cache_bytes=2**20,
    )
    dataset = pipeline.ssl_dataset(index_source(DATA_IMAGES, reads), spec)
    batches = [batch_ids(dataset[b]) for b in range(DATA_IMAGES // DATA_BATCH)]
    Path(args['out']).write_text(
        json.dumps(
            {'process': jax.process_index(), 'count': jax.process_count(), 'read': reads, 'batches': batches}
        )
    )


if __name__ == '__main__':
    if sys.argv[1:2] != ['data']:
        sys.exit(
            f'usage: {sys.argv[0]} data --coordinator=HOST:PORT --num_processes=N --process_id=I --out=FILE'
        )
    sys.path.insert(0, str(REPO))
    _data_worker(sys.argv[2:])
