"""Can a pretraining run's failure be seen without labels? Label-free statistics of each run's
features on its own unlabeled folder, beside the run's probe result.

A pretraining seed that fails (its features hold less of the class than other seeds', or no
more than its init's) is what limits the transfer bar's lower ends, and a scientist pretraining
on their own folder has no labels to notice it with. For each run (a pretraining workdir and
the probe workdir of ``heldout_transfer.py`` that probed it), on the family's unlabeled images
at the probe's size:

* ``rank``: effective rank of the pretrained features (``heldout_features.spread_of``), and
  ``rank/init``: the same divided by its own init's;
* ``top``: the share of the features' top direction;
* ``retrieval``: how often an image, quarter-turned and mirrored, finds itself as the nearest
  of all the folder's images (cosine of centred features): whether the features tell
  micrographs apart while ignoring their orientation, the two things the pretext asks for;

and the outcome, from the probe: the pretrained encoder's accuracy minus its own init's at
``--k`` labels per class (mean over splits). Spearman's rank correlation of each statistic
with the outcome is printed over all runs given (pass one family per call)::

    python benchmarks/seed_diagnostics.py --family=/work/bench/crystals \\
        --runs=/work/runs/crystals_simclr_s6,/work/runs/crystals_simclr_s7 \\
        --probes=/work/runs/probe_crystals_simclr_s6_pooled_64,/work/runs/probe_crystals_simclr_s7_pooled_64
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from scipy import stats as scipy_stats

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / 'benchmarks'))

from heldout_features import folder_images, spread_of  # noqa: E402
from heldout_transfer import accuracies  # noqa: E402


def self_retrieval(features: np.ndarray, moved: np.ndarray) -> float:
    """Share of images whose moved copy's nearest neighbour (cosine, centred) is the image."""
    centre = features.mean(axis=0)
    a = features - centre
    b = moved - centre
    a /= np.linalg.norm(a, axis=1, keepdims=True) + 1e-12
    b /= np.linalg.norm(b, axis=1, keepdims=True) + 1e-12
    return float(np.mean(np.argmax(b @ a.T, axis=1) == np.arange(len(a))))


def gap_over_init(probe: Path, k: int) -> float:
    """Mean over splits of pretrained − init accuracy at ``k`` labels per class."""
    table = accuracies(probe / 'probe' / 'results.csv')
    pretrained, init = table['pretrained'][k], table['init'][k]
    return float(np.mean([pretrained[s] - init[s] for s in pretrained]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--family', type=Path, required=True, help='a family folder with unlabeled/')
    parser.add_argument('--runs', required=True, help='pretraining workdirs, comma-separated')
    parser.add_argument('--probes', required=True, help='their probe workdirs, in the same order')
    parser.add_argument('--size', type=int, default=64)
    parser.add_argument('--k', type=int, default=8)
    args = parser.parse_args()
    runs = [Path(r) for r in args.runs.split(',')]
    probes = [Path(p) for p in args.probes.split(',')]
    if len(runs) != len(probes):
        parser.error(
            f'--runs names {len(runs)} workdirs and --probes {len(probes)}; expected one probe per run'
        )
    from fewshot_jax import load_encoder

    images = folder_images(args.family / 'unlabeled', args.size)
    moved = np.ascontiguousarray(np.rot90(images, 1, axes=(1, 2))[:, :, ::-1])
    print(f'# {args.family.name}: {len(images)} unlabeled images at {args.size} px; outcome at k = {args.k}')
    print(f'{"run":<40} {"rank":>6} {"rank/init":>9} {"top":>5} {"retrieval":>9} {"gap vs init":>11}')
    rows = []
    for run, probe in zip(runs, probes, strict=True):
        encoder, init = load_encoder(f'checkpoint:{run}'), load_encoder(f'checkpoint:{run}@0')
        features = np.asarray(encoder.encode(images, progress=False))
        rank, top = spread_of(features)
        init_rank, _ = spread_of(np.asarray(init.encode(images, progress=False)))
        retrieval = self_retrieval(features, np.asarray(encoder.encode(moved, progress=False)))
        row = (rank, rank / init_rank, top, retrieval, gap_over_init(probe, args.k))
        rows.append(row)
        cells = f'{row[0]:>6.1f} {row[1]:>9.3f} {row[2]:>5.2f} {row[3]:>9.3f} {row[4]:>+11.3f}'
        print(f'{run.name:<40} {cells}', flush=True)
    values = np.asarray(rows)
    for column, name in enumerate(('rank', 'rank/init', 'top', 'retrieval')):
        rho, p = scipy_stats.spearmanr(values[:, column], values[:, -1])
        print(f'Spearman {name} vs gap: {rho:+.2f} (p = {p:.2f}, {len(rows)} runs)')


if __name__ == '__main__':
    main()
