"""Wall time per pretraining step: 2 processes x 2 CPU devices vs 1 process x 4 devices.

Runs ``launch.py`` as a real ``jax.distributed`` job on localhost (gloo collectives
over loopback) and as one process, with the same config and global batch, and
reads the per-step times the loop writes to ``metrics.jsonl`` (``log_every=1``:
every step is fetched, so each time includes the step's device work, the input
pipeline and, on 2 processes, the cross-process all-reduces).

    python benchmarks/multihost_step.py --steps=25 --preset=demo

Prints one line per setup and one JSON line with all figures. The first
``--skip`` steps (compilation, the first checkpoint) are left out.
"""

from __future__ import annotations

import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from absl import app, flags

REPO = Path(__file__).resolve().parents[1]

_STEPS = flags.DEFINE_integer('steps', 25, 'Steps per run.')
_SKIP = flags.DEFINE_integer('skip', 3, 'Leading steps left out of the figures.')
_PRESET = flags.DEFINE_string('preset', 'demo', "Config preset: 'demo' or 'tiny'.")
_CONFIG = flags.DEFINE_string('config', 'configs/barlow_tem.py', 'Experiment config file.')
_TIMEOUT = flags.DEFINE_integer('timeout', 1200, 'Seconds before a run is killed.')


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def _run(workdir: Path, processes: int, devices: int) -> list[float]:
    """Runs one job; returns its per-step wall times (seconds)."""
    flags_kept = [
        f
        for f in os.environ.get('XLA_FLAGS', '').split()
        if not f.startswith('--xla_force_host_platform_device')
    ]
    env = dict(
        os.environ,
        JAX_PLATFORMS='cpu',
        XLA_FLAGS=' '.join(flags_kept + [f'--xla_force_host_platform_device_count={devices}']),
    )
    base = [
        sys.executable,
        str(REPO / 'launch.py'),
        f'--config={_CONFIG.value}:{_PRESET.value}',
        f'--workdir={workdir}',
        f'--config.train.num_steps={_STEPS.value}',
        '--config.train.log_every=1',
        f'--config.train.checkpoint_every={_STEPS.value}',
        '--config.train.progress=False',
        '--config.monitor.tasks=()',
    ]
    port = _free_port()
    commands = (
        [base + ['--multihost=no']]
        if processes == 1
        else [
            base
            + [f'--coordinator_address=127.0.0.1:{port}', f'--num_processes={processes}', f'--process_id={i}']
            for i in range(processes)
        ]
    )
    procs = [
        subprocess.Popen(c, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for c in commands
    ]
    deadline = time.monotonic() + _TIMEOUT.value
    try:
        for proc in procs:
            output, _ = proc.communicate(timeout=max(1.0, deadline - time.monotonic()))
            if proc.returncode:
                raise RuntimeError(f'a process of the {processes}-process run failed:\n{output[-3000:]}')
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    times = [json.loads(line)['time'] for line in (workdir / 'metrics.jsonl').read_text().splitlines()]
    return [b - a for a, b in zip(times, times[1:], strict=False)][_SKIP.value - 1 :]


def main(argv):
    del argv
    figures = {
        'config': f'{_CONFIG.value}:{_PRESET.value}',
        'steps': _STEPS.value,
        'skip': _SKIP.value,
        'load_before': os.getloadavg()[0],
    }
    with tempfile.TemporaryDirectory() as tmp:
        for name, processes, devices in (('1x4', 1, 4), ('2x2', 2, 2)):
            step_times = _run(Path(tmp) / name, processes, devices)
            figures[name] = {
                'median_s': statistics.median(step_times),
                'mean_s': statistics.fmean(step_times),
                'n': len(step_times),
            }
            print(
                f'{name} ({processes} process(es) x {devices} CPU devices): median '
                f'{figures[name]["median_s"] * 1e3:.0f} ms/step, mean '
                f'{figures[name]["mean_s"] * 1e3:.0f} ms/step over {len(step_times)} steps',
                flush=True,
            )
    figures['load_after'] = os.getloadavg()[0]
    figures['ratio_median'] = figures['2x2']['median_s'] / figures['1x4']['median_s']
    print(
        f'2x2 / 1x4: {figures["ratio_median"]:.2f}x the time per step (median); load '
        f'average {figures["load_before"]:.1f} before, {figures["load_after"]:.1f} after'
    )
    print(json.dumps(figures))


if __name__ == '__main__':
    app.run(main)
