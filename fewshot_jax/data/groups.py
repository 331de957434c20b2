"""Which images derive from one original: group ids for grouped splits (``data/splits.py``).

Two ways to know:

* ``groups.csv`` in the root of a class-folder data set: rows ``file,group`` (an optional
  header row ``file,group``), ``file`` relative to the root (``singular/a_1.jpg``). Images
  not listed are groups of their own. Any class-folder source reads it.
* The nanowire release's rotation names: the paper's preprocessing notebook wrote the
  90°, 180° and 270° rotations of ``<stem>.jpg`` as ``<stem>_1.jpg``, ``<stem>_2.jpg`` and
  ``<stem>_3.jpg`` beside it (the singular class: 25 originals, 75 rotations). A file
  ``<base>_<1|2|3><ext>`` joins the group of ``<base><ext>`` when that file sits in the same
  folder; the rule repeats, so ``a_1_2.jpg`` joins ``a_1.jpg``'s group, which is ``a.jpg``'s.

Group ids are strings (the original's path relative to the root), one per image in the
source's order.
"""

from __future__ import annotations

import csv
import pathlib
import re
from collections.abc import Sequence

import numpy as np

from fewshot_jax.data.io import DataError

GROUPS_FILE = 'groups.csv'
_ROTATION = re.compile(r'^(?P<base>.+)_[123]$')


def read_groups_csv(root: pathlib.Path, paths: Sequence[pathlib.Path]) -> np.ndarray | None:
    """The group of every image in ``paths`` from ``root/groups.csv``, or None without the file.

    Raises:
        DataError: a row naming a file that is not among the images, a file given two
            different groups, or a row that is not ``file,group``.
    """
    path = pathlib.Path(root) / GROUPS_FILE
    if not path.is_file():
        return None
    relative = [_relative(p, root) for p in paths]
    known = set(relative)
    assigned: dict[str, str] = {}
    with open(path, newline='') as f:
        for line_no, row in enumerate(csv.reader(f), start=1):
            if not row or (line_no == 1 and [c.strip().lower() for c in row] == ['file', 'group']):
                continue
            if len(row) != 2 or not row[0].strip() or not row[1].strip():
                raise DataError(f'{path}:{line_no}: {row!r}; expected two columns, file,group')
            name, group = pathlib.PurePosixPath(row[0].strip()).as_posix(), row[1].strip()
            if name not in known:
                raise DataError(
                    f'{path}:{line_no}: {name!r} is not an image of this data set; expected a '
                    f'path relative to {root} such as {relative[0]!r}'
                )
            if assigned.get(name, group) != group:
                raise DataError(
                    f'{path}:{line_no}: {name!r} is given group {group!r} and, earlier, '
                    f'{assigned[name]!r}; expected one group per file'
                )
            assigned[name] = group
    # Unlisted images are groups of their own (their path cannot clash with a listed group
    # name that is not a path, and a listed name that is a path means the same original).
    return np.asarray([assigned.get(name, name) for name in relative], dtype=object)


def rotation_groups(root: pathlib.Path, paths: Sequence[pathlib.Path]) -> np.ndarray:
    """Group ids joining ``<stem>_1/_2/_3`` to ``<stem>`` in the same folder (module docstring)."""
    present = {(p.parent, p.stem, p.suffix) for p in map(pathlib.Path, paths)}
    groups = []
    for p in map(pathlib.Path, paths):
        stem = p.stem
        while (match := _ROTATION.match(stem)) and (p.parent, match['base'], p.suffix) in present:
            stem = match['base']
        groups.append(_relative(p.parent / f'{stem}{p.suffix}', root))
    return np.asarray(groups, dtype=object)


def _relative(path: pathlib.Path, root: pathlib.Path) -> str:
    try:
        return pathlib.Path(path).relative_to(root).as_posix()
    except ValueError:
        return pathlib.Path(path).as_posix()
