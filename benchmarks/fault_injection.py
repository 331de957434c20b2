"""Fault injection on the ``:tiny`` workflow: every fault ends identical or in one line naming the file.

One uninterrupted run of ``configs/workflow.py:tiny`` (stages pretrain, probe, segment) is the
reference. Each of N runs (seed i) copies it, and injects one fault drawn from the seed:

- ``sigkill``: a unit is redone and its process killed (SIGKILL) at a random point: a random
  training step of a pretraining, a random second of the probe or the segmentation; then
  the same command is rerun.
- ``bitflip``: one bit of a random artefact a later step reads is flipped (an exported
  encoder or its starting weights, a feature-cache file, a saved segmenter's files); then the
  reader runs (the probe stage again, or ``python -m fewshot_jax.segment predict``).
- ``enospc``: a unit is redone with the disk "full" (the file openers raise ENOSPC) for one
  random write (a checkpoint step, the encoder export, the feature cache, a segmenter, the
  unit's DONE.json); then the same command is rerun without the fault.

A run passes when it ends either with results identical to the reference (every unit's
DONE.json, paths and timings aside) or with exactly one ``error: ...`` line on stderr that
names the damaged file (for a full disk, the file being written, and the rerun then matches).

    python benchmarks/fault_injection.py --runs=6 --workdir=/tmp/faults
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
INJECT = REPO / 'tests' / 'helpers' / 'inject_faults.py'
ARGS = [
    '--config=configs/workflow.py:tiny',
    '--config.grid.sweep=()',
    '--config.stages=("pretrain","probe","segment")',
]
UNITS = ('pretrain/bt_tem', 'pretrain/simclr_tem', 'probe/nanowires', 'segment/nanowires')
# Fields of DONE.json that differ between an interrupted and an uninterrupted run by design.
# The probe's config_hash covers its workdir's path, which differs between copies.
VOLATILE = {'resumed_from', 'already_finished', 'cached', 'seconds', 'time', 'timings', 'next', 'config_hash'}


def environment(cache: Path) -> dict:
    """One CPU device and a shared compilation cache: reruns compile nothing twice."""
    return dict(
        os.environ,
        XLA_FLAGS='--xla_force_host_platform_device_count=1',
        JAX_PLATFORMS='cpu',
        JAX_COMPILATION_CACHE_DIR=str(cache),
        JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS='0.5',
        PYTHONPATH=str(REPO),
    )


def launch(workdir: Path, env: dict, *extra: str, fault: dict | None = None, timeout: float = 900):
    """Runs the workflow (through the fault injector when ``fault`` is given)."""
    script = INJECT if fault else REPO / 'launch.py'
    command = [sys.executable, str(script), *ARGS, f'--workdir={workdir}', *extra]
    return subprocess.run(
        command, cwd=REPO, env={**env, **(fault or {})}, capture_output=True, text=True, timeout=timeout
    )


def _normalised(value, workdirs: re.Pattern):
    if isinstance(value, dict):
        return {k: _normalised(v, workdirs) for k, v in value.items() if k not in VOLATILE}
    if isinstance(value, list):
        return [_normalised(v, workdirs) for v in value]
    if isinstance(value, str):
        return workdirs.sub('{W}', value)
    return value


def results(workdir: Path) -> dict:
    """Every unit's DONE.json with workdir paths as {W} and the volatile fields left out.

    A copied workdir keeps the reference's paths in the units it did not redo: every
    sibling folder of ``workdir`` counts as a workdir.
    """
    workdirs = re.compile(re.escape(str(workdir.parent)) + r'/[^/\s\'"]+')
    out = {}
    for unit in UNITS:
        done = workdir / unit / 'DONE.json'
        out[unit] = _normalised(json.loads(done.read_text()), workdirs) if done.is_file() else None
    return out


def differences(a: dict, b: dict, prefix: str = '') -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        keys = sorted(a.keys() | b.keys())
        return [d for k in keys for d in differences(a.get(k), b.get(k), f'{prefix}{k}.')]
    return [] if a == b else [prefix.rstrip('.')]


def copy_without(reference: Path, target: Path, unit: str | None) -> None:
    """The reference workdir, with ``unit`` removed so that the next run redoes it."""
    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(reference, target, symlinks=True)
    if unit is not None:
        shutil.rmtree(target / unit)


def one_line(stderr: str) -> str | None:
    """The run's ``error: ...`` line: the last line on stderr, with no traceback above it.

    Warnings the run printed before (``config.force redoes stage probe``) are not errors.
    """
    lines = [line for line in stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith('error: ')]
    if 'Traceback' in stderr or len(errors) != 1 or lines[-1] != errors[0]:
        return None
    return errors[0]


def flip_bit(path: Path, rng: random.Random) -> str:
    data = bytearray(path.read_bytes())
    where = rng.randrange(len(data))
    data[where] ^= 1 << rng.randrange(8)
    path.write_bytes(bytes(data))
    return f'bit {where * 8} of {path.stat().st_size * 8}'


def _kill_when(proc, trigger, deadline: float) -> bool:
    """SIGKILLs ``proc``'s process group once ``trigger()`` holds; False if it ended first."""
    while time.time() < deadline:
        if proc.poll() is not None:
            return False
        if trigger():
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            return True
        time.sleep(0.1)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    return True


def run_sigkill(rng, reference, work, env, expected) -> tuple[str, str]:
    unit = rng.choice(UNITS)
    copy_without(reference, work, unit)
    folder = work / unit
    if unit.startswith('pretrain'):
        step = rng.randint(1, 5)
        where = f'{unit} at step {step}'

        def trigger():
            metrics = folder / 'metrics.jsonl'
            lines = metrics.read_text().splitlines() if metrics.is_file() else []
            return any(json.loads(line).get('step', 0) >= step for line in lines if line.strip())
    else:
        delay = rng.uniform(0, 6 if unit.startswith('probe') else 20)
        where = f'{unit} {delay:.0f} s after it started'
        started = []

        def trigger():
            if not started and folder.exists():
                started.append(time.time())
            return bool(started) and time.time() - started[0] >= delay

    command = [sys.executable, str(REPO / 'launch.py'), *ARGS, f'--workdir={work}']
    proc = subprocess.Popen(
        command,
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    killed = _kill_when(proc, trigger, time.time() + 600)
    where += '' if killed else ' (the unit finished first)'
    rerun = launch(work, env)
    if rerun.returncode != 0:
        return where, f'FAIL: rerun exited {rerun.returncode}: {rerun.stderr.strip()[-300:]}'
    changed = differences(results(work), expected)
    return where, 'identical' if not changed else f'FAIL: differs in {", ".join(changed[:4])}'


def _artefacts(work: Path) -> list[tuple[str, Path]]:
    """(kind, file) for every artefact file a later step reads."""
    found = []
    for unit in ('bt_tem', 'simclr_tem'):
        found += [('encoder', p) for p in (work / 'pretrain' / unit / 'encoder').rglob('*') if p.is_file()]
    # The probe's random-init baseline is the first pretraining's starting weights.
    found += [('encoder', p) for p in (work / 'pretrain/bt_tem/encoder_init').rglob('*') if p.is_file()]
    found += [('features', p) for p in (work / 'probe/nanowires/features').glob('*.npz')]
    model = work / 'segment/nanowires/segment/runs/bt_tem_64px_k2/model'
    meta = json.loads((model / 'segmenter.json').read_text())
    for name in ('segmenter.json', 'decoder.msgpack', meta['encoder_file']):
        found.append(('segmenter', (model / name).resolve()))
    return found


def run_bitflip(rng, reference, work, env, expected) -> tuple[str, str]:
    copy_without(reference, work, None)
    found = _artefacts(work)
    # Each kind is drawn equally often: an encoder export alone holds more files than the rest.
    kind = rng.choice(sorted({k for k, _ in found}))
    path = rng.choice([p for k, p in found if k == kind])
    where = f'{path.relative_to(work.resolve()) if path.is_relative_to(work.resolve()) else path}: '
    where += flip_bit(path, rng)
    if kind == 'features':
        # The probe is redone (its DONE.json removed) and reads its feature cache back.
        (work / 'probe/nanowires/DONE.json').unlink()
        result = launch(work, env)
        if result.returncode != 0:
            return where, f'FAIL: exited {result.returncode}: {result.stderr.strip()[-300:]}'
        changed = differences(results(work), expected)
        return where, 'identical (cache recomputed)' if not changed else f'FAIL: differs in {changed[:4]}'
    if kind == 'encoder':
        result = launch(work, env, '--config.force=probe')
    else:
        images = work / 'new_images'
        images.mkdir(exist_ok=True)
        _any_png(images)
        model = work / 'segment/nanowires/segment/runs/bt_tem_64px_k2/model'
        command = [sys.executable, '-m', 'fewshot_jax.segment', 'predict', f'--model={model}']
        command += [f'--images={images}', f'--out={work / "masks"}']
        result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    line = one_line(result.stderr)
    if result.returncode == 0:
        # A flip in a value nothing reads (an encoder.json step older than the newest
        # checkpoint sends readers to that checkpoint) may leave the results unchanged.
        changed = differences(results(work), expected) if kind == 'encoder' else ['(predicted)']
        return where, 'identical (the damaged bytes were not used)' if not changed else (
            'FAIL: the damaged file was used without an error'
        )
    # The file, or the artefact folder holding it (an encoder export is checked as a whole).
    inside = [p for p in (path, *path.parents) if p.is_relative_to(work.resolve())]
    named = line is not None and any(
        str(p) in line for p in inside if len(p.relative_to(work.resolve()).parts) >= 3
    )
    return (
        where,
        f'one-line error naming it: {line[:90]}…' if named else f'FAIL: {result.stderr.strip()[-300:]}',
    )


def _any_png(folder: Path) -> Path:
    import numpy as np
    from PIL import Image

    path = folder / 'generated.png'
    Image.fromarray((np.random.default_rng(0).random((48, 48)) * 255).astype(np.uint8)).save(path)
    return path


ENOSPC_TARGETS = (
    ('pretrain/bt_tem', 'checkpoints/4'),
    ('pretrain/simclr_tem', 'encoder/encoder.json'),
    ('pretrain/bt_tem', 'DONE.json'),
    ('probe/nanowires', 'features/'),
    ('probe/nanowires', 'DONE.json'),
    ('segment/nanowires', '/model/decoder.msgpack'),
)


def run_enospc(rng, reference, work, env, expected) -> tuple[str, str]:
    unit, target = rng.choice(ENOSPC_TARGETS)
    copy_without(reference, work, unit)
    fragment = f'{work / unit}/{target}' if not target.startswith('/') else target
    where = f'writing {unit}/{target.lstrip("/")}'
    result = launch(work, env, fault={'FAULT_ENOSPC': fragment})
    line = one_line(result.stderr)
    if result.returncode == 0:
        return where, 'FAIL: the full disk went unnoticed'
    if line is None or 'no space left on device writing' not in line:
        return where, f'FAIL: {result.stderr.strip()[-300:]}'
    rerun = launch(work, env)
    if rerun.returncode != 0:
        return where, f'FAIL: rerun exited {rerun.returncode}: {rerun.stderr.strip()[-300:]}'
    changed = differences(results(work), expected)
    outcome = f'one-line error, rerun identical: {line[7:80]}…'
    return where, outcome if not changed else f'FAIL: rerun differs in {changed[:4]}'


FAULTS = {'sigkill': run_sigkill, 'bitflip': run_bitflip, 'enospc': run_enospc}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--runs', type=int, default=6)
    parser.add_argument('--first_seed', type=int, default=0)
    parser.add_argument('--workdir', default='/tmp/fewshot_jax_faults')
    parser.add_argument('--faults', default='sigkill,bitflip,enospc')
    args = parser.parse_args()
    root = Path(args.workdir)
    root.mkdir(parents=True, exist_ok=True)
    env = environment(root / 'xla_cache')
    reference = root / 'reference'
    if not all((reference / unit / 'DONE.json').is_file() for unit in UNITS):
        started = time.time()
        done = launch(reference, env)
        if done.returncode != 0:
            sys.exit(f'error: the reference run failed: {done.stderr.strip()[-500:]}')
        print(f'reference run: {time.time() - started:.0f} s')
    expected = results(reference)
    kinds = args.faults.split(',')
    rows = []
    for seed in range(args.first_seed, args.first_seed + args.runs):
        rng = random.Random(seed)
        kind = kinds[seed % len(kinds)]
        started = time.time()
        where, outcome = FAULTS[kind](rng, reference, root / f'run{seed}', env, expected)
        rows.append((seed, kind, where, outcome, time.time() - started))
        print(f'seed {seed}: {kind}: {where} -> {outcome} ({time.time() - started:.0f} s)', flush=True)
        shutil.rmtree(root / f'run{seed}', ignore_errors=True)
    print()
    print('| seed | fault | where | outcome | s |\n|---|---|---|---|---|')
    for seed, kind, where, outcome, seconds in rows:
        print(f'| {seed} | {kind} | {where} | {outcome} | {seconds:.0f} |')
    failed = sum(outcome.startswith('FAIL') for *_, outcome, _ in rows)
    print(f'\n{len(rows) - failed} of {len(rows)} runs ended identical or with one line naming the file')
    return 1 if failed else 0


if __name__ == '__main__':
    sys.exit(main())
