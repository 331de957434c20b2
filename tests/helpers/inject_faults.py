"""Runs ``launch.py`` with operating-system faults injected (used by tests/test_faults.py).

``python tests/helpers/inject_faults.py [launch.py flags]``; the fault comes from the
environment:

- ``FAULT_ENOSPC=<text>``: every write-mode open (``open``, ``io.open``, ``os.open``)
  of a path containing ``<text>`` raises ``OSError(ENOSPC)``, as a full disk does.
- ``FAULT_EROFS=<text>``: the same with ``OSError(EROFS)``, as a read-only file system
  does (also for root, whom ``chmod`` does not stop).

The patch sits at the operating-system boundary (the file openers), not in project code.
"""

import builtins
import errno
import io
import os
import runpy
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def install(fragment: str, code: int) -> None:
    """Makes every write-mode open of a path containing ``fragment`` fail with ``code``."""
    real_open, real_os_open = builtins.open, os.open

    def _fault(path) -> OSError:
        return OSError(code, os.strerror(code), os.fspath(path))

    def hit(path) -> bool:
        return isinstance(path, (str, bytes, os.PathLike)) and fragment in os.fsdecode(path)

    def fake_open(file, mode='r', *args, **kwargs):
        if hit(file) and any(c in mode for c in 'wax+'):
            raise _fault(file)
        return real_open(file, mode, *args, **kwargs)

    def fake_os_open(path, flags, *args, **kwargs):
        if hit(path) and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
            raise _fault(path)
        return real_os_open(path, flags, *args, **kwargs)

    builtins.open = io.open = fake_open
    os.open = fake_os_open


if __name__ == '__main__':
    for name, code in (('FAULT_ENOSPC', errno.ENOSPC), ('FAULT_EROFS', errno.EROFS)):
        if os.environ.get(name):
            install(os.environ[name], code)
    sys.path.insert(0, str(REPO))
    sys.argv = [str(REPO / 'launch.py'), *sys.argv[1:]]
    runpy.run_path(str(REPO / 'launch.py'), run_name='__main__')
