"""The task registry: ``config.task`` name → ``fn(config, workdir) -> summary``.

``launch.py``, the tests and the workflow all dispatch through :func:`run`.
Task modules are imported lazily (``'module:function'`` strings), so naming a
task costs nothing and JAX starts only after ``jax.distributed.initialize()``.
A new task is one line in ``_TASKS``.
"""

from __future__ import annotations

import importlib
import os
from typing import Any, Callable


class UnknownTaskError(ValueError):
    """``config.task`` names no registered task."""


_TASKS: dict[str, str] = {
    'pretrain': 'fewshot_jax.pretrain.task:train_ssl',
    'probe': 'fewshot_jax.probe.task:run_probe',
    'segment': 'fewshot_jax.segment.task:run_segment',
    'select': 'fewshot_jax.select.task:run_select',
    'workflow': 'fewshot_jax.workflow:run_workflow',
}


def names() -> list[str]:
    """The registered task names, sorted."""
    return sorted(_TASKS)


def get(name: str) -> Callable[[Any, str | os.PathLike], dict]:
    """The task function registered as ``name`` (imports its module)."""
    if name not in _TASKS:
        raise UnknownTaskError(f'config.task={name!r}: expected one of {names()}')
    module, function = _TASKS[name].split(':')
    return getattr(importlib.import_module(module), function)


def run(name: str, config, workdir: str | os.PathLike) -> dict:
    """Runs task ``name`` with ``config`` in ``workdir`` and returns its summary.

    Log records of INFO and above also go to ``workdir/log.txt`` while it runs.
    """
    task = get(name)
    from fewshot_jax.train_lib.run_log import log_to_file  # imports jax: only when a task runs

    with log_to_file(workdir):
        return task(config, workdir)
