"""How much of the class a frozen encoder's features hold on a held-out family: the diagnostic
behind "Transfer to held-out physical families" in RESULTS.md.

For each weight spec, the pooled features of every labeled image of the family (read as the
probe reads a folder, resized to ``--size``) are scored by a 5-fold logistic regression on all
labels (more labels than the few-shot probe, so it measures what the features hold, not how
few labels suffice), their effective rank (exp of the entropy of the normalised singular values
of the standardised features) and the share of the top direction::

    python benchmarks/heldout_features.py --family=/work/bench/crystals \\
        checkpoint:/work/runs/crystals_barlow_s0 checkpoint:/work/runs/crystals_barlow_s0@0
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def folder_images(folder: Path, size: int) -> np.ndarray:
    """uint8 (n, size, size, 1) images of the files in ``folder``, in name order, read and
    resized as the probe and the pretraining read a folder."""
    from fewshot_jax.data.io import read_image
    from fewshot_jax.data.pipeline import to_uint8_square

    paths = sorted(p for p in folder.iterdir() if p.is_file())
    return np.stack([to_uint8_square(read_image(path), size, 1) for path in paths])


def labeled_images(family: Path, size: int) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """uint8 (n, size, size, 1) images of ``family/labeled/<class>/``, labels and class names."""
    classes = sorted(p.name for p in (family / 'labeled').iterdir() if p.is_dir())
    per_class = [folder_images(family / 'labeled' / name, size) for name in classes]
    labels = np.concatenate([np.full(len(x), label) for label, x in enumerate(per_class)])
    return np.concatenate(per_class), labels, classes


def describe(features: np.ndarray, labels: np.ndarray, folds: int) -> dict:
    """5-fold logistic accuracy, effective rank and top-direction share of ``features``."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=3000))
    split = StratifiedKFold(folds, shuffle=True, random_state=0)
    accuracy = cross_val_score(model, features, labels, cv=split).mean()
    rank, top_share = spread_of(features)
    return {'accuracy': float(accuracy), 'effective_rank': rank, 'top_share': top_share}


def spread_of(features: np.ndarray) -> tuple[float, float]:
    """Effective rank (exp of the entropy of the normalised squared singular values of the
    standardised features) and the share of the top direction."""
    spread = features.std(axis=0)
    standard = (features - features.mean(axis=0)) / np.where(spread > 0, spread, 1.0)
    power = np.linalg.svd(standard, compute_uv=False) ** 2
    share = power / power.sum()
    return float(np.exp(-np.sum(share * np.log(share + 1e-12)))), float(share[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('specs', nargs='+', help='weight specs (checkpoint:W, checkpoint:W@0, ...)')
    parser.add_argument('--family', type=Path, required=True, help='a family folder with labeled/')
    parser.add_argument('--size', type=int, default=64, help='encoder input side in px')
    parser.add_argument('--folds', type=int, default=5)
    args = parser.parse_args()
    from fewshot_jax import load_encoder

    images, labels, classes = labeled_images(args.family, args.size)
    print(f'# {args.family.name}: {len(labels)} images of {len(classes)} classes at {args.size} px')
    print(f'{"encoder":<60} {"dim":>5} {"5-fold acc":>10} {"eff. rank":>9} {"top share":>9}')
    for spec in args.specs:
        features = load_encoder(spec).encode(images, progress=False)
        features = np.asarray(features).reshape(len(features), -1)
        row = describe(features, labels, args.folds)
        print(
            f'{spec:<60} {features.shape[1]:>5} {row["accuracy"]:>10.3f} '
            f'{row["effective_rank"]:>9.1f} {row["top_share"]:>9.2f}',
            flush=True,
        )


if __name__ == '__main__':
    main()
