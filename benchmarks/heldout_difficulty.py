"""How hard are the held-out families? 8-labels-per-class accuracy of pixels and texture statistics.

For each family (docs/heldout.md) it renders the labeled set in memory
(`--per_class` images per class at `--size` px), scales every image as the
project's reader scales 16-bit files (0.5 / 99.5 percentiles to 0 / 1), and
for `--splits` random splits trains scikit-learn's LogisticRegression on 8
images per class and tests on all the others. Feature sets:

* pixels: the raw scaled pixels, standardised on the training images.
* texture: 7 intensity quantiles, 7 gradient-magnitude quantiles and the log
  power of the standardised image in 8 radial Fourier bands (22 numbers).
* texture32: the project's `baselines.texture_features` (radial power
  spectrum + HOG statistics), for reference.

Prints the median accuracy (and quartiles) per family and feature set. This
check, and nothing that looks at a pretrained encoder, set the families'
nuisance ranges; the target is texture accuracy of about 0.55-0.8.

    PYTHONPATH=$PWD python benchmarks/heldout_difficulty.py --size 64
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

from fewshot_jax.data.heldout import FAMILIES, labeled_image

QUANTILES = (0.02, 0.1, 0.25, 0.5, 0.75, 0.9, 0.98)
BANDS = 8


def scale(image: np.ndarray) -> np.ndarray:
    """What `io.read_image` does to a 16-bit file: robust percentile scaling to [0, 1]."""
    lo, hi = np.percentile(image, (0.5, 99.5))
    return np.clip((image.astype(np.float64) - lo) / max(hi - lo, 1e-9), 0.0, 1.0)


def texture_statistics(images: np.ndarray) -> np.ndarray:
    """Intensity quantiles, gradient-magnitude quantiles and radial Fourier band powers."""
    n, h, w = images.shape
    k = np.hypot(np.fft.fftfreq(h)[:, None], np.fft.fftfreq(w)[None, :])
    edges = np.geomspace(1.0 / h, 0.5, BANDS + 1)
    band = np.digitize(k, edges) - 1
    out = []
    for img in images:
        gy, gx = np.gradient(img)
        z = (img - img.mean()) / (img.std() + 1e-9)
        power = np.abs(np.fft.fft2(z)) ** 2
        bands = [np.log(power[band == b].mean() + 1e-9) for b in range(BANDS)]
        out.append(
            np.concatenate([np.quantile(img, QUANTILES), np.quantile(np.hypot(gy, gx), QUANTILES), bands])
        )
    return np.asarray(out)


def shot_accuracies(features: np.ndarray, labels: np.ndarray, shots: int, splits: int) -> np.ndarray:
    """Accuracy of logistic regression on `shots` random images per class, over `splits` draws."""
    accs = []
    for s in range(splits):
        rng = np.random.default_rng(s)
        train = np.concatenate(
            [rng.choice(np.flatnonzero(labels == c), shots, replace=False) for c in np.unique(labels)]
        )
        test = np.setdiff1d(np.arange(len(labels)), train)
        scaler = StandardScaler().fit(features[train])
        model = LogisticRegression(max_iter=2000).fit(scaler.transform(features[train]), labels[train])
        accs.append(model.score(scaler.transform(features[test]), labels[test]))
    return np.asarray(accs)


def report(family, *, size: int, per_class: int, shots: int, splits: int, seed: int, texture32: bool) -> str:
    """One line: render time and median [quartiles] accuracy per feature set."""
    start = time.perf_counter()
    images, labels = [], []
    for label in range(len(family.classes)):
        for index in range(per_class):
            images.append(scale(labeled_image(family, label, index, size, seed)[0]))
            labels.append(label)
    images, labels = np.asarray(images), np.asarray(labels)
    made = time.perf_counter() - start
    sets = {'pixels': images.reshape(len(images), -1), 'texture': texture_statistics(images)}
    if texture32:
        from fewshot_jax.probe.baselines import texture_features

        sets['texture32'] = texture_features(images.astype(np.float32))
    line = [f'{family.name:14s} ({made:4.1f} s to render)']
    for key, feats in sets.items():
        acc = shot_accuracies(feats, labels, shots, splits)
        q1, med, q3 = np.percentile(acc, (25, 50, 75))
        line.append(f'{key} {med:.3f} [{q1:.3f}, {q3:.3f}]')
    return '  '.join(line)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--families', nargs='+', default=sorted(FAMILIES))
    parser.add_argument('--size', type=int, default=64)
    parser.add_argument('--per_class', type=int, default=100)
    parser.add_argument('--shots', type=int, default=8)
    parser.add_argument('--splits', type=int, default=20)
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--no_texture32', action='store_true', help='skip the project texture features')
    args = parser.parse_args()
    # One BLAS thread: these tiny fits only slow down when threads outnumber free cores.
    with threadpool_limits(1):
        for name in args.families:
            line = report(
                FAMILIES[name],
                size=args.size,
                per_class=args.per_class,
                shots=args.shots,
                splits=args.splits,
                seed=args.seed,
                texture32=not args.no_texture32,
            )
            print(line, flush=True)


if __name__ == '__main__':
    main()
