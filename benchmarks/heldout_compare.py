"""Two recipes paired on a held-out family: the accuracy of one pretrained encoder minus the
other's, split by split within each pretraining seed (the splits are the same draws of labeled
images), then over seeds — the comparison behind the choices made on the tuning family
(benchmarks/RESULTS.md, "Choices made on the tuning family").

Give the probe workdirs that ``benchmarks/heldout_transfer.py`` wrote, one per seed, in the
same seed order for both recipes::

    python benchmarks/heldout_compare.py --k=8,32 \\
        --a=/runs/probe_crystals_simclr_cpu_s0_pooled_64,/runs/probe_crystals_simclr_cpu_s1_pooled_64 \\
        --b=/runs/probe_crystals_simclr_s0_pooled_64,/runs/probe_crystals_simclr_s1_pooled_64

With one seed the interval is over its splits; with several, a t-interval over the seeds' mean
differences (as in the transfer tables). ``--relative_to=init`` compares each recipe's gap over
its own init instead (pretrained − init, split by split, in both workdirs): the change of that gap.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from heldout_transfer import accuracies, paired, seed_mean_gaps, split_gaps  # noqa: E402


def paired_tables(a_dirs: list[Path], b_dirs: list[Path], relative_to: str = '') -> list[dict]:
    """Per seed, {'a': ..., 'b': ...}: each recipe's pretrained encoder's accuracies by k and split,
    less those of the encoder named ``relative_to`` in the same probe when one is named."""
    if len(a_dirs) != len(b_dirs):
        sys.exit(
            f'--a names {len(a_dirs)} probe workdirs and --b {len(b_dirs)}: expected one per seed for both'
        )
    tables = []
    for a, b in zip(a_dirs, b_dirs, strict=True):
        table = {}
        for key, workdir in (('a', a), ('b', b)):
            results = workdir / 'probe' / 'results.csv'
            if not results.is_file():
                sys.exit(f'{results}: no probe results (run benchmarks/heldout_transfer.py first)')
            by_encoder = accuracies(results)
            table[key] = by_encoder['pretrained']
            if relative_to:
                if relative_to not in by_encoder:
                    sys.exit(f'{results}: no encoder named {relative_to!r} (have {sorted(by_encoder)})')
                table[key] = {
                    k: dict(
                        zip(sorted(splits), split_gaps(by_encoder, 'pretrained', relative_to, k), strict=True)
                    )
                    for k, splits in table[key].items()
                }
        tables.append(table)
    return tables


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        '--a', required=True, help='probe workdirs of recipe A, comma-separated, one per seed'
    )
    parser.add_argument('--b', required=True, help='probe workdirs of recipe B, in the same seed order')
    parser.add_argument('--k', default='8')
    parser.add_argument(
        '--relative_to', default='', help="compare the gaps over this encoder of each probe, e.g. 'init'"
    )
    args = parser.parse_args()
    a_dirs = [Path(p) for p in args.a.split(',')]
    tables = paired_tables(a_dirs, [Path(p) for p in args.b.split(',')], args.relative_to)
    for k in (int(k) for k in args.k.split(',')):
        over, (mean, low, high) = paired(tables, 'a', 'b', k)
        seeds = ', '.join(f'{g:+.3f}' for g in seed_mean_gaps(tables, 'a', 'b', k))
        print(f'k={k:>2}  A − B {mean:+.3f} [{low:+.3f}, {high:+.3f}]  ({over}; per seed {seeds})')


if __name__ == '__main__':
    main()
