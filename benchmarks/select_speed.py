"""Speed of label selection (``fewshot_jax.select``) on a ResNet50-sized pool.

Selects ``--budget`` images (default 16) from ``--n`` × ``--d`` random-normal
features (default 2000 × 2048, the pooled ResNet50 features of a 2000-image
pool) with every method. Per method, the JIT caches are cleared and the first
call timed (compilation + one run), then ``--repeats`` further calls; the
table gives the first call, the median of the later ones (steady) and their
difference (compile, approximately: the first call also warms caches).

    python benchmarks/select_speed.py
    python benchmarks/select_speed.py --n=500 --budget=32 --repeats=5

Prints the machine (CPU cores, JAX backend, load average) first.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

from fewshot_jax.train_lib.xla_setup import prefer_eigen_convolutions_on_cpu

prefer_eigen_convolutions_on_cpu()  # the project's CPU setting (before jax starts)

import jax  # noqa: E402
import numpy as np  # noqa: E402

from fewshot_jax.select import METHODS, select  # noqa: E402


def _load_average() -> str:
    return ' '.join(f'{load:.2f}' for load in os.getloadavg())


def _timed(features, budget, method):
    start = time.perf_counter()
    picks = select(features, budget, method, seed=0)
    return time.perf_counter() - start, picks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--n', type=int, default=2000, help='pool images')
    parser.add_argument('--d', type=int, default=2048, help='features per image')
    parser.add_argument('--budget', type=int, default=16)
    parser.add_argument('--repeats', type=int, default=3, help='timed calls after the first')
    parser.add_argument('--methods', nargs='+', default=list(METHODS), choices=METHODS)
    args = parser.parse_args()

    device = jax.devices()[0]
    print(
        f'{len(os.sched_getaffinity(0))} CPU cores, jax {jax.__version__} on {device.platform} '
        f'({device.device_kind}), load average {_load_average()}'
    )
    features = np.random.default_rng(0).standard_normal((args.n, args.d)).astype(np.float32)
    print(f'select {args.budget} of {args.n} × {args.d} random-normal features; seconds per selection')
    print(f'{"method":<8} {"first call":>10} {"compile":>8} {"steady":>7}  first picks')
    for method in args.methods:
        jax.clear_caches()
        first, picks = _timed(features, args.budget, method)
        steady = statistics.median(_timed(features, args.budget, method)[0] for _ in range(args.repeats))
        shown = ' '.join(str(i) for i in picks.indices[:4])
        print(f'{method:<8} {first:>10.2f} {first - steady:>8.2f} {steady:>7.2f}  {shown} …')


if __name__ == '__main__':
    main()
