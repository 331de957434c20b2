"""How hard are the synthetic tasks? A raw-pixel baseline, plus contact sheets.

For each labeled synthetic task and each of many seeds this draws a fresh pool
of images, downsamples them to 32 x 32, trains scikit-learn's
LogisticRegression on 8 labeled images per class (standardised raw pixels)
and tests it on the rest of the pool. It prints the median accuracy with its quartiles. The
nanowire task is calibrated to stay below 0.6 (chance is 0.25): a linear
model on pixels must not solve it, so that the encoders have something to show.

    python benchmarks/synthetic_calibration.py                 # figures only
    python benchmarks/synthetic_calibration.py --sheets docs/synthetic
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from fewshot_jax.baselines import raw_pixels, texture_features
from fewshot_jax.data import synthetic
from fewshot_jax.masks import pixel_density

TASKS = ("nanowires", "nanoparticles", "viruses")


def probe_accuracy(x: np.ndarray, y: np.ndarray, shots: int, seed: int) -> float:
    """Test accuracy of a standardised logistic regression trained on `shots` images per class."""
    rng = np.random.default_rng(seed)
    train = np.concatenate(
        [rng.choice(np.flatnonzero(y == c), shots, replace=False) for c in np.unique(y)]
    )
    test = np.setdiff1d(np.arange(len(y)), train)
    scaler = StandardScaler().fit(x[train])
    clf = LogisticRegression(max_iter=3000).fit(scaler.transform(x[train]), y[train])
    return float((clf.predict(scaler.transform(x[test])) == y[test]).mean())


def calibrate(task: str, size: int, pool: int, shots: int, seeds: int, data_seed: int = 0):
    """Raw-pixel and texture-feature accuracies over seeds; each seed draws a fresh pool.

    Returns:
      (raw accuracies, texture accuracies, class count), arrays of length `seeds`.
    """
    raw, tex = [], []
    for seed in range(seeds):
        data = getattr(synthetic, task)(pool, size, data_seed + seed)
        raw.append(probe_accuracy(raw_pixels(data.images), data.labels, shots, seed))
        tex.append(probe_accuracy(texture_features(data.images), data.labels, shots, seed))
    return np.array(raw), np.array(tex), len(data.class_names)


def contact_sheet(data: synthetic.SyntheticSet, path: str, per_class: int = 6) -> None:
    """Saves a grid: one row of images per class (and a row of masks under it)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows_per_class = 2 if data.masks is not None else 1
    n_rows = rows_per_class * len(data.class_names)
    fig, axes = plt.subplots(n_rows, per_class, figsize=(1.7 * per_class, 1.8 * n_rows))
    axes = np.atleast_2d(axes)
    for c, name in enumerate(data.class_names):
        idx = np.flatnonzero(data.labels == c)[:per_class]
        for j, i in enumerate(idx):
            ax = axes[rows_per_class * c, j]
            ax.imshow(data.images[i], cmap="gray", vmin=0, vmax=1)
            if j == 0:
                ax.set_title(name, fontsize=9, loc="left")
            if data.masks is not None:
                axes[rows_per_class * c + 1, j].imshow(data.masks[i], cmap="gray", vmin=0, vmax=1)
                axes[rows_per_class * c + 1, j].set_title(
                    f"mask, density {pixel_density(data.masks[i]):.2f}", fontsize=6
                )
    for ax in axes.flat:
        ax.set_axis_off()
    fig.tight_layout()
    _save_compact(fig, path, "L")


def _save_compact(fig, path: str, mode: str) -> None:
    """Saves a figure as an optimised PNG in `mode` ('L' for grayscale sheets)."""
    import io

    import matplotlib.pyplot as plt
    from PIL import Image

    buf = io.BytesIO()
    fig.savefig(buf, dpi=72, format="png")
    plt.close(fig)
    buf.seek(0)
    Image.open(buf).convert(mode).save(path, optimize=True)


def generic_sheet(path: str, size: int, n: int = 24) -> None:
    """Contact sheet of unlabeled pretraining images (or colour everyday images)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    kind = "everyday" if "everyday" in os.path.basename(path) else "generic"
    images = getattr(synthetic, kind)(n, size, 0)
    fig, axes = plt.subplots(n // 8, 8, figsize=(13, 1.7 * (n // 8)))
    for ax, img in zip(axes.flat, images, strict=True):
        ax.imshow(img, cmap="gray", vmin=0, vmax=1)
        ax.set_axis_off()
    fig.tight_layout()
    _save_compact(fig, path, "RGB" if kind == "everyday" else "L")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", default=",".join(TASKS))
    parser.add_argument("--size", type=int, default=128, help="generated image size (px)")
    parser.add_argument("--pool", type=int, default=48, help="images per class in the pool")
    parser.add_argument("--shots", type=int, default=8, help="labeled images per class")
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--data_seed", type=int, default=0)
    parser.add_argument("--sheets", default="", help="folder for contact-sheet PNGs")
    parser.add_argument("--sheet_size", type=int, default=256, help="contact-sheet image size")
    args = parser.parse_args()
    for task in args.tasks.split(","):
        start = time.perf_counter()
        raw, tex, n_classes = calibrate(
            task, args.size, args.pool, args.shots, args.seeds, args.data_seed
        )
        q1, med, q3 = np.percentile(raw, (25, 50, 75))
        print(
            f"{task:14s} chance {1 / n_classes:.2f} | {args.shots} labels/class, {args.seeds} "
            f"seeds, {args.pool}/class pools of {args.size}px | raw-pixel logreg median "
            f"{med:.3f} (IQR {q1:.3f}-{q3:.3f}) | texture-feature logreg median "
            f"{np.median(tex):.3f} | {time.perf_counter() - start:.0f}s",
            flush=True,
        )
        if args.sheets:
            os.makedirs(args.sheets, exist_ok=True)
            sheet_data = getattr(synthetic, task)(6, args.sheet_size, args.data_seed)
            contact_sheet(sheet_data, os.path.join(args.sheets, f"{task}.png"))
    if args.sheets:
        generic_sheet(os.path.join(args.sheets, "generic.png"), args.sheet_size)
        generic_sheet(os.path.join(args.sheets, "everyday.png"), args.sheet_size // 2)


if __name__ == "__main__":
    main()
