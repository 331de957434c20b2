"""What the ``select`` task writes: the list of images to label and their contact sheet."""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

CSV_FIELDS = ('order', 'file', 'cluster', 'cluster_size', 'distance_to_centroid')


def write_to_label(path: str | os.PathLike, rows: Sequence[dict]) -> Path:
    """Writes ``to_label.csv``: one row per pick (:data:`CSV_FIELDS`), in labeling order.

    A missing distance (NaN: strategies that do not pick relative to a centroid) is left blank.
    """
    path = Path(path)
    with open(path, 'w', newline='') as handle:
        writer = csv.DictWriter(handle, fieldnames=CSV_FIELDS)
        writer.writeheader()
        for row in rows:
            distance = row['distance_to_centroid']
            blank = distance is None or (isinstance(distance, float) and math.isnan(distance))
            writer.writerow({**row, 'distance_to_centroid': '' if blank else f'{distance:.6g}'})
    return path


def write_duplicates(path: str | os.PathLike, groups: Sequence[Sequence[str]]) -> Path:
    """Writes ``duplicates.csv``: one row per duplicate file, with the file it repeats (the one kept)."""
    path = Path(path)
    with open(path, 'w', newline='') as handle:
        writer = csv.writer(handle)
        writer.writerow(('group', 'kept', 'duplicate'))
        for g, group in enumerate(groups):
            for duplicate in group[1:]:
                writer.writerow((g, group[0], duplicate))
    return path


def contact_sheet(
    images: np.ndarray,
    titles: Sequence[str],
    path: str | os.PathLike,
    *,
    columns: int = 8,
    title: str = '',
) -> Path:
    """Draws the images in a grid, each under its title, and saves the PNG.

    Args:
        images: (B, H, W) or (B, H, W, 3) uint8, in the order to show them (row by row).
        titles: one short title per image (its labeling order).
        path: the PNG to write.
        columns: images per row.
        title: the sheet's title.
    """
    from matplotlib.figure import Figure  # matplotlib only when a sheet is drawn

    count = len(images)
    columns = max(1, min(columns, count))
    rows = -(-count // columns)
    fig = Figure(figsize=(1.6 * columns, 1.75 * rows + (0.4 if title else 0.0)))
    axes = fig.subplots(rows, columns, squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.set_axis_off()
        if i < count:
            ax.imshow(images[i], cmap='gray', vmin=0, vmax=255, interpolation='nearest')
            ax.set_title(titles[i], fontsize=9)
    if title:
        fig.suptitle(title, fontsize=10)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches='tight')
    return path
