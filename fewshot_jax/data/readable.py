"""Every file of a folder source read once before training: unreadable files listed, never dropped silently.

`data.on_unreadable` chooses what an unreadable file does: 'error' (the default) stops with
one line listing all of them, 'skip' trains without them and says so on the console.
"""

from __future__ import annotations

import logging
import os
import pathlib

from fewshot_jax.data.io import DataError

logger = logging.getLogger(__name__)

UNREADABLE = '(unreadable)'
ON_UNREADABLE = ('error', 'skip')
MAX_LISTED = 10


def check_on_unreadable(value) -> str:
    """Returns ``value`` if it is a valid ``data.on_unreadable``, else raises DataError."""
    if value not in ON_UNREADABLE:
        raise DataError(f'data.on_unreadable={value!r}: expected one of {ON_UNREADABLE}')
    return value


def check_readable(source, on_unreadable: str = 'error') -> list[pathlib.Path]:
    """Reads every record of a file source once and reports every unreadable file.

    Args:
      source: a file source of `sources.py` (``paths``, ``root``, ``skipped``,
        ``source[i]``, ``drop(indices)``).
      on_unreadable: 'error' raises a DataError listing them all ('3 of 18 files
        unreadable: a.png (not a readable PNG image), ...'); 'skip' drops them from
        the source, counts them in ``source.skipped`` as '(unreadable)' and logs the same
        list as a warning (on the console). A source with no readable file is an error
        either way.

    Returns:
      The unreadable files that were skipped; empty when every file reads.
    """
    check_on_unreadable(on_unreadable)
    bad = {}
    for index in range(len(source)):
        try:
            source[index]
        except DataError as err:
            bad[index] = _reason(err, source.paths[index])
    if not bad:
        return []
    shown = [
        f'{os.path.relpath(source.paths[i], source.root)} ({why})'
        for i, why in list(bad.items())[:MAX_LISTED]
    ]
    more = f', and {len(bad) - MAX_LISTED} more' if len(bad) > MAX_LISTED else ''
    summary = f'{source.root}: {len(bad)} of {len(source)} files unreadable: {", ".join(shown)}{more}'
    if on_unreadable == 'error' or len(bad) == len(source):
        raise DataError(
            f"{summary}; repair or remove them, or set data.on_unreadable='skip' to go on without them"
        )
    logger.warning('%s; skipped (data.on_unreadable=%r)', summary, on_unreadable)
    removed = [source.paths[i] for i in bad]
    source.drop(sorted(bad))
    source.skipped = dict(sorted({**source.skipped, UNREADABLE: len(bad)}.items()))
    return removed


def _reason(err: DataError, path: pathlib.Path) -> str:
    """A DataError's message without the file name it starts with (the list names the file)."""
    text = str(err)
    for prefix in (f'{path}: ', f'{path.name}: '):
        text = text.removeprefix(prefix)
    return text.splitlines()[0] if text else type(err).__name__
