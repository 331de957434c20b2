"""Transfer to the held-out physical families: the user's path, paired against the own init.

For each family × method × pretraining seed: pretrain the method's ``:demo`` preset on the
family's unlabeled folder (``--config.data.source=folder``), then run the nanowire probe's
``:demo`` preset on the family's labeled folder with the pretrained encoder, the weights it
started from (``@0``), raw pixels and texture. Prints, at each k, the median accuracies and
the paired gaps (pretrained − own init, pretrained − texture): per split within a seed, then
the mean over seeds with a 95 % interval (a t-interval over the seeds' mean gaps; with one
seed, over its splits, and the table says so).

Write the families first (docs/heldout.md)::

    python -m fewshot_jax.data.heldout.write --family=crystals --out=/data/crystals --seed=0

    python benchmarks/heldout_transfer.py --root=/data --families=crystals --methods=simclr \
        --seeds=0 --runs=/tmp/transfer [--layer=pooled] [--k=8]

A recipe candidate is the preset plus config overrides, its runs named by a tag::

    python benchmarks/heldout_transfer.py --root=/data --families=crystals --methods=barlow \
        --tag=turns --override=augment.rotate90=True

``--preset=cpu`` pretrains the ``:cpu`` preset instead (runs named ``FAMILY_METHOD_cpu_sSEED``);
every checkpoint of a run is kept, and ``--steps=1000,2000`` adds those checkpoints to the probe
and prints one table per step (the trend along a run)::

    python benchmarks/heldout_transfer.py --root=/data --families=crystals --methods=barlow \
        --preset=cpu --steps=1000,2000,3000,4000,5000,6000

Pretraining and probe workdirs are reused when finished, so a table can be extended with
more seeds later. Figures in benchmarks/RESULTS.md, "Transfer to held-out physical families".
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
from scipy import stats as scipy_stats

REPO = Path(__file__).resolve().parents[1]
# --orientations and --pooling → the probe workdir's suffix ('default': the probe preset's setting).
ORIENTATION_SUFFIX = {'default': '', 'on': '_orient8', 'off': '_orient1'}
POOLING_SUFFIX = {'default': '', 'average': '_avgpool', 'gem': '_gem'}


def probe_options(orientations: str, pooling: str) -> tuple[str, list[str]]:
    """The probe workdir's suffix and the config overrides of ``--orientations``, ``--pooling``."""
    suffix = ORIENTATION_SUFFIX[orientations] + POOLING_SUFFIX[pooling]
    overrides = (
        [] if orientations == 'default' else [f'--config.probe.average_orientations={orientations == "on"}']
    )
    overrides += [] if pooling == 'default' else [f'--config.probe.pooling={pooling}']
    return suffix, overrides


def run(args: list[str], log: Path) -> None:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    with log.open('w') as out:
        done = subprocess.run(
            [sys.executable, str(REPO / 'launch.py'), *args], stdout=out, stderr=out, env=env
        )
    if done.returncode:
        sys.exit(f'failed: launch.py {" ".join(args)} (see {log})')


def check_length(workdir: Path, method: str, preset: str, overrides: list[str]) -> None:
    """Stops when a finished run trained another number of steps than the recipe does now (a
    run of a former preset must not be reported as the current one)."""
    sys.path.insert(0, str(REPO))
    from configs.ssl_base import ssl_config

    want = ssl_config({'barlow': 'barlow_twins'}.get(method, method), 'tem', preset).train.num_steps
    for override in overrides:
        if override.startswith('train.num_steps='):
            want = int(override.split('=', 1)[1])
    done = json.loads((workdir / 'encoder' / 'encoder.json').read_text()).get('step')
    if done != want:
        sys.exit(f'{workdir}: finished at step {done}, the recipe now trains {want}; move it or use --tag')


def pretrain(
    root: Path,
    family: str,
    method: str,
    seed: int,
    runs: Path,
    overrides: list[str],
    tag: str,
    preset: str = 'demo',
) -> Path:
    """The method's preset pretrained on the family's unlabeled folder (reused when finished).

    Every checkpoint is kept (``train.keep_checkpoints``; it changes nothing in training), so
    ``--steps`` can probe the encoder along the run."""
    run_name = f'{family}_{method}{"" if preset == "demo" else "_" + preset}'
    workdir = runs / f'{run_name}{"_" + tag if tag else ""}_s{seed}'
    if (workdir / 'encoder').is_dir():
        check_length(workdir, method, preset, overrides)
    else:
        run(
            [
                f'--config=configs/{method}_tem.py:{preset}',
                '--config.train.keep_checkpoints=100',
                f'--workdir={workdir}',
                '--config.data.source=folder',
                f'--config.data.root={root / family / "unlabeled"}',
                f'--config.seed={seed}',
                *(f'--config.{o}' for o in overrides),
            ],
            runs / f'{workdir.name}.pretrain.log',
        )
    return workdir


def probe(
    root: Path,
    family: str,
    encoder: Path,
    layer: str,
    size: int,
    runs: Path,
    steps: tuple[int, ...] = (),
    orientations: str = 'default',
    pooling: str = 'default',
) -> Path:
    """The nanowire probe's ``:demo`` on the family's labeled folder: the pretrained encoder,
    its own init, raw pixels, texture and, for each of ``steps``, the checkpoint of that step
    (named ``step<N>``). ``orientations``: 'default' (the preset's), 'on' or 'off' sets
    ``probe.average_orientations`` (and names the workdir ``…_orient8`` / ``…_orient1``);
    ``pooling``: 'default', 'average' or 'gem' sets ``probe.pooling`` (``…_avgpool`` / ``…_gem``)."""
    at_steps = f'_steps{"-".join(map(str, steps))}' if steps else ''
    suffix, options = probe_options(orientations, pooling)
    workdir = runs / f'probe_{encoder.name}_{layer.replace("+", "_")}_{size}{at_steps}{suffix}'
    results = workdir / 'probe' / 'results.csv'
    # A probe older than the encoder it names probed another run under the same name.
    encoder_written = (encoder / 'encoder' / 'encoder.json').stat().st_mtime
    if results.is_file() and results.stat().st_mtime < encoder_written:
        shutil.rmtree(workdir)
    if not results.is_file():
        encoders = f"('pretrained=checkpoint:{encoder}','init=checkpoint:{encoder}@0',"
        encoders += ''.join(f"'step{n}=checkpoint:{encoder}@{n}'," for n in steps)
        encoders += "'raw pixels=raw-pixels','texture=texture')"
        run(
            [
                '--config=configs/probe_nanowire.py:demo',
                f'--workdir={workdir}',
                '--config.data.source=folder',
                f'--config.data.root={root / family / "labeled"}',
                f'--config.data.image_size={size}',
                f'--config.probe.layer={layer}',
                f'--config.probe.encoders={encoders}',
                '--config.probe.shots=(1,2,4,8,16,32)',
                *options,
            ],
            runs / f'{workdir.name}.log',
        )
    return workdir / 'probe' / 'results.csv'


def accuracies(results: Path) -> dict:
    """{encoder: {k: {split_seed: accuracy}}} of the logistic head's protocol runs."""
    table = defaultdict(lambda: defaultdict(dict))
    with results.open() as f:
        for row in csv.DictReader(f):
            if row['head'] == 'logistic' and row['mode'] == 'protocol':
                table[row['encoder']][int(row['k'])][int(row['split_seed'])] = float(row['accuracy'])
    return table


def interval(values) -> tuple[float, float, float]:
    """Mean and 95 % t-interval of ``values`` (NaN bounds for a single value)."""
    values = np.asarray(values, float)
    mean = float(values.mean())
    if len(values) < 2:
        return mean, float('nan'), float('nan')
    half = scipy_stats.t.ppf(0.975, len(values) - 1) * values.std(ddof=1) / np.sqrt(len(values))
    return mean, mean - half, mean + half


def split_gaps(table: dict, a: str, b: str, k: int) -> list[float]:
    """One seed's gaps a − b at k, split by split (the splits are the same draws for both)."""
    return [table[a][k][s] - table[b][k][s] for s in sorted(table[a][k])]


def seed_mean_gaps(tables: list[dict], a: str, b: str, k: int) -> list[float]:
    """Each seed's mean gap a − b over its splits at k, in seed order."""
    return [float(np.mean(split_gaps(table, a, b, k))) for table in tables]


def paired(tables: list[dict], a: str, b: str, k: int) -> tuple[str, tuple[float, float, float]]:
    """The gap a − b at k: over seeds of per-seed mean gaps, or over splits for one seed."""
    if len(tables) == 1:
        gaps = split_gaps(tables[0], a, b, k)
        return f'1 seed × {len(gaps)} splits', interval(gaps)
    return f'{len(tables)} seeds', interval(seed_mean_gaps(tables, a, b, k))


def print_rows(tables: list[dict], name: str, ks: list[int]) -> dict:
    """Prints the medians and paired gaps of encoder ``name`` at each k; returns them by k."""
    print(
        f'{"k":>3} {"pretrained":>10} {"init":>6} {"texture":>7} {"raw":>6}   '
        'gap vs init [95 %]          gap vs texture [95 %]'
    )
    rows = {}
    for k in ks:
        medians = [
            np.median([v for t in tables for v in t[encoder][k].values()])
            for encoder in (name, 'init', 'texture', 'raw pixels')
        ]
        over, init_gap = paired(tables, name, 'init', k)
        _, texture_gap = paired(tables, name, 'texture', k)
        print(
            f'{k:>3} {medians[0]:>10.3f} {medians[1]:>6.3f} {medians[2]:>7.3f} {medians[3]:>6.3f}   '
            f'{init_gap[0]:+.3f} [{init_gap[1]:+.3f}, {init_gap[2]:+.3f}]   '
            f'{texture_gap[0]:+.3f} [{texture_gap[1]:+.3f}, {texture_gap[2]:+.3f}]   ({over})'
        )
        rows[k] = {
            'medians': dict(zip(('pretrained', 'init', 'texture', 'raw'), medians, strict=True)),
            'gap_init': init_gap,
            'gap_texture': texture_gap,
            'over': over,
            'per_seed': per_seed_gaps(tables, name, k),
        }
        if len(tables) > 1:
            print(
                '      per seed, vs init / vs texture: '
                + ', '.join(f'{a:+.3f} / {b:+.3f}' for a, b in rows[k]['per_seed'])
            )
    return rows


def per_seed_gaps(tables: list[dict], name: str, k: int) -> list[tuple[float, float]]:
    """Each seed's mean gap over its splits at k: (vs own init, vs texture), in seed order."""
    vs_init = seed_mean_gaps(tables, name, 'init', k)
    return list(zip(vs_init, seed_mean_gaps(tables, name, 'texture', k), strict=True))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--root', type=Path, required=True, help='folder holding one folder per family')
    parser.add_argument('--families', default='crystals')
    parser.add_argument('--methods', default='simclr,barlow')
    parser.add_argument('--seeds', default='0')
    parser.add_argument('--runs', type=Path, default=Path('/tmp/heldout_transfer'))
    parser.add_argument('--layer', default='pooled')
    parser.add_argument('--size', type=int, default=64)
    parser.add_argument('--k', default='1,2,4,8,16,32')
    parser.add_argument(
        '--override',
        action='append',
        default=[],
        help='a pretraining config override without --config., e.g. augment.rotate90=True (repeatable)',
    )
    parser.add_argument(
        '--tag', default='', help='names the runs of a recipe candidate (needed with --override)'
    )
    parser.add_argument('--preset', default='demo', choices=('demo', 'cpu'), help='pretraining preset')
    parser.add_argument(
        '--steps',
        default='',
        help='checkpoint steps to probe along each run, e.g. 1000,2000,3000 (a trend table per step)',
    )
    parser.add_argument(
        '--orientations',
        default='default',
        choices=('default', 'on', 'off'),
        help="probe features averaged over the 8 orientations: the preset's, or on / off",
    )
    parser.add_argument(
        '--pooling',
        default='default',
        choices=tuple(POOLING_SUFFIX),
        help="how the probe pools the last feature map: the preset's, average or gem",
    )
    args = parser.parse_args()
    if args.override and not args.tag:
        parser.error('--override needs --tag, so the candidate runs do not reuse the preset runs')
    args.runs.mkdir(parents=True, exist_ok=True)
    ks = [int(k) for k in args.k.split(',')]
    steps = tuple(int(n) for n in args.steps.split(',') if n)
    summary = {}
    for family in args.families.split(','):
        for method in args.methods.split(','):
            tables = []
            for seed in (int(s) for s in args.seeds.split(',')):
                encoder = pretrain(
                    args.root, family, method, seed, args.runs, args.override, args.tag, args.preset
                )
                results = probe(
                    args.root,
                    family,
                    encoder,
                    args.layer,
                    args.size,
                    args.runs,
                    steps,
                    args.orientations,
                    args.pooling,
                )
                tables.append(accuracies(results))
            recipe = f' + {" ".join(args.override)}' if args.override else ''
            heading = f'{family} · {method} :{args.preset}{recipe}'
            heading += f' · probe.layer={args.layer} · {args.size} px'
            if args.orientations != 'default':
                heading += f' · orientations averaged: {args.orientations}'
            if args.pooling != 'default':
                heading += f' · pooling: {args.pooling}'
            for name in ('pretrained', *(f'step{n}' for n in steps)):
                print(f'\n{heading}{"" if name == "pretrained" else " · " + name}')
                for k, row in print_rows(tables, name, ks).items():
                    summary[f'{family}/{method}/{k}' + ('' if name == 'pretrained' else f'/{name}')] = row
    preset = '' if args.preset == 'demo' else '_' + args.preset
    tag = '_' + args.tag if args.tag else ''
    suffix, _ = probe_options(args.orientations, args.pooling)
    name = f'summary{preset}{tag}_{args.layer.replace("+", "_")}_{args.size}{suffix}.json'
    (args.runs / name).write_text(json.dumps(summary, indent=1))


if __name__ == '__main__':
    main()
