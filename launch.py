"""Entry point: ``python launch.py --config=configs/barlow_tem.py --workdir=runs/bt_tem``.

``--config`` names an experiment file (``:demo`` selects its CPU preset) and
``--config.a.b=value`` overrides any field. The config's ``task`` picks the job.
Multi-host runs (SLURM, Open MPI, Cloud TPU, or an explicit
``JAX_COORDINATOR_ADDRESS``) call ``jax.distributed.initialize()`` first.
"""

from __future__ import annotations

import logging
import os
import sys

from absl import app, flags
from absl import logging as absl_logging
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file('config', None, 'Experiment config file.',
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string('workdir', None, 'Folder for checkpoints, metrics and outputs.')
_MULTIHOST = flags.DEFINE_enum('multihost', 'auto', ['auto', 'yes', 'no'],
                               'Call jax.distributed.initialize(): auto-detect, force or skip.')
flags.mark_flags_as_required(['config', 'workdir'])


def _multihost_environment() -> bool:
    """True when the environment describes a job spanning several processes."""
    env = os.environ
    if env.get('JAX_COORDINATOR_ADDRESS'):
        return True
    for key in ('SLURM_NTASKS', 'OMPI_COMM_WORLD_SIZE'):
        if int(env.get(key, '1') or '1') > 1:
            return True
    return ',' in env.get('TPU_WORKER_HOSTNAMES', '')


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f'unexpected arguments: {argv[1:]}')
    logging.getLogger().setLevel(logging.INFO)
    if not flags.FLAGS['verbosity'].present:
        # A quiet console: progress bars, warnings, errors and the summary. Library INFO
        # lines (orbax, absl, grain) still go to workdir/log.txt; --verbosity=1 shows them.
        absl_logging.get_absl_handler().setLevel(logging.WARNING)
    if _MULTIHOST.value == 'yes' or (_MULTIHOST.value == 'auto' and _multihost_environment()):
        import jax
        jax.distributed.initialize()
    config = _CONFIG.value
    # The registry imports task modules lazily: jax starts after distributed init.
    from fewshot_jax import tasks

    try:
        summary = tasks.run(config.task, config, _WORKDIR.value)
    except Exception as err:
        # The project's own error types carry a complete message (file, key, value,
        # what was expected): show it without a traceback. Anything else is a bug
        # and keeps its traceback.
        if type(err).__module__.startswith('fewshot_jax'):
            sys.exit(f'error: {err}')
        raise
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
        print(f"next: {summary['next']}")


if __name__ == '__main__':
    app.run(main)
