"""Do selection strategies pick better k-shot training sets than random draws? (probe.draw)

Runs the probe task (``configs/probe_*.py:demo``: synthetic data, 50 images per
class at 64 px, logistic head) on the synthetic nanowires, nanoparticles and
viruses with ``probe.draw = 'uniform,kmeans,typical,coreset'``: for every split
(``--splits``, default 20) and k (``--shots``, default 1,2,4) the protocol's random
draw (k per class, label-aware) and, from the same training part, B = k ×
classes images chosen from the encoder's unlabeled features by each strategy
('uniform' is the label-blind random draw of B). Encoders: a random-init
ResNet18 (width 16, the demo architecture), the texture baseline, and any
pretrained workdir given with ``--encoders`` (``runs/demo/pretrain/simclr_tem``
is added when it exists).

Prints one row per task × encoder × k × strategy: the median accuracy of the
strategy's runs and of the random draws on the same splits, the paired gap
(strategy − random, per split) with its 95 % t-interval over splits, the splits
won / lost, and how many classes the chosen sets hold on average (random draws
hold all: a set missing a class can never predict it).

    python benchmarks/select_vs_random.py
    python benchmarks/select_vs_random.py --tasks=nanowires --splits=30 --shots=1,2,4,8
"""

from __future__ import annotations

import argparse
import importlib
import os
import tempfile
import time
from pathlib import Path

from fewshot_jax.train_lib.xla_setup import prefer_eigen_convolutions_on_cpu

prefer_eigen_convolutions_on_cpu()  # the project's CPU setting (before jax starts)

from fewshot_jax import tasks  # noqa: E402

CONFIGS = {'nanowires': 'probe_nanowire', 'nanoparticles': 'probe_mnp', 'viruses': 'probe_virus'}
DEMO_ENCODER = 'runs/demo/pretrain/simclr_tem'


def _load_average() -> str:
    return ' '.join(f'{load:.2f}' for load in os.getloadavg())


def run_task(task: str, args, workdir: Path) -> dict:
    config = importlib.import_module(f'configs.{CONFIGS[task]}').get_config('demo')
    config.data.per_class = args.per_class
    config.data.seed = args.pool_seed
    config.probe.encoders = tuple(args.encoders) + ('random-init', 'texture=texture')
    config.probe.shots = tuple(int(k) for k in args.shots.split(','))
    config.probe.split_seeds = args.splits
    config.probe.head = args.head
    config.probe.draw = args.draws
    return tasks.run('probe', config, workdir / task)


def class_coverage(workdir: Path, args, draws: tuple[str, ...]) -> dict:
    """{(encoder, strategy, k): mean number of classes in the chosen sets}, from the cached features."""
    import json

    import numpy as np

    from fewshot_jax.probe import draws as draw_lib
    from fewshot_jax.probe import grid as probe_grid

    shots = [int(k) for k in args.shots.split(',')]
    out = {}
    for path in sorted((workdir / 'features').glob('*.npz')):
        with np.load(path, allow_pickle=False) as stored:
            name, features, labels = (
                json.loads(str(stored['meta']))['name'],
                stored['features'],
                stored['labels'],
            )
        classes = int(labels.max()) + 1
        for method in draws[1:]:
            plan = probe_grid.protocol_plan(
                labels,
                shots=shots,
                split_seeds=range(args.splits),
                draws=1,
                choose=draw_lib.chooser(features, shots, classes, method, 42),
                method=method,
            )
            for k in shots:
                held = [np.unique(labels[run.train]).size for run in plan if run.k == k]
                out[(name, method, k)] = f'{np.mean(held):.1f}/{classes}'
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--tasks', default='nanowires,nanoparticles,viruses')
    parser.add_argument('--splits', type=int, default=20)
    parser.add_argument('--shots', default='1,2,4')
    parser.add_argument('--per_class', type=int, default=50)
    parser.add_argument(
        '--pool_seed',
        type=int,
        default=0,
        help='seed of the synthetic labeled pool (0: the one reported so far)',
    )
    parser.add_argument('--head', default='logistic')
    parser.add_argument('--draws', default='uniform,kmeans,typical,coreset')
    parser.add_argument('--encoders', nargs='*', default=None, help='"name=spec" of pretrained encoders')
    parser.add_argument('--workdir', default=None, help='keep the probe workdirs here (default: a temp dir)')
    args = parser.parse_args()
    if args.encoders is None:
        args.encoders = [f'SimCLR demo=checkpoint:{DEMO_ENCODER}'] if os.path.isdir(DEMO_ENCODER) else []

    import jax

    device = jax.devices()[0]
    print(
        f'# {len(os.sched_getaffinity(0))} CPU cores, jax {jax.__version__} on {device.platform}, '
        f'load average {_load_average()}; {args.splits} splits, k = {args.shots}, head {args.head}',
        flush=True,
    )
    header = f'{"task":<14}{"encoder":<22}{"k":>3}  {"strategy":<9}{"median":>8}{"random":>8}'
    header += f'{"gap":>8}  {"95 % interval":<17}{"won/lost":>9}{"classes":>9}'
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(args.workdir or scratch)
        lines = [header]
        for task in args.tasks.split(','):
            start = time.perf_counter()
            summary = run_task(task, args, root)
            print(f'# {task}: {time.perf_counter() - start:.0f} s', flush=True)
            held = class_coverage(root / task, args, tuple(summary['draws']))
            for encoder, by_strategy in summary['selection'][args.head].items():
                shots = sorted({int(k) for by_k in by_strategy.values() for k in by_k})
                for k in shots:
                    for strategy, by_k in by_strategy.items():
                        g = by_k[str(k)]
                        low, high = g['ci95']
                        lines.append(
                            f'{task:<14}{encoder[:21]:<22}{k:>3}  {strategy:<9}{g["median"]:>8.3f}'
                            f'{g["random_median"]:>8.3f}{g["gap_mean"]:>+8.3f}  '
                            f'[{low:+.3f}, {high:+.3f}]  {g["wins"]:>3}/{g["losses"]:<3}'
                            f'{held[(encoder, strategy, k)]:>9}'
                        )
            print('\n'.join(lines), flush=True)
            lines = []


if __name__ == '__main__':
    main()
