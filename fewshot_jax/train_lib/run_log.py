"""Where a run's metrics go: ``workdir/metrics.jsonl`` and TensorBoard events."""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import time
from pathlib import Path

import jax
import numpy as np


@contextlib.contextmanager
def log_to_file(workdir: str | os.PathLike):
    """Sends every INFO-and-above log record to ``workdir/log.txt`` while the block runs.

    Process 0 writes ``log.txt``; process ``i > 0`` writes ``log.<i>.txt``. The
    terminal keeps whatever its own handlers show (``launch.py`` shows warnings
    and errors unless ``--verbosity=1``), so library INFO lines (orbax, absl,
    grain) are kept without flooding the console.
    """
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    index = jax.process_index()
    handler = logging.FileHandler(workdir / ('log.txt' if index == 0 else f'log.{index}.txt'))
    handler.setLevel(logging.INFO)
    handler.setFormatter(logging.Formatter('%(asctime)s %(levelname)s %(name)s: %(message)s'))
    root = logging.getLogger()
    previous_level = root.level
    root.setLevel(min(previous_level or logging.INFO, logging.INFO))
    root.addHandler(handler)
    try:
        yield handler.baseFilename
    finally:
        root.removeHandler(handler)
        root.setLevel(previous_level)
        handler.close()


class NonFiniteLossError(FloatingPointError):
    """The loss became NaN or inf; the run stops before saving a bad state."""


class MetricsLog:
    """Appends one JSON line per logged step and mirrors it to TensorBoard.

    Only process 0 writes. On resume from step ``s``, lines for steps after ``s``
    (written after the last checkpoint by the interrupted run) are dropped, so the
    file never holds a step twice.
    """

    def __init__(self, workdir: str | os.PathLike, resume_step: int = 0):
        self.path = Path(workdir) / 'metrics.jsonl'
        self.enabled = jax.process_index() == 0
        self._writer = None
        if not self.enabled:
            return
        self._truncate_after(resume_step)
        from tensorboardX import SummaryWriter  # heavy import, only where used

        self._writer = SummaryWriter(str(Path(workdir) / 'tb'))
        self._t0 = time.time()

    def _truncate_after(self, step: int) -> None:
        if not self.path.exists():
            return
        kept = [
            line
            for line in self.path.read_text().splitlines()
            if line.strip() and json.loads(line)['step'] <= step
        ]
        tmp = self.path.with_suffix('.jsonl.tmp')
        tmp.write_text(''.join(line + '\n' for line in kept))
        os.replace(tmp, self.path)

    def write(self, step: int, metrics: dict, prefix: str = 'train/') -> None:
        """Appends ``metrics`` at ``step``; TensorBoard tags are ``prefix + key``."""
        if not self.enabled:
            return
        record = {'step': int(step), 'time': round(time.time() - self._t0, 3)}
        record.update({k: float(v) for k, v in metrics.items()})
        with self.path.open('a') as f:
            f.write(json.dumps(record) + '\n')
        for key, value in metrics.items():
            self._writer.add_scalar(f'{prefix}{key}', float(value), step)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()


def fetch_and_check(pending: list[tuple[int, dict]]) -> list[tuple[int, dict]]:
    """Copies pending per-step metrics to the host and stops on the first bad loss.

    Raises:
        NonFiniteLossError: naming the first step whose loss is NaN or inf.
    """
    host = jax.device_get(pending)
    for step, metrics in host:
        loss = float(np.asarray(metrics['loss']))
        if not math.isfinite(loss):
            raise NonFiniteLossError(
                f'loss is {loss} at step {step}; stopping before any checkpoint of this state '
                f'is written (lower optim.lr, check the input images, or use model.dtype=float32)'
            )
    return host
