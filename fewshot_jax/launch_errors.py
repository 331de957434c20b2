"""Every error a user can act on, as one line: what ``launch.py`` prints instead of a traceback.

``launch.py`` is the one error path. It hands each exception to :func:`error_line` (or,
for failures inside absl's flag parsing, :func:`flag_error_line`); a string comes back for
the errors a user can act on (the project's error types, a misspelled config key or
preset, a full or read-only disk, Ctrl-C), None for a bug, which keeps its traceback.

Imports nothing from JAX: launch.py imports this module before XLA is configured.
"""

from __future__ import annotations

import errno
import os
import re
import tempfile
import threading
from pathlib import Path

# errno values that mean "this folder cannot be written" rather than a bug.
_NOT_WRITABLE = {errno.EROFS, errno.EACCES, errno.EPERM}
_FULL = {errno.ENOSPC, errno.EDQUOT}
_STEP_FOLDER = re.compile(r'^(?P<folder>.*/checkpoints)/(?P<step>\d+)(?:\.orbax-checkpoint-tmp[^/]*)?(?:/|$)')
_EXCEPTION_LINE = re.compile(r'^\s*(?:[\w.]+\.)?\w*(?:Error|Exception): (?P<message>.+)$')


class WorkdirNotWritableError(RuntimeError):
    """``--workdir`` (or the folder it would be created in) cannot be written."""


def check_workdir_writable(workdir: str | os.PathLike) -> None:
    """Raises WorkdirNotWritableError unless files can be created in ``workdir``.

    Nothing is created for a workdir that does not exist yet (a config error must not
    leave an empty workdir behind): the nearest existing folder above it is tested
    instead. The test writes a file rather than asking ``os.access``, which says yes to
    root on a read-only file system.
    """
    path = Path(workdir).absolute()
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise WorkdirNotWritableError(f'workdir {workdir} is not writable ({existing} is not a folder)')
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as err:
        raise WorkdirNotWritableError(
            f'workdir {workdir} is not writable ({err.strerror}: {existing})'
        ) from None


def _chain(err: BaseException):
    """``err`` and every exception it was raised from or while handling, depth first."""
    seen, stack = set(), [err]
    while stack:
        current = stack.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        stack.extend(getattr(current, 'exceptions', ()) or ())
        stack.extend([current.__context__, current.__cause__])


def _is_project_error(err: BaseException) -> bool:
    return type(err).__module__.startswith('fewshot_jax')


def _checkpoint_steps(folder: Path) -> list[int]:
    if not folder.is_dir():
        return []
    return sorted(int(p.name) for p in folder.iterdir() if p.is_dir() and p.name.isdigit())


def _full_disk_line(filename: str) -> str:
    match = _STEP_FOLDER.match(filename)
    if match is None:
        return f'no space left on device writing {filename}; free space and rerun (finished steps are kept)'
    folder, step = Path(match['folder']), int(match['step'])
    done = [s for s in _checkpoint_steps(folder) if s < step]
    resume = f'resume from step {done[-1]}' if done else 'start again from step 0'
    return f'no space left on device writing {folder / str(step)}; free space and rerun to {resume}'


def _os_error_line(err: OSError, workdir: str | os.PathLike | None) -> str | None:
    filename = os.fsdecode(err.filename) if err.filename is not None else None
    if err.errno in _FULL:
        return _full_disk_line(filename or str(workdir))
    inside = (
        filename is not None
        and workdir is not None
        and Path(filename).absolute().is_relative_to(Path(workdir).absolute())
    )
    if err.errno in _NOT_WRITABLE and (inside or filename is None):
        where = f': {filename}' if filename else ''
        return f'workdir {workdir} is not writable ({err.strerror}{where})'
    if filename is not None:
        return f'{filename}: {err.strerror or err}'
    return None


def error_line(err: BaseException, workdir: str | os.PathLike | None = None) -> str | None:
    """The one line (``error: ...``) for an error a user can act on, or None for a bug.

    Args:
        err: what ``main`` caught (an ``Exception`` or ``KeyboardInterrupt``).
        workdir: the run's ``--workdir``, to tell its file-system errors from others.
    """
    if isinstance(err, KeyboardInterrupt):
        # The training loop says where it stopped; elsewhere finished stages are kept.
        message = (
            str(err)
            or 'interrupted; rerun the same command to resume (finished stages and checkpoints are kept)'
        )
        return f'error: {message}'
    if _is_project_error(err):
        return f'error: {err}'
    for cause in _chain(err):
        if isinstance(cause, OSError):
            line = _os_error_line(cause, workdir)
            if line is not None:
                return f'error: {line}'
    for cause in _chain(err):
        if _is_project_error(cause):
            return f'error: {cause}'
    return None


def _override_keys(argv: list[str]) -> list[str]:
    keys = []
    for arg in argv[1:]:
        name = arg.lstrip('-').split('=', 1)[0]
        if arg.startswith('-') and name.startswith('config.'):
            keys.append(name.removeprefix('config.'))
    return keys


def _did_you_mean_line(err: BaseException, argv: list[str]) -> str | None:
    """An unknown override key from ml_collections' own message (``'lrr' Did you mean "lr"``)."""
    text = str(err.args[0] if err.args else err)
    named = re.match(r"^\W*'?(?P<key>[\w-]+)'?", text)
    if named is None:
        return None
    suggested = re.search(r'Did you mean "(?P<close>[\w-]+)"', text)
    for key in _override_keys(argv):
        parts = key.split('.')
        if named['key'] in parts:
            at = parts.index(named['key'])
            hint = ''
            if suggested:
                hint = f' (did you mean {".".join(parts[:at] + [suggested["close"]] + parts[at + 1 :])}?)'
            return f'error: unknown config key {key}{hint}'
    return None


def _config_file_line(text: str) -> str | None:
    """A config file that could not be loaded (ml_collections folds the reason into its text)."""
    missing = re.search(r"\[Errno \d+\] (?P<why>[^:]+): '(?P<path>[^']+)'", text)
    if missing:
        return f'error: config file {missing["path"]}: {missing["why"]}'
    if 'Error whilst parsing config file' in text:
        # The config file's own exception (an unknown preset) is the last exception line
        # of the traceback that absl folds into its message.
        flag = text.split(': Error whilst parsing config file', 1)[0].removeprefix('flag ')
        reasons = [m['message'] for m in map(_EXCEPTION_LINE.match, text.splitlines()) if m]
        return f'error: {flag}: {reasons[-1] if reasons else "the config file cannot be loaded"}'
    return None


def flag_error_line(err: BaseException, argv: list[str]) -> str | None:
    """The one line for a failure inside absl's flag parsing, or None for a bug.

    Args:
        err: raised by ``flags.FLAGS(argv)`` or by the first use of the parsed config.
        argv: the command line.
    """
    if isinstance(err, (KeyError, AttributeError)):
        return _did_you_mean_line(err, argv)
    text = str(err)
    line = _config_file_line(text)
    if line is not None:
        return line
    if type(err).__module__.startswith('absl'):
        return f'error: {text.splitlines()[0] if text else type(err).__name__}'
    return None


class DropClosedLoopTracebacks:
    """Wraps ``sys.stderr``, dropping the tracebacks of a closed asyncio loop's late callbacks.

    After a failed asynchronous checkpoint write, orbax closes its event loop while
    tensorstore still completes the writes in flight; their callbacks then fail with
    ``RuntimeError: Event loop is closed``, printed from C (no logger to filter) once per
    array. They say nothing beyond the one error the run stops with. Every other text, other
    tracebacks included, passes through unchanged.
    """

    _START = 'Traceback (most recent call last):'
    _NOISE = 'RuntimeError: Event loop is closed'

    def __init__(self, stream):
        self._stream = stream
        # Per thread: several threads print their tracebacks at once, interleaved.
        self._held: dict[int, str] = {}

    def write(self, text: str) -> int:
        thread = threading.get_ident()
        held = self._held.pop(thread, '')
        if not held and not text.startswith(self._START):
            return self._stream.write(text)
        lines = (held + text).split('\n')
        # The traceback ends at its first complete line that is not indented: the exception.
        for index in range(1, len(lines) - 1):
            if not lines[index].startswith(' '):
                if lines[index] != self._NOISE:
                    self._stream.write('\n'.join(lines[: index + 1]) + '\n')
                rest = '\n'.join(lines[index + 1 :])
                if rest:
                    self.write(rest)
                return len(text)
        self._held[thread] = held + text
        return len(text)

    def flush(self) -> None:
        self._stream.flush()

    def __getattr__(self, name):
        return getattr(self._stream, name)
