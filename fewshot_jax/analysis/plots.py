"""The probe's figures (matplotlib, PNG): accuracy boxes, confusion matrices, t-SNE, anchors.

Figures are drawn with matplotlib's object API (``matplotlib.figure.Figure``),
so no display or pyplot backend is needed. Every function writes one PNG and
returns its path; inputs are plain arrays and dicts (the probe task passes
what it wrote to ``results.csv``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

_DPI = 130


def _save(fig: Figure, path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=_DPI, bbox_inches='tight')
    return path


def accuracy_boxplot(
    accuracy: Mapping[str, Mapping[int, Sequence[float]]],
    ci: Mapping[str, Mapping[int, tuple[float, float]]],
    path: str | os.PathLike,
    *,
    title: str = '',
    chance: float | None = None,
    xlabel: str = 'number of labeled images per class',
) -> Path:
    """Notched box plots of accuracy vs labeled images per class, one box per encoder per k.

    Args:
        accuracy: encoder display name → {k: accuracies of its runs}.
        ci: the same keys → {k: (low, high)} confidence interval of the median,
            drawn as the notch (the probe passes its distribution-free 95 % CI).
        path: the PNG to write.
        title: figure title.
        chance: draws a dashed line at this accuracy (1 / classes).
        xlabel: x-axis label.
    """
    encoders = list(accuracy)
    shots = sorted({k for per_k in accuracy.values() for k in per_k})
    width = 0.8 / max(len(encoders), 1)
    fig = Figure(figsize=(max(6.0, 1.1 * len(shots) * max(1, len(encoders)) ** 0.5), 4.2))
    ax = fig.add_subplot()
    colours = [f'C{i % 10}' for i in range(len(encoders))]
    for e, name in enumerate(encoders):
        ks = [k for k in shots if k in accuracy[name]]
        positions = [shots.index(k) + (e - (len(encoders) - 1) / 2) * width for k in ks]
        data = [np.asarray(accuracy[name][k], float) for k in ks]
        intervals = [ci[name][k] for k in ks]
        boxes = ax.boxplot(
            data,
            positions=positions,
            widths=width * 0.85,
            notch=True,
            conf_intervals=intervals,
            patch_artist=True,
            manage_ticks=False,
            flierprops={'markersize': 2.5, 'markeredgecolor': colours[e]},
            medianprops={'color': 'black'},
        )
        for patch in boxes['boxes']:
            patch.set_facecolor(colours[e])
            patch.set_alpha(0.75)
        ax.plot([], [], 's', color=colours[e], label=name)
    if chance is not None:
        ax.axhline(chance, color='gray', ls='--', lw=1, label='chance')
    ax.set_xticks(range(len(shots)), [str(k) for k in shots])
    ax.set_xlabel(xlabel)
    ax.set_ylabel('test accuracy')
    ax.set_ylim(min(0.0, ax.get_ylim()[0]), 1.02)
    ax.grid(axis='y', alpha=0.3)
    ax.legend(fontsize=8, loc='upper left', bbox_to_anchor=(1.01, 1.0), frameon=False)  # never over a box
    if title:
        ax.set_title(title, fontsize=10)
    return _save(fig, path)


def confusion_grid(
    confusions: Mapping[str, np.ndarray],
    class_names: Sequence[str],
    path: str | os.PathLike,
    *,
    title: str = '',
) -> Path:
    """Mean confusion matrices (rows: true class, normalised per row), one panel per encoder."""
    names = list(confusions)
    cols = min(len(names), 4)
    rows = -(-len(names) // cols)
    size = 1.0 + 0.45 * len(class_names)
    fig = Figure(figsize=(cols * size + 0.8, rows * size + 0.6))
    for i, name in enumerate(names):
        ax = fig.add_subplot(rows, cols, i + 1)
        matrix = np.asarray(confusions[name], float)
        totals = matrix.sum(axis=1, keepdims=True)
        share = np.divide(matrix, totals, out=np.zeros_like(matrix), where=totals > 0)
        ax.imshow(share, vmin=0, vmax=1, cmap='Blues')
        for (r, c), value in np.ndenumerate(share):
            ax.text(
                c,
                r,
                f'{value:.2f}',
                ha='center',
                va='center',
                fontsize=7,
                color='white' if value > 0.6 else 'black',
            )
        ticks = range(len(class_names))
        ax.set_xticks(ticks, class_names, rotation=45, ha='right', fontsize=7)
        ax.set_yticks(ticks, class_names if i % cols == 0 else [], fontsize=7)
        ax.set_title(name, fontsize=8)
        if i % cols == 0:
            ax.set_ylabel('true class', fontsize=8)
        ax.set_xlabel('predicted', fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    return _save(fig, path)


def tsne_map(
    features: np.ndarray,
    labels: np.ndarray,
    predicted: np.ndarray,
    class_names: Sequence[str],
    path: str | os.PathLike,
    *,
    title: str = '',
    train_features: np.ndarray | None = None,
    train_labels: np.ndarray | None = None,
    seed: int = 0,
) -> Path:
    """t-SNE of test features coloured by true class, misclassified points ringed in red.

    The training images of the run (the anchors of a 1-shot run) are embedded
    with the test images and drawn as stars (paper Fig. 3C/F).
    """
    from sklearn.manifold import TSNE

    points = np.asarray(features, np.float32)
    if train_features is not None:
        points = np.concatenate([points, np.asarray(train_features, np.float32)])
    points = (points - points.mean(0)) / np.maximum(points.std(0), 1e-12)
    perplexity = float(min(30.0, max(2.0, (len(points) - 1) / 3)))
    method = 'exact' if len(points) <= 2000 else 'barnes_hut'
    embedding = TSNE(
        n_components=2, perplexity=perplexity, init='pca', method=method, random_state=seed
    ).fit_transform(points)
    test_xy, train_xy = embedding[: len(features)], embedding[len(features) :]
    fig = Figure(figsize=(5.0, 4.4))
    ax = fig.add_subplot()
    for label, name in enumerate(class_names):
        chosen = labels == label
        ax.scatter(*test_xy[chosen].T, s=16, color=f'C{label % 10}', label=name)
        if train_labels is not None and len(train_xy):
            anchors = train_labels == label
            ax.scatter(
                *train_xy[anchors].T,
                s=160,
                marker='*',
                color=f'C{label % 10}',
                edgecolors='black',
                linewidths=0.8,
            )
    wrong = predicted != labels
    ax.scatter(
        *test_xy[wrong].T,
        s=60,
        facecolors='none',
        edgecolors='red',
        linewidths=1.0,
        label=f'misclassified ({int(wrong.sum())})',
    )
    ax.legend(fontsize=7)
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=9)
    return _save(fig, path)


def anchor_figure(
    table: Sequence[dict],
    test_densities: Mapping[str, Sequence[np.ndarray]],
    class_names: tuple[str, str],
    path: str | os.PathLike,
    *,
    title: str = '',
) -> Path:
    """Fig. 3D/E/H/I: test-density histograms with anchors for the best and worst runs,
    accuracy and summed anchor-to-median distance by side.

    Args:
        table: rows of ``anchors.anchor_table`` (with ``accuracy``, ``side``,
            ``distance``, ``anchor_<class>``, ``median_<class>`` and ``run``).
        test_densities: {'best': (densities of class 1, of class 2), 'worst': (...)}
            of the test images of the best and worst runs.
        class_names: the two compared classes.
    """
    fig = Figure(figsize=(14.0, 3.6), layout='constrained')
    accuracy = np.asarray([r['accuracy'] for r in table])
    picks = {'best': int(np.argmax(accuracy)), 'worst': int(np.argmin(accuracy))}
    for i, which in enumerate(('best', 'worst')):
        ax = fig.add_subplot(1, 4, i + 1)
        row = table[picks[which]]
        for c, name in enumerate(class_names):
            ax.hist(test_densities[which][c], bins=12, alpha=0.5, color=f'C{c}', label=name)
            ax.axvline(row[f'anchor_{name}'], color=f'C{c}', lw=2)
            ax.axvline(row[f'median_{name}'], color=f'C{c}', lw=1.5, ls='--')
        ax.set_title(f'{which} anchors: accuracy {row["accuracy"]:.2f} ({row["side"]} side)', fontsize=8)
        ax.set_xlabel('pixel density (solid: anchor, dashed: test median)', fontsize=7)
        ax.set_ylabel('test images', fontsize=8)
        ax.legend(fontsize=7)
    sides = ('opposite', 'same')
    for j, (key, label) in enumerate(
        (('accuracy', 'test accuracy'), ('distance', 'summed |anchor − median|'))
    ):
        ax = fig.add_subplot(1, 4, 3 + j)
        groups = [[r[key] for r in table if r['side'] == side] for side in sides]
        shown = [(side, g) for side, g in zip(sides, groups, strict=True) if g]
        ax.boxplot([g for _, g in shown], tick_labels=[f'{s}\n(n={len(g)})' for s, g in shown])
        ax.set_ylabel(label, fontsize=8)
        ax.set_title(f'{label} by anchor side', fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    return _save(fig, path)
