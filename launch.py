"""Entry point: ``python launch.py --config=configs/barlow_tem.py --workdir=runs/bt_tem``.

``--config`` names an experiment file (``:demo`` selects its CPU preset) and
``--config.a.b=value`` overrides any field. The config's ``task`` picks the job.
Multi-host runs (SLURM, Open MPI, Cloud TPU, an explicit ``JAX_COORDINATOR_ADDRESS``,
or ``--coordinator_address`` with ``--num_processes`` and ``--process_id``) call
``jax.distributed.initialize()`` first, then check that every process got the same
config and workdir (docs/multihost.md).
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import traceback
from pathlib import Path

from absl import app, flags
from absl import logging as absl_logging
from ml_collections import config_flags

from fewshot_jax import first_run
from fewshot_jax.launch_errors import (
    DropClosedLoopTracebacks,
    check_workdir_writable,
    error_line,
    flag_error_line,
)
from fewshot_jax.train_lib import signals
from fewshot_jax.train_lib.xla_setup import prefer_eigen_convolutions_on_cpu

# Before any jax import (XLA reads XLA_FLAGS once): on CPU, Eigen's weight-gradient
# convolutions make a training step ~0.7x as long (benchmarks/RESULTS.md); a user's own
# setting of the flag wins.
prefer_eigen_convolutions_on_cpu()

_CONFIG = config_flags.DEFINE_config_file('config', None, 'Experiment config file.', lock_config=True)
_WORKDIR = flags.DEFINE_string('workdir', None, 'Folder for checkpoints, metrics and outputs.')
_MULTIHOST = flags.DEFINE_enum(
    'multihost',
    'auto',
    ['auto', 'yes', 'no'],
    'Call jax.distributed.initialize(): auto-detect, force or skip.',
)
_COORDINATOR = flags.DEFINE_string(
    'coordinator_address',
    None,
    'host:port of the coordinator (process 0) of a multi-process '
    'job; default: $JAX_COORDINATOR_ADDRESS, or what SLURM / Open MPI / Cloud TPU provide.',
)
_NUM_PROCESSES = flags.DEFINE_integer('num_processes', None, 'Processes in the job (default: auto-detected).')
_PROCESS_ID = flags.DEFINE_integer(
    'process_id', None, "This process's index, 0..num_processes-1 (default: auto-detected)."
)
_COORDINATOR_TIMEOUT = flags.DEFINE_integer(
    'coordinator_timeout',
    300,
    'Seconds to wait for every process to join the job; then '
    'stop with an error (a coordinator that never answers, a process that never started).',
)
_HEARTBEAT_TIMEOUT = flags.DEFINE_integer(
    'heartbeat_timeout',
    100,
    'Seconds without a heartbeat after which a process counts as '
    'dead and every other process of the job stops.',
)
_SHUTDOWN_TIMEOUT = flags.DEFINE_integer(
    'shutdown_timeout', 300, 'Seconds a finishing (or failing) process waits for the others at exit.'
)
# --workdir defaults to runs/<config>[_<preset>] (fewshot_jax/first_run.py).
flags.mark_flags_as_required(['config'])

# Exit status of a job that did not assemble within --coordinator_timeout.
EXIT_NO_COORDINATOR = 3
# Exit status of a run stopped by Ctrl-C (128 + SIGINT), as shells report it.
EXIT_INTERRUPTED = 130


def parse_flags(argv: list[str]) -> list[str]:
    """absl's flag parsing, with an unusable config file, preset or key as one line.

    ``--config=configs/x.py:demoo`` and ``--config.optim.lrr=0.1`` fail inside flag
    parsing, before ``main``: they get the same ``error: ...`` line and exit status 1.
    """
    try:
        rest = flags.FLAGS(argv)
        # A config file that failed to load surfaces only on first use of the config.
        if flags.FLAGS['config'].value is not None:
            flags.FLAGS['config'].value.get('task')
        return rest
    except Exception as err:  # noqa: BLE001 - mapped to one line or re-raised below
        line = flag_error_line(err, argv)
        if line is None:
            raise
        sys.stderr.write(line + '\n')
        sys.exit(1)


def _exit_with_one_line(err: BaseException, workdir: str, verbose: bool) -> None:
    """The one error path: a known error becomes one ``error: ...`` line on stderr.

    The project's error types, ``OSError``s of the workdir (full disk, read-only, no
    permission), Ctrl-C and SIGTERM print one line and exit with 1 (130 for Ctrl-C, 143 for
    SIGTERM); the traceback is in ``workdir/log.txt`` (``--verbosity=1`` also prints it).
    Anything else is a bug and keeps its traceback.
    """
    line = error_line(err, workdir)
    if line is None:
        raise err
    if verbose:
        traceback.print_exception(err, file=sys.stderr)
    sys.stderr.write(line + '\n')
    sys.stderr.flush()
    sys.stdout.flush()
    code = 1
    if isinstance(err, KeyboardInterrupt):
        code = signals.EXIT_TERMINATED if signals.sigterm_received() else EXIT_INTERRUPTED
    jax = sys.modules.get('jax')
    if jax is not None and jax.process_count() > 1:
        sys.exit(code)  # the other processes of the job learn of the exit at shutdown
    # Background writers of a failed save (orbax's threads) would otherwise print their own
    # errors while the interpreter shuts down; everything this run wrote is closed by now.
    logging.shutdown()
    os._exit(code)


def _multihost_environment() -> bool:
    """True when the environment describes a job spanning several processes."""
    env = os.environ
    if env.get('JAX_COORDINATOR_ADDRESS'):
        return True
    for key in ('SLURM_NTASKS', 'OMPI_COMM_WORLD_SIZE'):
        if int(env.get(key, '1') or '1') > 1:
            return True
    return ',' in env.get('TPU_WORKER_HOSTNAMES', '')


def _wants_multihost() -> bool:
    if _MULTIHOST.value == 'no':
        return False
    explicit = any(f.value is not None for f in (_COORDINATOR, _NUM_PROCESSES, _PROCESS_ID))
    return _MULTIHOST.value == 'yes' or explicit or _multihost_environment()


def _start_distributed() -> None:
    """``jax.distributed.initialize`` with a bounded wait and an error that says what to check.

    JAX aborts the process (no Python exception) when the job does not assemble
    within its ``initialization_timeout``; a watchdog stops it a little earlier
    with a readable message instead.
    """
    import jax

    # Cross-process collectives on CPU (the default in recent JAX, explicit for older ones).
    jax.config.update('jax_cpu_collectives_implementation', 'gloo')
    timeout = _COORDINATOR_TIMEOUT.value
    where = _COORDINATOR.value or os.environ.get('JAX_COORDINATOR_ADDRESS') or 'the auto-detected address'
    who = (
        f'process {_PROCESS_ID.value} of {_NUM_PROCESSES.value}'
        if _PROCESS_ID.value is not None
        else 'this process'
    )

    def give_up():
        sys.stderr.write(
            f'error: the multi-process job did not assemble within --coordinator_timeout='
            f'{timeout}s: {who} waited for the coordinator at {where} and the other '
            f'processes. Check that process 0 runs and is reachable at that address (host and '
            f'port), that every process got the same --num_processes, and that all were '
            f'started.\n'
        )
        sys.stderr.flush()
        os._exit(EXIT_NO_COORDINATOR)

    watchdog = threading.Timer(timeout, give_up)
    watchdog.daemon = True
    watchdog.start()
    try:
        jax.distributed.initialize(
            coordinator_address=_COORDINATOR.value,
            num_processes=_NUM_PROCESSES.value,
            process_id=_PROCESS_ID.value,
            initialization_timeout=timeout + 30,
            heartbeat_timeout_seconds=_HEARTBEAT_TIMEOUT.value,
            shutdown_timeout_seconds=_SHUTDOWN_TIMEOUT.value,
        )
    finally:
        watchdog.cancel()


def _check_job(config) -> None:
    """Every process got the same config and workdir; one line on each process's stderr."""
    import jax

    from fewshot_jax.train_lib import sharding

    sharding.check_same_on_all_processes(
        {'config': config.to_dict(), 'workdir': str(Path(_WORKDIR.value).absolute())}
    )
    sharding.connect_processes()
    n_proc, n_dev = jax.process_count(), jax.device_count()
    line = (
        f'multihost: process {jax.process_index()} of {n_proc}, '
        f'{jax.local_device_count()} local / {n_dev} global {jax.devices()[0].platform} '
        f'devices'
    )
    batch = config.get('data', {}).get('batch_size')
    if isinstance(batch, int):
        line += f', global batch {batch} ({batch / n_proc:g} per process, {batch / n_dev:g} per device)'
    print(line, file=sys.stderr, flush=True)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f'unexpected arguments: {argv[1:]}')
    logging.getLogger().setLevel(logging.INFO)
    verbose = flags.FLAGS['verbosity'].present
    if not verbose:
        # A quiet console: progress bars, warnings, errors and the summary. Library INFO
        # lines (orbax, absl, grain) still go to workdir/log.txt; --verbosity=1 shows them.
        console = absl_logging.get_absl_handler()
        console.setLevel(logging.WARNING)
        # Libraries logging through absl (orbax above all) report a failed background write
        # from every thread it touched; the one error that matters reaches main() and is
        # printed once. Their records still go to log.txt.
        console.addFilter(lambda record: record.name != 'absl' or record.levelno >= logging.CRITICAL)
        sys.stderr = DropClosedLoopTracebacks(sys.stderr)
    config = _CONFIG.value
    # A scheduler's SIGTERM stops the run as Ctrl-C does: the save in flight completes, one
    # line says where it stopped, and the same command resumes (train_lib/signals.py).
    signals.stop_on_sigterm()
    try:
        flags.FLAGS.workdir = first_run.prepare(config, flags.FLAGS['config'].config_filename, _WORKDIR.value)
        check_workdir_writable(flags.FLAGS.workdir)
        if _wants_multihost():
            _start_distributed()
            _check_job(config)
        # The registry imports task modules lazily: jax starts after distributed init.
        from fewshot_jax import tasks

        summary = tasks.run(config.task, config, _WORKDIR.value)
    except (Exception, KeyboardInterrupt) as err:
        _exit_with_one_line(err, _WORKDIR.value, verbose)
    _print_summary(config.task, _WORKDIR.value, summary)


def _print_summary(task: str, workdir: str, summary: dict) -> None:
    """A few lines on the terminal: what ran, the headline figures, what to do next."""
    import jax

    if jax.process_index() != 0:
        return
    print(f'{task} finished in {workdir}')
    for key, value in summary.items():
        if key != 'next':
            print(f'  {key}: {value:.4g}' if isinstance(value, float) else f'  {key}: {value}')
    if summary.get('next'):
        print(f'next: {summary["next"]}')


if __name__ == '__main__':
    app.run(main, flags_parser=parse_flags)
