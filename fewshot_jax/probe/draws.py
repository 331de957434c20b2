"""Training sets chosen by a selection strategy instead of drawn at random (``probe.draw``).

``probe.draw`` names how the k-shot training sets are drawn; the protocol's own
draw always runs and is the reference every strategy is paired with:

* ``'random'``: the protocol's draw, k labeled images per class
  (``data.splits.k_shot_indices``; it knows the labels, so every class is in);
* ``'uniform'``: B = k × classes images of the training part drawn uniformly
  without labels (``select`` method ``'random'``): what a random pick gives a
  scientist who has no labels yet. Its gap to ``'random'`` is what class balance
  alone is worth;
* ``'kmeans'``, ``'typical'``, ``'coreset'``: the ``fewshot_jax.select`` strategies
  on the probed encoder's features of the training part, budget B = k × classes.

Label blindness: a strategy is given the training part's indices and the
encoder's features, never the labels; labels are read after the selection, to
fit and to score. The strategies' seed is drawn from (``probe.shot_seed``, split
seed, draw) (:func:`selection_seed`): one seed for every split would give, e.g., the
uniform draw the same positions within every split's training part.

A selected set may miss classes. The classifier is then fitted on the classes it
has and never predicts the others, whose test images count as errors: what a
scientist who labeled those images would get. A set of one class predicts it.

Results: a selected run is a row of ``results.csv`` labelled
``'<encoder> (<strategy>)'`` (column ``selection``), so the accuracy boxes show it
beside the encoder's random draws and the same baselines; :func:`paired_gaps`
gives per encoder, strategy and k the paired gap (strategy − random on the same
split, each averaged over its draws) with a 95 % t-interval over splits.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from fewshot_jax.errors import ConfigError
from fewshot_jax.probe import grid
from fewshot_jax.select.strategies import select

DRAWS = ('random', 'uniform', 'kmeans', 'typical', 'coreset')
# probe.draw name → fewshot_jax.select method.
_STRATEGY = {'uniform': 'random', 'kmeans': 'kmeans', 'typical': 'typical', 'coreset': 'coreset'}


def parse_draws(value) -> tuple[str, ...]:
    """``probe.draw`` (a name, comma-separated names or a sequence) → ``('random', *strategies)``."""
    items = value.split(',') if isinstance(value, str) else list(value)
    names = tuple(dict.fromkeys(str(v).strip() for v in items if str(v).strip()))
    if not names or any(n not in DRAWS for n in names):
        raise ConfigError(f'probe.draw={value!r}: expected one or more of {DRAWS} (comma-separated)')
    return ('random',) + tuple(n for n in names if n != 'random')


def label(encoder: str, method: str) -> str:
    """The display name of an encoder's runs drawn by ``method``."""
    return encoder if method == 'random' else f'{encoder} ({method})'


def chooser(features, shots: Sequence[int], num_classes: int, method: str, seed: int):
    """The ``choose(train_part, split_seed, draw) -> {k: indices}`` of ``grid.protocol_plan``.

    Args:
        features: (N, D) features of every labeled image (one encoder's).
        shots: the k values; the budget of k is k × ``num_classes``.
        num_classes: classes of the data set (the budget's unit, not a label).
        method: a strategy of :data:`DRAWS` other than ``'random'``.
        seed: ``probe.shot_seed``; each split and draw selects with :func:`selection_seed`.

    Raises:
        ConfigError: a budget above the distinct training images.
    """
    features = np.asarray(features)

    def choose(train_part, split_seed, draw):
        pool = features[train_part]
        sets = {}
        for k in shots:
            try:
                picks = select(
                    pool,
                    int(k) * num_classes,
                    _STRATEGY[method],
                    seed=selection_seed(seed, split_seed, draw),
                )
            except ConfigError as err:
                raise ConfigError(f'probe.draw={method!r} at k={k}: {err}') from None
            sets[int(k)] = np.sort(np.asarray(train_part)[picks.indices]).astype(np.int64)
        return sets

    return choose


def selection_seed(shot_seed: int, split_seed: int, draw: int) -> int:
    """The strategies' seed for one split (-1: the data set's own split) and draw."""
    sequence = np.random.SeedSequence([int(shot_seed), int(split_seed) + 1, int(draw)])
    return int(sequence.generate_state(1)[0])


def evaluate_selected(
    features, labels, plan: Sequence[grid.RunSpec], *, name: str, num_classes: int, **evaluate
) -> grid.GridResult:
    """``grid.evaluate_grid`` for one encoder's selected runs, some of which may miss classes.

    Runs are grouped by the classes their training set holds; each group is fitted
    over its classes only (labels renumbered), and its predictions mapped back.

    Args:
        features: (N, D) the encoder's features.
        labels: (N,) class ids.
        plan: runs whose training sets came from :func:`chooser`.
        name: the encoder's display name.
        num_classes: K.
        **evaluate: ``head``, ``options``, ``chunk_values`` of ``grid.evaluate_grid``.
    """
    labels = np.asarray(labels)
    m = max(len(run.test) for run in plan)
    predictions = np.full((len(plan), m), -1, np.int64)
    scores = np.full((len(plan), m, num_classes), np.nan, np.float32)
    diagnostics: list[dict] = [{} for _ in plan]
    groups: dict[tuple[int, ...], list[int]] = {}
    for i, run in enumerate(plan):
        groups.setdefault(tuple(np.unique(labels[run.train]).tolist()), []).append(i)
    for present, members in groups.items():
        present = np.asarray(present, np.int64)
        if present.size == 1:  # nothing to fit: every image is the one class labeled
            for i in members:
                predictions[i, : len(plan[i].test)] = present[0]
            continue
        local = np.full(num_classes, -1, np.int64)
        local[present] = np.arange(present.size)
        # Absent classes' images never train nor early-stop (their holdout rows are dropped);
        # the 0 only keeps the label array valid for their test rows, which are scored below.
        renumbered = np.maximum(local[labels], 0)
        runs = [
            dataclasses.replace(plan[i], holdout=plan[i].holdout[local[labels[plan[i].holdout]] >= 0])
            for i in members
        ]
        result = grid.evaluate_grid(
            {name: features}, renumbered, runs, num_classes=int(present.size), **evaluate
        )
        for j, i in enumerate(members):
            size = len(plan[i].test)
            predictions[i, :size] = present[result.predictions[j, :size]]
            block = scores[i]
            block[:size, present] = result.scores[j, :size]
            diagnostics[i] = result.diagnostics[j]
    metrics = [
        grid.classification_metrics(predictions[i, : len(run.test)], labels[run.test], num_classes)
        for i, run in enumerate(plan)
    ]
    return grid.GridResult(
        [label(name, run.method) for run in plan], list(plan), predictions, metrics, diagnostics, scores
    )


def merge(results: Sequence[grid.GridResult], encoders: Sequence[str]) -> grid.GridResult:
    """One GridResult of several, each encoder's strategies right after its random draws.

    Args:
        results: the random draws' result and the selected runs' results.
        encoders: the encoders' display names in the order to report them.

    Returns:
        The rows grouped by encoder (in ``encoders`` order), in their given order within
        an encoder; predictions and scores padded to the widest test part.
    """
    merged = _concatenate(results)
    base = [_base(name, run.method) for name, run in zip(merged.encoders, merged.runs, strict=True)]
    order = sorted(range(len(base)), key=lambda i: list(encoders).index(base[i]))
    return grid.GridResult(
        [merged.encoders[i] for i in order],
        [merged.runs[i] for i in order],
        merged.predictions[order],
        [merged.metrics[i] for i in order],
        [merged.diagnostics[i] for i in order],
        merged.scores[order],
    )


def _base(name: str, method: str) -> str:
    """The encoder of a row labelled by :func:`label`."""
    return name if method == 'random' else name[: -len(f' ({method})')]


def _concatenate(results: Sequence[grid.GridResult]) -> grid.GridResult:
    m = max(r.predictions.shape[1] for r in results)
    k = results[0].scores.shape[2]
    predictions = np.concatenate(
        [
            np.pad(r.predictions, ((0, 0), (0, m - r.predictions.shape[1])), constant_values=-1)
            for r in results
        ]
    )
    scores = np.concatenate(
        [
            np.pad(r.scores, ((0, 0), (0, m - r.scores.shape[1]), (0, 0)), constant_values=np.nan)
            for r in results
        ]
    ).reshape(-1, m, k)
    return grid.GridResult(
        [e for r in results for e in r.encoders],
        [run for r in results for run in r.runs],
        predictions,
        [x for r in results for x in r.metrics],
        [x for r in results for x in r.diagnostics],
        scores,
    )


def t_interval(values, level: float = 0.95) -> tuple[float, float, float]:
    """``(mean, low, high)``: Student's t confidence interval of the mean (NaN bounds below 2 values)."""
    from scipy.stats import t

    x = np.asarray(values, float)
    if x.size == 0:
        return math.nan, math.nan, math.nan
    mean = float(x.mean())
    if x.size < 2:
        return mean, math.nan, math.nan
    half = float(t.ppf(0.5 + level / 2, x.size - 1) * x.std(ddof=1) / math.sqrt(x.size))
    return mean, mean - half, mean + half


def paired_gaps(rows: Sequence[Mapping], level: float = 0.95) -> dict:
    """Per head, encoder, strategy and k: the strategy's gap to random draws on the same splits.

    Args:
        rows: ``results.csv`` rows (``head``, ``encoder``, ``selection``, ``split_seed``,
            ``k``, ``accuracy``); a strategy's row names its encoder as :func:`label` does.
        level: coverage of the interval.

    Returns:
        ``{head: {encoder: {strategy: {k: {'gap_mean', 'ci95', 'splits', 'wins', 'losses',
        'median', 'random_median'}}}}}``: the mean over splits of (strategy accuracy −
        random accuracy), each averaged over the split's draws, its t-interval over
        splits, the splits where the strategy was better / worse, and both medians over runs.
    """
    accuracy: dict = {}
    for row in rows:
        method = row.get('selection', 'random')
        base = _base(row['encoder'], method)
        per_split = accuracy.setdefault((row['head'], base, method, int(row['k'])), {})
        per_split.setdefault(row['split_seed'], []).append(float(row['accuracy']))
    out: dict = {}
    for (head, base, method, k), per_split in accuracy.items():
        reference = accuracy.get((head, base, 'random', k))
        if method == 'random' or reference is None:
            continue
        shared = sorted(set(per_split) & set(reference))
        gaps = [float(np.mean(per_split[s]) - np.mean(reference[s])) for s in shared]
        mean, low, high = t_interval(gaps, level)
        out.setdefault(head, {}).setdefault(base, {}).setdefault(method, {})[str(k)] = {
            'gap_mean': mean,
            'ci95': [low, high],
            'splits': len(gaps),
            'wins': int(sum(g > 0 for g in gaps)),
            'losses': int(sum(g < 0 for g in gaps)),
            'median': float(np.median([a for s in shared for a in per_split[s]])),
            'random_median': float(np.median([a for s in shared for a in reference[s]])),
        }
    return out


def gap_figure(gaps: Mapping, path, *, title: str = '') -> Path:
    """Paired gap (strategy − random) per k with its 95 % interval, one marker per encoder × strategy.

    Args:
        gaps: one head's part of :func:`paired_gaps` (``{encoder: {strategy: {k: ...}}}``).
        path: the PNG to write.
        title: the figure's title.
    """
    from matplotlib.figure import Figure

    series = [(e, s, by_k) for e, by_s in gaps.items() for s, by_k in by_s.items()]
    shots = sorted({int(k) for _, _, by_k in series for k in by_k})
    fig = Figure(figsize=(max(6.0, 1.3 * len(shots) + 3.0), 4.0))
    ax = fig.add_subplot()
    width = 0.8 / max(len(series), 1)
    for i, (encoder, strategy, by_k) in enumerate(series):
        ks = sorted(int(k) for k in by_k)
        x = [shots.index(k) + (i - (len(series) - 1) / 2) * width for k in ks]
        mean = np.asarray([by_k[str(k)]['gap_mean'] for k in ks])
        low = np.asarray([by_k[str(k)]['ci95'][0] for k in ks])
        high = np.asarray([by_k[str(k)]['ci95'][1] for k in ks])
        error = np.nan_to_num(np.vstack([mean - low, high - mean]))
        marker = 'osD^v'[list(_STRATEGY).index(strategy) % 5] if strategy in _STRATEGY else 'o'
        ax.errorbar(
            x, mean, yerr=error, fmt=marker, color=f'C{i % 10}', capsize=3, label=label(encoder, strategy)
        )
    ax.axhline(0.0, color='gray', lw=1, ls='--')
    ax.set_xticks(range(len(shots)), [str(k) for k in shots])
    ax.set_xlabel('labeled images per class (budget = k × classes)')
    ax.set_ylabel('accuracy gap to random draws (paired)')
    ax.grid(axis='y', alpha=0.3)
    ax.legend(fontsize=7, loc='center left', bbox_to_anchor=(1.01, 0.5))
    if title:
        ax.set_title(title, fontsize=9)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=130, bbox_inches='tight')
    return path
