"""Paired gaps and their intervals against plain-loop references."""

import math

import numpy as np
import pytest
from scipy import stats as scipy_stats

from fewshot_jax.analysis import stats


def _loop_mean_sd(values):
    n = len(values)
    mean = sum(values) / n
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    return mean, sd


def test_t_interval_matches_loop_reference():
    values = [0.12, 0.05, 0.2, 0.08, 0.15, 0.11]
    mean, sd = _loop_mean_sd(values)
    half = scipy_stats.t.ppf(0.975, len(values) - 1) * sd / math.sqrt(len(values))
    got = stats.t_interval(values)
    assert got == pytest.approx((mean, mean - half, mean + half), rel=1e-12)
    # And scipy's own interval agrees.
    low, high = scipy_stats.t.interval(0.95, len(values) - 1, loc=mean, scale=sd / math.sqrt(len(values)))
    assert got[1:] == pytest.approx((low, high), rel=1e-12)


def test_t_interval_of_one_value_has_no_width():
    mean, low, high = stats.t_interval([0.3])
    assert mean == 0.3 and math.isnan(low) and math.isnan(high)


def _loop_bootstrap(groups, confidence, resamples, seed):
    """The resampling written out with loops, drawing from the same random stream in the same
    order: every resample's group picks first, then group by group the members of each of its
    picks (resample by resample), one draw of len(group) indices per pick."""
    rng = np.random.default_rng(seed)
    n = len(groups)
    if n > 1:
        picks = [[int(g) for g in row] for row in rng.integers(0, n, (resamples, n))]
    else:
        picks = [[0] for _ in range(resamples)]
    sums = [0.0] * resamples
    for g, members in enumerate(groups):
        for r in range(resamples):
            for pick in picks[r]:
                if pick != g:
                    continue
                idx = rng.integers(0, len(members), len(members))
                total = 0.0
                for i in idx:
                    total += members[i]
                sums[r] += total / len(members)
    out = [total / len(picks[0]) for total in sums]
    return np.quantile(out, [0.5 - confidence / 2, 0.5 + confidence / 2])


@pytest.mark.parametrize('n_groups', [1, 2, 5])
def test_hierarchical_bootstrap_matches_loop_reference(n_groups):
    rng = np.random.default_rng(7)
    groups = [list(rng.normal(0.1 * g, 0.05, size=4 + g)) for g in range(n_groups)]
    got = stats.hierarchical_bootstrap(groups, confidence=0.9, resamples=300, seed=3)
    want = _loop_bootstrap(groups, 0.9, 300, 3)
    assert got == pytest.approx(tuple(want), rel=1e-12)


def test_hierarchical_bootstrap_is_seeded_and_wider_with_seed_spread():
    rng = np.random.default_rng(0)
    tight = [rng.normal(0.1, 0.02, 20) for _ in range(5)]
    # The same draws with seed-level offsets: the seed spread must widen the interval.
    spread = [g + offset for g, offset in zip(tight, [-0.1, -0.05, 0.0, 0.05, 0.1], strict=True)]
    a = stats.hierarchical_bootstrap(tight, seed=1, resamples=1000)
    assert a == stats.hierarchical_bootstrap(tight, seed=1, resamples=1000)
    b = stats.hierarchical_bootstrap(spread, seed=1, resamples=1000)
    assert b[1] - b[0] > 3 * (a[1] - a[0])


def test_gap_interval_over_seeds_uses_per_seed_means():
    groups = [np.array([0.1, 0.2, 0.3]), np.array([0.0, 0.1]), np.array([0.25, 0.35, 0.3, 0.3])]
    seed_means = [0.2, 0.05, 0.3]
    mean, sd = _loop_mean_sd(seed_means)
    half = scipy_stats.t.ppf(0.975, 2) * sd / math.sqrt(3)
    out = stats.gap_interval(groups, resamples=200)
    assert out['mean'] == pytest.approx(mean)
    assert out['ci95'] == pytest.approx([mean - half, mean + half])
    assert (out['seeds'], out['draws'], out['over']) == (3, 9, 'seeds')
    low, high = out['ci95_bootstrap']
    assert low <= mean <= high


def test_gap_interval_with_one_seed_is_over_draws_and_says_so():
    draws = [0.1, 0.15, 0.05, 0.2, 0.12]
    mean, sd = _loop_mean_sd(draws)
    half = scipy_stats.t.ppf(0.975, 4) * sd / math.sqrt(5)
    out = stats.gap_interval([draws], resamples=200)
    assert out['ci95'] == pytest.approx([mean - half, mean + half])
    assert (out['seeds'], out['draws'], out['over']) == (1, 5, 'draws')
    assert 'draws only' in out['note']


def test_paired_differences_pair_by_key():
    treated = {(0, 0): 0.9, (1, 0): 0.8, (2, 0): 0.7}
    control = {(2, 0): 0.5, (0, 0): 0.6, (1, 0): 0.8}
    keys, diffs = stats.paired_differences(treated, control)
    assert keys == [(0, 0), (1, 0), (2, 0)]
    assert diffs == pytest.approx([0.3, 0.0, 0.2])


def test_errors_name_the_bad_value():
    with pytest.raises(stats.StatsInputError, match='unpaired draws: 1 only in the treated'):
        stats.paired_differences({1: 0.5, 2: 0.4}, {1: 0.3})
    with pytest.raises(stats.StatsInputError, match='confidence=1.5'):
        stats.t_interval([0.1, 0.2], confidence=1.5)
    with pytest.raises(stats.StatsInputError, match='gaps of seed 1 holds NaN'):
        stats.gap_interval([[0.1], [float('nan')]])
    with pytest.raises(stats.StatsInputError, match='one flat array'):
        stats.gap_interval(np.array([0.1, 0.2]))
    with pytest.raises(stats.StatsInputError, match='resamples=0'):
        stats.hierarchical_bootstrap([[0.1]], resamples=0)
