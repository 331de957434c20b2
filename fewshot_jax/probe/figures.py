"""The probe task's figures and anchor analysis, from its grid results (``workdir/figures``).

* ``accuracy_<head>.png``: notched boxes of test accuracy per encoder and k
  (paper Fig. 2C/5D/6J; in tuning mode one box per encoder, Fig. 8);
* ``confusion_<head>.png``: mean confusion matrices per encoder at
  ``probe.figure_k`` (8 by default, else the largest k);
* ``tsne_best.png`` / ``tsne_worst.png``: t-SNE of the test features of the best
  and worst run at the smallest k for ``probe.tsne_encoder`` (default: the
  first pretrained encoder), misclassified points ringed (Fig. 3C/F);
* ``anchors.png`` and ``probe/anchors.csv``: the one-shot anchor analysis
  (Fig. 3D–I) when k = 1 is in the grid and the data have masks of both
  ``probe.anchor_classes``.
"""

from __future__ import annotations

import csv
import json
import logging
from pathlib import Path

import numpy as np

from fewshot_jax.analysis import anchors, plots
from fewshot_jax.errors import ConfigError
from fewshot_jax.probe import features as features_lib
from fewshot_jax.probe import grid as probe_grid

log = logging.getLogger(__name__)


def draw_all(config, folder: Path, mode, heads, results, rows, data, feature_sets):
    """Draws every figure that the mode and data allow.

    Returns:
        (list of written paths as strings, the anchor summary or None).
    """
    cfg = config.probe
    class_names = list(data.class_names)
    chance = 1.0 / len(class_names)
    paths = []
    for head in heads:
        head_rows = [r for r in rows if r['head'] == head]
        accuracy: dict = {}
        for r in head_rows:
            accuracy.setdefault(r['encoder'], {}).setdefault(int(r['k']), []).append(r['accuracy'])
        ci = {e: {k: probe_grid.median_ci(v) for k, v in by_k.items()} for e, by_k in accuracy.items()}
        xlabel = (
            'cross-validation folds inside the training part'
            if mode == 'tuning'
            else 'number of labeled images per class'
        )
        paths.append(
            plots.accuracy_boxplot(
                accuracy,
                ci,
                folder / f'accuracy_{head}.png',
                chance=chance,
                xlabel=xlabel,
                title=f'{head} probe: {data.description}',
            )
        )
        shots = sorted({int(r['k']) for r in head_rows})
        k_fig = int(cfg.get('figure_k', 8))
        k_fig = k_fig if k_fig in shots else shots[-1]
        confusions = {}
        for r in head_rows:
            if int(r['k']) == k_fig:
                confusions.setdefault(r['encoder'], []).append(np.asarray(json.loads(r['confusion'])))
        mean = {e: np.mean(c, axis=0) for e, c in confusions.items()}
        label = 'cross-validation' if mode == 'tuning' else f'k = {k_fig}'
        paths.append(
            plots.confusion_grid(
                mean,
                class_names,
                folder / f'confusion_{head}.png',
                title=f'mean confusion, {head} probe, {label}',
            )
        )
    anchor_summary = None
    if mode == 'protocol':
        encoder = _chosen_encoder(cfg, feature_sets)
        result = results[heads[0]]
        paths += _tsne(result, encoder, data, feature_sets, folder, heads[0])
        anchor_summary, anchor_paths = _anchors(cfg, result, encoder, data, folder)
        paths += anchor_paths
    return [str(p) for p in paths], anchor_summary


def _chosen_encoder(cfg, feature_sets) -> str:
    wanted = cfg.get('tsne_encoder', '') or ''
    names = [s.name for s in feature_sets]
    if wanted:
        if wanted not in names:
            raise ConfigError(f'probe.tsne_encoder={wanted!r}: expected one of {names}')
        return wanted
    for s in feature_sets:
        if s.spec not in features_lib.BASELINES and not s.spec.startswith(features_lib.RANDOM_INIT):
            return s.name
    return names[0]


def _rows_of(result, encoder: str, k: int) -> list[int]:
    return [
        i
        for i, (name, run) in enumerate(zip(result.encoders, result.runs, strict=True))
        if name == encoder and run.k == k
    ]


def _tsne(result, encoder, data, feature_sets, folder, head):
    k = min(run.k for run in result.runs)
    chosen = _rows_of(result, encoder, k)
    if not chosen:
        return []
    matrix = next(s.features for s in feature_sets if s.name == encoder)
    accuracy = [result.metrics[i]['accuracy'] for i in chosen]
    paths = []
    for which, i in (('best', chosen[int(np.argmax(accuracy))]), ('worst', chosen[int(np.argmin(accuracy))])):
        run = result.runs[i]
        predicted = result.predictions[i, : len(run.test)]
        paths.append(
            plots.tsne_map(
                matrix[run.test],
                data.labels[run.test],
                predicted,
                data.class_names,
                folder / f'tsne_{which}.png',
                train_features=matrix[run.train],
                train_labels=data.labels[run.train],
                title=f'{encoder}, {head}, k = {k}: {which} run (split {run.split_seed}, draw '
                f'{run.draw}), accuracy {result.metrics[i]["accuracy"]:.2f}',
            )
        )
    return paths


def _anchors(cfg, result, encoder, data, folder):
    names = tuple(cfg.get('anchor_classes', ('dispersed', 'network')))
    if data.masks is None or any(n not in data.class_names for n in names):
        return None, []
    chosen = _rows_of(result, encoder, 1)
    if not chosen:
        return None, []
    classes = tuple(data.class_names.index(n) for n in names)
    masks = {int(i): data.masks[i] for i in np.flatnonzero(data.has_mask)}
    runs = [
        {
            'run': i,
            'split_seed': result.runs[i].split_seed,
            'draw': result.runs[i].draw,
            'accuracy': result.metrics[i]['accuracy'],
            'train': result.runs[i].train,
            'test': result.runs[i].test,
        }
        for i in chosen
    ]
    try:
        table = anchors.anchor_table(data.labels, masks, runs, classes, data.class_names)
    except anchors.AnchorError as err:
        log.warning('anchor analysis skipped: %s', err)
        return None, []
    summary = {'encoder': encoder, 'classes': list(names), **anchors.summarize(table)}
    accuracy = [r['accuracy'] for r in table]
    test_densities = {}
    for which, r in (('best', int(np.argmax(accuracy))), ('worst', int(np.argmin(accuracy)))):
        test = runs[r]['test']
        test_densities[which] = [
            [anchors.densities(masks, [i])[int(i)] for i in test[data.labels[test] == c]] for c in classes
        ]
    path = plots.anchor_figure(
        table,
        test_densities,
        names,
        folder / 'anchors.png',
        title=f'one-shot anchors, {encoder}: {summary["opposite"]["count"]} '
        f'opposite-side vs {summary["same"]["count"]} same-side runs',
    )
    out = folder.parent / 'probe' / 'anchors.csv'
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, 'w', newline='') as handle:
        writer = csv.DictWriter(handle, fieldnames=list(table[0]))
        writer.writeheader()
        writer.writerows(table)
    return summary, [path]
