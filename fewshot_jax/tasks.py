"""The task registry: ``config.task`` name → ``fn(config, workdir) -> summary``.

``launch.py``, the tests and the workflow all dispatch through :func:`run`.
Task modules are imported lazily (``'module:function'`` strings), so naming a
task costs nothing and JAX starts only after ``jax.distributed.initialize()``.
A new task is one line in ``_TASKS``.
"""

from __future__ import annotations

import importlib
import os
import traceback
from pathlib import Path
from typing import Any, Callable

from fewshot_jax.errors import ConfigError


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


def config_checker(name: str) -> Callable[[Any], None] | None:
    """The ``check_config(config)`` of task ``name``'s module (cheap, no data, no compiling),
    or None if it has none."""
    get(name)
    return getattr(importlib.import_module(_TASKS[name].split(':')[0]), 'check_config', None)


def run(name: str, config, workdir: str | os.PathLike) -> dict:
    """Runs task ``name`` with ``config`` in ``workdir`` and returns its summary.

    Log records of INFO and above also go to ``workdir/log.txt`` while it runs.
    """
    task = get(name)
    from fewshot_jax.train_lib.run_log import log_to_file  # imports jax: only when a task runs

    workdir_existed = Path(workdir).exists()
    try:
        with log_to_file(workdir) as log_path:
            try:
                return task(config, workdir)
            except BaseException:
                _append_traceback(log_path)
                raise
    except Exception as err:
        if _is_config_error(err) and not workdir_existed:
            _remove_if_only_log(Path(workdir))
        raise


def _is_config_error(err: Exception) -> bool:
    # AugmentConfigError, LoopConfigError, ...: every config error type is named so.
    return isinstance(err, ConfigError) or any(c.__name__.endswith('ConfigError') for c in type(err).__mro__)


def _append_traceback(log_path: str) -> None:
    """The traceback of the error being handled goes to ``log.txt`` (the console shows one line)."""
    try:
        with open(log_path, 'a') as f:
            f.write('the run stopped with this error:\n' + traceback.format_exc())
    except OSError:
        pass  # a full or read-only disk: the error itself says so on the console


def _remove_if_only_log(workdir: Path) -> None:
    """A config error leaves no workdir behind: the one this run created holds only its log."""
    if workdir.is_dir() and {p.name for p in workdir.iterdir()} <= {'log.txt'}:
        (workdir / 'log.txt').unlink(missing_ok=True)
        workdir.rmdir()
