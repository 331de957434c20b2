"""One-shot anchor analysis (paper Fig. 3D–I): why some single labeled images teach better.

With one labeled image per class, the two confusable classes (dispersed vs
network nanowires) are each represented by one *anchor*. For each 1-shot run
this compares each anchor's pixel density (foreground fraction of its mask)
with the median density of its class in that run's test part:

* **opposite side**: one anchor lies above its class median and the other
  below (``(a₁ − m₁)·(a₂ − m₂) < 0``); **same side** otherwise (an anchor
  exactly at its median counts as same side);
* the **summed distance** ``|a₁ − m₁| + |a₂ − m₂|``.

The paper found 25 opposite-side vs 75 same-side runs of 100, with higher
accuracy and smaller summed distance on the opposite side. This module turns
runs into that table and its summary; ``plots.anchor_figure`` draws it.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from fewshot_jax.masks import pixel_density

OPPOSITE, SAME = 'opposite', 'same'


class AnchorError(ValueError):
    """Runs or masks the anchor analysis cannot use (names the class, run or image)."""


def densities(masks, indices) -> dict[int, float]:
    """Pixel density of the masks of the given images: {index: density}."""
    return {int(i): pixel_density(masks[int(i)]) for i in indices}


def anchor_table(
    labels, masks, runs: Sequence[dict], classes: tuple[int, int], class_names: Sequence[str] | None = None
) -> list[dict]:
    """The per-run anchor table.

    Args:
        labels: (N,) class ids.
        masks: (N, H, W) binary masks, or a mapping index → mask; only the
            anchors and test images of the two classes are read.
        runs: 1-shot runs, each a dict with ``train`` (indices, one per class),
            ``test`` (indices) and ``accuracy``; other keys are copied through.
        classes: the two class ids compared (e.g. dispersed, network).
        class_names: for messages.

    Returns:
        One dict per run: the run's keys plus ``anchor_<c>``, ``median_<c>``
        (densities for each of the two classes c), ``side`` and ``distance``.

    Raises:
        AnchorError: a run with other than one anchor per compared class, a
            class with no test images in a run, or a missing mask.
    """
    labels = np.asarray(labels)
    first, second = (int(c) for c in classes)
    names = {c: (class_names[c] if class_names is not None else str(c)) for c in (first, second)}
    cache: dict[int, float] = {}

    def density(index: int) -> float:
        if index not in cache:
            try:
                mask = masks[index]
            except (KeyError, IndexError):
                mask = None
            if mask is None:
                label = names.get(int(labels[index]), int(labels[index]))
                raise AnchorError(
                    f'image {index} (class {label!r}) has no mask; the anchor '
                    'analysis needs masks of both classes'
                )
            cache[index] = pixel_density(mask)
        return cache[index]

    table = []
    for number, run in enumerate(runs):
        row = {k: v for k, v in run.items() if k not in ('train', 'test')}
        train, test = np.asarray(run['train']), np.asarray(run['test'])
        anchors, medians = {}, {}
        for c in (first, second):
            anchor = train[labels[train] == c]
            if len(anchor) != 1:
                raise AnchorError(
                    f'run {number}: {len(anchor)} training images of class '
                    f'{names[c]!r}; the anchor analysis takes 1-shot runs'
                )
            members = test[labels[test] == c]
            if len(members) == 0:
                raise AnchorError(f'run {number}: no test image of class {names[c]!r}')
            anchors[c] = density(int(anchor[0]))
            medians[c] = float(np.median([density(int(i)) for i in members]))
            row[f'anchor_{names[c]}'] = anchors[c]
            row[f'median_{names[c]}'] = medians[c]
        product = (anchors[first] - medians[first]) * (anchors[second] - medians[second])
        row['side'] = OPPOSITE if product < 0 else SAME
        row['distance'] = abs(anchors[first] - medians[first]) + abs(anchors[second] - medians[second])
        table.append(row)
    return table


def summarize(table: Sequence[dict]) -> dict:
    """Counts, median accuracy and median summed distance per side, and a rank test.

    Returns:
        ``{'opposite': {'count', 'median_accuracy', 'median_distance'}, 'same': {...},
        'mannwhitney_p'}``; the p-value (one-sided: opposite-side accuracy
        greater) is None when a side is empty.
    """
    from scipy.stats import mannwhitneyu

    out: dict = {}
    groups = {}
    for side in (OPPOSITE, SAME):
        rows = [r for r in table if r['side'] == side]
        accuracy = np.asarray([r['accuracy'] for r in rows], float)
        distance = np.asarray([r['distance'] for r in rows], float)
        groups[side] = accuracy
        out[side] = {
            'count': len(rows),
            'median_accuracy': float(np.median(accuracy)) if len(rows) else None,
            'median_distance': float(np.median(distance)) if len(rows) else None,
        }
    if len(groups[OPPOSITE]) and len(groups[SAME]):
        out['mannwhitney_p'] = float(
            mannwhitneyu(groups[OPPOSITE], groups[SAME], alternative='greater').pvalue
        )
    else:
        out['mannwhitney_p'] = None
    return out
