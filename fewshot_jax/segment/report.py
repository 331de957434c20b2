"""Scores, tables and figures of the segmentation stage (paper Fig. 4).

Rows are plain dicts, one per test image × resolution × k × encoder; this module
turns predicted probabilities into rows (Dice, IoU, soft scores, percolation,
pixel density), writes ``results.csv``, summarises medians, and draws the notched
box plots (Fig. 4B), the median-Dice curve over k and the image / truth /
prediction overlays (Fig. 4A). It reads only what the stage wrote.
"""

from __future__ import annotations

import csv
import os
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from fewshot_jax import masks as mask_geometry
from fewshot_jax.analysis.stats import t_interval
from fewshot_jax.segment import metrics

COLUMNS = (
    'encoder',
    'resolution',
    'k',
    'draw',
    'image',
    'class',
    'dice',
    'iou',
    'soft_dice',
    'soft_iou',
    'percolates_true',
    'percolates_pred',
    'density_true',
    'density_pred',
)


def score_rows(
    prob: np.ndarray,
    true: np.ndarray,
    *,
    encoder: str,
    resolution: int,
    k: int,
    names: Sequence[str],
    classes: Sequence[str],
    threshold: float = 0.5,
    draw: int = 0,
) -> list[dict]:
    """One row per image: scores of binary probabilities ``prob`` (N, H, W) against ``true``,
    on draw ``draw`` of the split and k-shot sets.

    A baseline that outputs masks (Otsu) passes them as ``prob``; its soft scores are then
    those of the hard mask.
    """
    prob = np.asarray(prob, np.float32)
    true = np.asarray(true)
    pred = (prob >= threshold).astype(np.uint8)
    scores = {
        name: np.asarray(fn(prob, true))
        for name, fn in (
            ('dice', lambda p, t: metrics.dice(p, t, threshold)),
            ('iou', lambda p, t: metrics.iou(p, t, threshold)),
            ('soft_dice', metrics.soft_dice),
            ('soft_iou', metrics.soft_iou),
        )
    }
    rows = []
    for i in range(len(prob)):
        rows.append(
            {
                'encoder': encoder,
                'resolution': int(resolution),
                'k': int(k),
                'draw': int(draw),
                'image': names[i],
                'class': classes[i],
                **{name: round(float(values[i]), 6) for name, values in scores.items()},
                'percolates_true': bool(mask_geometry.percolates(true[i])),
                'percolates_pred': bool(mask_geometry.percolates(pred[i])),
                'density_true': round(mask_geometry.pixel_density(true[i]), 6),
                'density_pred': round(mask_geometry.pixel_density(pred[i]), 6),
            }
        )
    return rows


def write_csv(rows: Sequence[dict], path: str | os.PathLike) -> Path:
    """Writes ``rows`` with :data:`COLUMNS` (atomically)."""
    path = Path(path)
    tmp = path.with_name(path.name + '.tmp')
    with tmp.open('w', newline='') as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS, extrasaction='ignore')
        writer.writeheader()
        writer.writerows(rows)
    os.replace(tmp, path)
    return path


def summarize(rows: Sequence[dict]) -> list[dict]:
    """Per (encoder, resolution, k): median Dice and IoU, percolation agreement, density error."""
    groups = defaultdict(list)
    for row in rows:
        groups[(row['encoder'], row['resolution'], row['k'])].append(row)
    out = []
    for (encoder, resolution, k), group in groups.items():
        dice = np.asarray([r['dice'] for r in group])
        out.append(
            {
                'encoder': encoder,
                'resolution': resolution,
                'k': k,
                'n_test': len(group),
                'median_dice': round(float(np.median(dice)), 4),
                'q1_dice': round(float(np.percentile(dice, 25)), 4),
                'q3_dice': round(float(np.percentile(dice, 75)), 4),
                'median_iou': round(float(np.median([r['iou'] for r in group])), 4),
                'median_soft_dice': round(float(np.median([r['soft_dice'] for r in group])), 4),
                'percolation_agreement': round(
                    float(np.mean([r['percolates_true'] == r['percolates_pred'] for r in group])), 4
                ),
                'density_mae': round(
                    float(np.mean([abs(r['density_true'] - r['density_pred']) for r in group])), 5
                ),
            }
        )
    return sorted(out, key=lambda s: (s['encoder'], s['resolution'], s['k']))


def draw_gaps(rows: Sequence[dict]) -> list[dict]:
    """The first-listed encoder against every other entry (Otsu included), paired by draw.

    Per (resolution, k) and draw: the difference of the two entries' median Dice on that
    draw's test images; then the mean over draws with a 95 % t-interval over the draws
    (each draw is an independent split and k-shot set; ``low``/``high`` are None with
    one draw, which says nothing about draw-to-draw spread).
    """
    medians = defaultdict(list)
    for row in rows:
        medians[(row['encoder'], row['resolution'], row['k'], row.get('draw', 0))].append(row['dice'])
    entries = list(dict.fromkeys(row['encoder'] for row in rows))
    learned = [e for e in entries if e != 'otsu']
    if not learned:
        return []
    first = learned[0]
    out = []
    for resolution, k in sorted({(r['resolution'], r['k']) for r in rows}):
        draws = sorted({d for (e, r, kk, d) in medians if (e, r, kk) == (first, resolution, k)})
        for other in [e for e in entries if e != first]:
            gaps = [
                float(
                    np.median(medians[(first, resolution, k, d)])
                    - np.median(medians[(other, resolution, k, d)])
                )
                for d in draws
                if (other, resolution, k, d) in medians
            ]
            if not gaps:
                continue
            mean, low, high = t_interval(gaps)
            out.append(
                {
                    'encoder': first,
                    'versus': other,
                    'resolution': resolution,
                    'k': k,
                    'draws': len(gaps),
                    'mean_gap': round(mean, 4),
                    'low': None if np.isnan(low) else round(low, 4),
                    'high': None if np.isnan(high) else round(high, 4),
                }
            )
    return out


def format_gaps(gaps: Sequence[dict]) -> str:
    """The paired gaps of :func:`draw_gaps` as aligned text."""
    lines = [f'{"median Dice gap":<34} {"px":>5} {"k":>3} {"draws":>5}  mean [95 % over draws]']
    for g in gaps:
        interval = (
            f'[{g["low"]:+.3f}, {g["high"]:+.3f}]' if g['low'] is not None else '(one draw: no interval)'
        )
        lines.append(
            f'{g["encoder"] + " - " + g["versus"]:<34} {g["resolution"]:>5} {g["k"]:>3} {g["draws"]:>5}  '
            f'{g["mean_gap"]:+.3f} {interval}'
        )
    return '\n'.join(lines)


def format_table(summary: Sequence[dict]) -> str:
    """The summary as aligned text, one line per (encoder, resolution, k)."""
    lines = [
        f'{"encoder":<16} {"px":>5} {"k":>3} {"n":>3} {"Dice (median [IQR])":>22} '
        f'{"IoU":>6} {"perc. agree":>11} {"density MAE":>11}'
    ]
    for s in summary:
        lines.append(
            f'{s["encoder"]:<16} {s["resolution"]:>5} {s["k"]:>3} {s["n_test"]:>3} '
            f'{s["median_dice"]:>8.3f} [{s["q1_dice"]:.3f}, {s["q3_dice"]:.3f}] '
            f'{s["median_iou"]:>6.3f} {s["percolation_agreement"]:>11.3f} '
            f'{s["density_mae"]:>11.4f}'
        )
    return '\n'.join(lines)


def _plt():
    import matplotlib

    matplotlib.use('Agg', force=False)
    import matplotlib.pyplot as plt

    return plt


def box_plots(rows: Sequence[dict], path: str | os.PathLike) -> Path:
    """Notched box plots of Dice and IoU vs labeled images per class, one box per resolution,
    one row of panels per encoder (paper Fig. 4B). Notches: ~95% CI of the median."""
    plt = _plt()
    encoders = list(dict.fromkeys(r['encoder'] for r in rows))
    shots = sorted({r['k'] for r in rows})
    resolutions = sorted({r['resolution'] for r in rows})
    fig, axes = plt.subplots(len(encoders), 2, figsize=(10, 3.2 * len(encoders)), squeeze=False)
    width = 0.8 / len(resolutions)
    colors = plt.get_cmap('viridis')(np.linspace(0.1, 0.9, len(resolutions)))
    for row_axes, encoder in zip(axes, encoders, strict=True):
        for ax, metric in zip(row_axes, ('dice', 'iou'), strict=True):
            for j, (res, color) in enumerate(zip(resolutions, colors, strict=True)):
                data, where = [], []
                for x, k in enumerate(shots):
                    values = [
                        r[metric]
                        for r in rows
                        if r['encoder'] == encoder and r['k'] == k and r['resolution'] == res
                    ]
                    if values:
                        data.append(values)
                        where.append(x - 0.4 + width * (j + 0.5))
                if not data:
                    continue
                parts = ax.boxplot(
                    data,
                    positions=where,
                    widths=width * 0.9,
                    notch=True,
                    patch_artist=True,
                    showfliers=True,
                    flierprops={'markersize': 2},
                )
                for patch in parts['boxes']:
                    patch.set_facecolor(color)
                ax.plot([], [], color=color, lw=6, label=f'{res} px')
            ax.set_xticks(range(len(shots)), [str(k) for k in shots])
            ax.set_xlabel('labeled images per class')
            ax.set_ylabel('Dice' if metric == 'dice' else 'IoU')
            ax.set_ylim(0, 1)
            ax.set_title(f'{encoder}: {"Dice" if metric == "dice" else "IoU"}')
            ax.legend(fontsize=7, loc='lower right')
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return Path(path)


def curve_over_k(summary: Sequence[dict], path: str | os.PathLike) -> Path:
    """Median test Dice vs k, a line per encoder and resolution."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    keys = sorted({(s['encoder'], s['resolution']) for s in summary})
    for encoder, res in keys:
        points = sorted(
            (s['k'], s['median_dice']) for s in summary if s['encoder'] == encoder and s['resolution'] == res
        )
        style = '--' if encoder in ('otsu', 'none') else '-'
        ax.plot(
            [k for k, _ in points], [d for _, d in points], style, marker='o', label=f'{encoder}, {res} px'
        )
    ax.set_xscale('log', base=2)
    ax.set_xlabel('labeled images per class')
    ax.set_ylabel('median test Dice')
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return Path(path)


def overlays(panels: Sequence[dict], path: str | os.PathLike, title: str = '') -> Path:
    """Image / true mask / prediction with the scores in the title (paper Fig. 4A).

    Args:
        panels: dicts with 'image' (H, W), 'true' (H, W), 'prob' (H, W), 'label' (a row
            title, e.g. '256 px, k=8') and 'dice', 'iou'.
        path: the PNG to write.
        title: the figure title.
    """
    plt = _plt()
    fig, axes = plt.subplots(len(panels), 3, figsize=(7.5, 2.6 * len(panels)), squeeze=False)
    for row, panel in zip(axes, panels, strict=True):
        row[0].imshow(panel['image'], cmap='gray', vmin=0, vmax=255)
        row[0].set_title(panel['label'], fontsize=8)
        row[1].imshow(panel['true'], cmap='gray', vmin=0, vmax=1)
        row[1].set_title('true mask', fontsize=8)
        row[2].imshow(panel['prob'], cmap='gray', vmin=0, vmax=1)
        row[2].set_title(f'prediction: Dice {panel["dice"]:.3f}, IoU {panel["iou"]:.3f}', fontsize=8)
        for ax in row:
            ax.axis('off')
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)
