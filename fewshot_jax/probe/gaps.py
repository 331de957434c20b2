"""The probe's paired gaps: each encoder minus its own ``@0`` init, on the same draws.

An encoder entry ``checkpoint:W`` (or ``checkpoint:W@N``, N > 0) and the
BatchNorm-statistics-only control ``bn-stats:checkpoint:W@0`` are paired with the
entry whose spec is ``checkpoint:W@0`` (the weights pretraining run W started
from), when the list holds one. For every head and k the accuracies of the two
are subtracted draw by draw (split seed, draw, fold) and summarised by
:func:`fewshot_jax.analysis.stats.gap_interval`.

Pretraining seeds: entries whose display names differ only by a trailing
``seed N`` (``'SimCLR TEM seed 0'``, ``'SimCLR TEM seed 1'``, each with its own
``@0`` init in the list) form one row whose interval is over those seeds (a
t-interval over the per-seed mean gaps and a hierarchical bootstrap). An encoder
with one seed gets an interval over the draws, marked as such.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping, Sequence

from fewshot_jax.analysis import stats
from fewshot_jax.probe import bn_stats

__all__ = ['gap_table', 'init_pairs']

_SEED = re.compile(r'^(?P<stem>.*?)[\s_-]*seed[\s_-]*(?P<seed>\d+)$')


def _checkpoint(spec: str) -> tuple[str, int | None] | None:
    """``'checkpoint:W@N'`` → ``(normalised W, N)``; ``(W, None)`` for the newest weights."""
    if not spec.startswith('checkpoint:'):
        return None
    path = spec[len('checkpoint:') :]
    base, at, step = path.rpartition('@')
    if at and step.isdigit():
        return os.path.normpath(base), int(step)
    return os.path.normpath(path), None


def init_pairs(specs: Mapping[str, str]) -> list[dict]:
    """The (encoder, its init) pairs of a probe's encoder list.

    Args:
        specs: display name → weight spec, in list order.

    Returns:
        One dict per paired encoder, in list order: ``name``, ``init`` (the init's
        display name), ``kind`` ('pretrained' or 'bn-stats'), ``group`` (the name
        without a trailing ``seed N``) and ``seed`` (N, or None).
    """
    inits = {}
    for name, spec in specs.items():
        parsed = _checkpoint(spec)
        if parsed is not None and parsed[1] == 0:
            inits.setdefault(parsed[0], name)
    pairs = []
    for name, spec in specs.items():
        base = bn_stats.base_spec(spec)
        parsed = _checkpoint(base if base is not None else spec)
        if parsed is None or parsed[0] not in inits:
            continue
        workdir, step = parsed
        if base is None and step == 0:
            continue  # the init itself
        match = _SEED.match(name)
        pairs.append(
            {
                'name': name,
                'init': inits[workdir],
                'kind': 'bn-stats' if base is not None else 'pretrained',
                'group': match['stem'] if match else name,
                'seed': int(match['seed']) if match else None,
            }
        )
    return pairs


def _draw_key(row: Mapping) -> tuple:
    return (str(row['split_seed']), str(row['draw']), str(row.get('fold', '')))


def _k(row: Mapping) -> str:
    return 'cv' if row['mode'] == 'tuning' else str(row['k'])


def gap_table(rows: Sequence[Mapping], specs: Mapping[str, str], *, seed: int = 0) -> dict:
    """The paired gaps (encoder − its ``@0`` init) per head, encoder group and k.

    Args:
        rows: the probe's result rows (``head``, ``encoder``, ``mode``, ``k``,
            ``split_seed``, ``draw``, ``fold``, ``accuracy``).
        specs: display name → weight spec of every encoder.
        seed: seed of the bootstrap.

    Returns:
        ``{head: [{'encoder': group, 'kind', 'encoders': [names], 'inits': [names],
        'by_k': {k: gap_interval(...) + {'encoder_mean', 'init_mean'}}}]}``;
        empty when no encoder has its init in the list.

    Raises:
        fewshot_jax.analysis.stats.StatsInputError: an encoder and its init were
            not fitted on the same draws.
    """
    pairs = init_pairs(specs)
    if not pairs:
        return {}
    accuracy: dict = {}
    for row in rows:
        cell = accuracy.setdefault(row['head'], {}).setdefault(row['encoder'], {}).setdefault(_k(row), {})
        cell[_draw_key(row)] = float(row['accuracy'])
    groups: dict = {}
    for pair in pairs:
        groups.setdefault((pair['group'], pair['kind']), []).append(pair)
    out: dict = {}
    for head, by_encoder in accuracy.items():
        table = []
        for (group, kind), members in groups.items():
            members = sorted(members, key=lambda p: (p['seed'] is None, p['seed'] or 0))
            # The ks every seed and its init were fitted at (all of them, in one probe run).
            ks = [
                k
                for k in by_encoder.get(members[0]['name'], {})
                if all(
                    k in by_encoder.get(p['name'], {}) and k in by_encoder.get(p['init'], {}) for p in members
                )
            ]
            by_k = {}
            for k in ks:
                gaps, encoder_means, init_means = [], [], []
                for p in members:
                    treated, control = by_encoder[p['name']][k], by_encoder[p['init']][k]
                    _, diffs = stats.paired_differences(treated, control)
                    gaps.append(diffs)
                    encoder_means.append(sum(treated.values()) / len(treated))
                    init_means.append(sum(control.values()) / len(control))
                cell = stats.gap_interval(gaps, seed=seed)
                # One draw has no interval: None, not NaN, so summary.json stays strict JSON.
                cell['ci95'] = [None if math.isnan(v) else v for v in cell['ci95']]
                cell['encoder_mean'] = sum(encoder_means) / len(encoder_means)
                cell['init_mean'] = sum(init_means) / len(init_means)
                by_k[k] = cell
            table.append(
                {
                    'encoder': group if len(members) > 1 else members[0]['name'],
                    'kind': kind,
                    'encoders': [p['name'] for p in members],
                    'inits': [p['init'] for p in members],
                    'by_k': by_k,
                }
            )
        out[head] = table
    return out
