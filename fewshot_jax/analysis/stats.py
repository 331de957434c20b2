"""Paired comparisons with honest intervals: the gap of an encoder over its own init.

A gap ("pretrained − its own ``@0`` init") is measured on the same draws (splits,
k-shot sets) for both encoders, so each draw gives one paired difference. Draws of
one pretraining seed share that seed's weights and are not independent evidence
about pretraining; the seeds are. The intervals here therefore treat the seed as
the unit of replication:

* :func:`t_interval` — a Student-t interval over the per-seed mean gaps
  (``seeds − 1`` degrees of freedom);
* :func:`hierarchical_bootstrap` — resample seeds with replacement, then draws
  within each resampled seed; the percentile interval of the mean of per-seed means.

With one seed there is nothing to resample at the seed level: both intervals are
over the draws of that seed, and :func:`gap_interval` says so (``'over': 'draws'``).
Such an interval covers split-to-split noise only, not the spread of pretraining.

Pure numpy and scipy; imports nothing from the project. Example::

    from fewshot_jax.analysis import stats
    gaps = [np.array([0.1, 0.2, 0.15]), np.array([0.05, 0.12, 0.1])]  # two seeds, three draws
    stats.gap_interval(gaps)   # {'mean': …, 'ci95': [lo, hi], 'seeds': 2, 'draws': 6, …}
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence

import numpy as np

from fewshot_jax.errors import is_count

__all__ = [
    'StatsInputError',
    'gap_interval',
    'hierarchical_bootstrap',
    'paired_differences',
    't_interval',
]


class StatsInputError(ValueError):
    """Values a statistic cannot use: empty, not finite, unpaired, or a bad level."""


def _check_level(confidence: float) -> float:
    if not 0.0 < float(confidence) < 1.0:
        raise StatsInputError(f'confidence={confidence!r}: expected a level strictly between 0 and 1')
    return float(confidence)


def _check_values(values, name: str) -> np.ndarray:
    x = np.asarray(values, np.float64).ravel()
    if x.size == 0:
        raise StatsInputError(f'{name} is empty: expected at least one value')
    if not np.isfinite(x).all():
        raise StatsInputError(
            f'{name} holds NaN or infinite values at positions {np.flatnonzero(~np.isfinite(x))[:5].tolist()}'
        )
    return x


def _check_groups(groups: Sequence) -> list[np.ndarray]:
    if isinstance(groups, np.ndarray) and groups.ndim == 1:
        raise StatsInputError(
            'gaps must be a sequence of per-seed arrays (one array per seed), got one flat array'
        )
    checked = [_check_values(g, f'gaps of seed {i}') for i, g in enumerate(groups)]
    if not checked:
        raise StatsInputError('gaps is empty: expected one array of draws per seed')
    return checked


def t_interval(values, confidence: float = 0.95) -> tuple[float, float, float]:
    """Mean of ``values`` and its Student-t interval.

    Args:
        values: independent replicates (e.g. one mean gap per pretraining seed).
        confidence: the interval's level.

    Returns:
        ``(mean, low, high)``; with one value the interval is ``(nan, nan)``
        (a single replicate says nothing about its spread).

    Raises:
        StatsInputError: empty or non-finite values, or a level outside (0, 1).
    """
    from scipy import stats as scipy_stats  # scipy is slow to import; only this needs it

    level = _check_level(confidence)
    x = _check_values(values, 'values')
    mean = float(x.mean())
    if x.size < 2:
        return mean, float('nan'), float('nan')
    half = float(scipy_stats.t.ppf(0.5 + level / 2, df=x.size - 1) * x.std(ddof=1) / np.sqrt(x.size))
    return mean, mean - half, mean + half


def hierarchical_bootstrap(
    groups: Sequence,
    *,
    confidence: float = 0.95,
    resamples: int = 4000,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile interval of the mean of group means, resampling groups then members.

    Each resample draws ``len(groups)`` groups with replacement and, inside each
    drawn group, as many members as it has, with replacement; its statistic is
    the mean over the drawn groups of their resampled means (every group weighs
    the same, whatever its size). With one group only the members are resampled.

    Args:
        groups: one array per group (pretraining seed) of its members (draws).
        confidence: the interval's level.
        resamples: bootstrap resamples.
        seed: seed of the resampling (the interval is reproducible).

    Returns:
        ``(low, high)``.

    Raises:
        StatsInputError: no groups, an empty or non-finite group, a bad level or count.
    """
    level = _check_level(confidence)
    groups = _check_groups(groups)
    if not is_count(resamples):
        raise StatsInputError(f'resamples={resamples!r}: expected a positive integer')
    rng = np.random.default_rng(seed)
    n_groups = len(groups)
    # Which groups each resample draws (row r: its n_groups picks); then, group by group, the
    # members of every pick of that group, in row-major order of the picks: one block of draws
    # per group instead of one small draw per pick.
    picked = (
        rng.integers(0, n_groups, (resamples, n_groups)) if n_groups > 1 else np.zeros((resamples, 1), int)
    )
    sums = np.zeros(resamples)
    for g, members in enumerate(groups):
        rows, _ = np.nonzero(picked == g)
        if rows.size:
            means = members[rng.integers(0, members.size, (rows.size, members.size))].mean(axis=1)
            np.add.at(sums, rows, means)
    statistics = sums / picked.shape[1]
    low, high = np.quantile(statistics, [0.5 - level / 2, 0.5 + level / 2])
    return float(low), float(high)


def gap_interval(
    gaps: Sequence,
    *,
    confidence: float = 0.95,
    resamples: int = 4000,
    seed: int = 0,
) -> dict:
    """The mean paired gap with a t-interval and a hierarchical-bootstrap interval.

    Args:
        gaps: one array per pretraining seed of its paired gaps, one per draw.
        confidence: the intervals' level.
        resamples, seed: of the bootstrap.

    Returns:
        ``{'mean', 'ci95', 'ci95_bootstrap', 'seeds', 'draws', 'over', 'note'}``:
        ``mean`` is the mean over seeds of the per-seed mean gaps; ``ci95`` the
        t-interval over those per-seed means (over the draws when there is one
        seed); ``ci95_bootstrap`` the hierarchical bootstrap's; ``draws`` the
        number of paired draws in all; ``over`` 'seeds' or 'draws'.

    Raises:
        StatsInputError: as :func:`hierarchical_bootstrap`.
    """
    groups = _check_groups(gaps)
    if len(groups) > 1:
        mean, low, high = t_interval([g.mean() for g in groups], confidence)
        over = 'seeds'
        note = (
            f'{len(groups)} pretraining seeds: t-interval over the per-seed means, '
            'bootstrap over seeds then draws'
        )
    else:
        mean, low, high = t_interval(groups[0], confidence)
        over = 'draws'
        note = 'one pretraining seed: the intervals are over draws only and leave out seed-to-seed spread'
    boot = hierarchical_bootstrap(groups, confidence=confidence, resamples=resamples, seed=seed)
    return {
        'mean': mean,
        'ci95': [low, high],
        'ci95_bootstrap': list(boot),
        'seeds': len(groups),
        'draws': int(sum(g.size for g in groups)),
        'over': over,
        'note': note,
    }


def paired_differences(
    treated: Mapping[Hashable, float], control: Mapping[Hashable, float]
) -> tuple[list, np.ndarray]:
    """``treated[key] − control[key]`` for every key, in sorted key order.

    Args:
        treated, control: one value per draw key (e.g. ``(split_seed, draw)``);
            both must hold the same keys, or the comparison is not paired.

    Returns:
        ``(keys, differences)``.

    Raises:
        StatsInputError: the key sets differ.
    """
    only_treated = sorted(set(treated) - set(control), key=repr)
    only_control = sorted(set(control) - set(treated), key=repr)
    if only_treated or only_control:
        raise StatsInputError(
            f'unpaired draws: {len(only_treated)} only in the treated set (e.g. {only_treated[:3]}), '
            f'{len(only_control)} only in the control set (e.g. {only_control[:3]}); expected the same draws'
        )
    keys = sorted(treated, key=repr)
    return keys, np.asarray([float(treated[k]) - float(control[k]) for k in keys], np.float64)
