"""SIGTERM stops a run as Ctrl-C does.

Batch schedulers (SLURM's preemption and time limit, Kubernetes) and ``kill`` end a job with
SIGTERM, and give it a grace period before SIGKILL. Python's default for SIGTERM is to die at
once, mid-save; with :func:`stop_on_sigterm` it raises ``KeyboardInterrupt`` instead, so the
training loop finishes the save in flight, the run says where it stopped in one line, and the
same command resumes it. The process then exits with 143 (128 + SIGTERM), as shells report a
terminated job.
"""

from __future__ import annotations

import signal
import threading

# Exit status of a run stopped by SIGTERM (128 + 15).
EXIT_TERMINATED = 128 + signal.SIGTERM
_received: list[int] = []


def _raise_interrupt(signum, frame):
    """SIGTERM's handler: remembered (for the exit status), then raised as Ctrl-C would be."""
    _received.append(signum)
    raise KeyboardInterrupt


def stop_on_sigterm() -> None:
    """Makes SIGTERM raise ``KeyboardInterrupt`` in the main thread (no-op elsewhere)."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _raise_interrupt)


def sigterm_received() -> bool:
    """Whether a SIGTERM has reached :func:`stop_on_sigterm`'s handler in this process."""
    return bool(_received)


def interrupting_signals() -> list[int]:
    """The signals whose current handler raises ``KeyboardInterrupt``: SIGINT under Python's
    default handler, SIGTERM after :func:`stop_on_sigterm`; none outside the main thread."""
    if threading.current_thread() is not threading.main_thread():
        return []
    raising = (signal.default_int_handler, _raise_interrupt)
    return [s for s in (signal.SIGINT, signal.SIGTERM) if signal.getsignal(s) in raising]
