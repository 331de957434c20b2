"""probe.draw: training sets chosen by selection strategies, label-blind, scored beside random draws."""

import csv
import json
import math

import numpy as np
import pytest
from scipy.stats import t as student_t

from configs import probe_nanowire
from fewshot_jax import probe, tasks
from fewshot_jax.errors import ConfigError
from fewshot_jax.probe import draws
from fewshot_jax.probe import grid as probe_grid
from fewshot_jax.select import select

STRATEGIES = ('uniform', 'kmeans', 'typical', 'coreset')


def blobs(seed, per_class=15, classes=4, d=6):
    """Features with class structure (so selection and fits have something to find)."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(classes), per_class)
    means = rng.normal(0, 3, (classes, d))
    return means[labels] + rng.standard_normal((labels.size, d)), labels


def selected_plan(features, labels, method, shots=(1, 2, 3), fixed_split=None, split_seeds=(0, 1)):
    classes = int(labels.max()) + 1
    return probe_grid.protocol_plan(
        labels,
        shots=shots,
        split_seeds=split_seeds,
        draws=2,
        fixed_split=fixed_split,
        choose=draws.chooser(features, shots, classes, method, seed=42),
        method=method,
    )


@pytest.mark.parametrize('method', STRATEGIES)
def test_selection_is_blind_to_the_labels(method):
    features, labels = blobs(0)
    split = {'train': np.arange(0, 60, 2), 'test': np.arange(1, 60, 2)}
    shuffled = np.random.default_rng(5).permutation(labels)
    plain = selected_plan(features, labels, method, fixed_split=split)
    blind = selected_plan(features, shuffled, method, fixed_split=split)
    assert len(plain) == len(blind) == 2 * 3
    for a, b in zip(plain, blind, strict=True):
        np.testing.assert_array_equal(a.train, b.train)
        assert a.method == method and len(a.train) == a.k * 4


@pytest.mark.parametrize('method', STRATEGIES)
def test_chosen_sets_are_the_strategy_on_the_training_part(method):
    features, labels = blobs(1)
    for run in selected_plan(features, labels, method):
        train_part = np.setdiff1d(np.arange(len(labels)), run.test)
        picks = select(
            features[train_part],
            run.k * 4,
            'random' if method == 'uniform' else method,
            seed=draws.selection_seed(42, run.split_seed, run.draw),
        )
        np.testing.assert_array_equal(run.train, np.sort(train_part[picks.indices]))
        assert not set(run.train) & set(run.test)


def reference_predictions(features, labels, run, head):
    """A plain per-run fit on the classes the chosen set holds (probe.fit renumbers them)."""
    present = sorted(set(labels[run.train].tolist()))
    if len(present) == 1:
        return np.full(len(run.test), present[0])
    return probe.fit(features[run.train], labels[run.train], head).predict(features[run.test])


@pytest.mark.parametrize('head', ['ridge', 'logistic'])
def test_runs_missing_classes_match_per_run_fits(head):
    features, labels = blobs(2, per_class=10)
    # Hand-made chosen sets: all classes, three of four, two, and one class only.
    test = np.arange(1, 40, 2)
    sets = [[0, 10, 20, 30], [0, 2, 10, 20], [0, 2, 12, 14], [20, 22, 24, 26]]
    plan = [
        probe_grid.RunSpec(0, 0, 1, -1, np.asarray(s), test, np.zeros(0, np.int64), 'kmeans') for s in sets
    ]
    options = probe.head_options(head, {})
    result = draws.evaluate_selected(
        features, labels, plan, name='enc', num_classes=4, head=head, options=options
    )
    assert result.encoders == ['enc (kmeans)'] * 4
    for i, run in enumerate(plan):
        expected = reference_predictions(features, labels, run, head)
        np.testing.assert_array_equal(result.predictions[i, : len(test)], expected)
        correct = sum(int(p == t) for p, t in zip(expected, labels[test], strict=True))
        assert result.metrics[i]['accuracy'] == pytest.approx(correct / len(test))
    # The one-class run predicts its class; absent classes' scores are NaN.
    assert result.metrics[3]['accuracy'] == pytest.approx(0.25)
    assert np.isnan(result.scores[1, :, 3]).all() and not np.isnan(result.scores[1, :, :3]).any()


def test_t_interval_matches_a_loop():
    values = [0.1, -0.05, 0.2, 0.0, 0.15, 0.05]
    n = len(values)
    mean = sum(values) / n
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    half = student_t.ppf(0.975, n - 1) * sd / math.sqrt(n)
    assert draws.t_interval(values) == pytest.approx((mean, mean - half, mean + half))
    assert math.isnan(draws.t_interval([0.3])[1]) and draws.t_interval([0.3])[0] == 0.3


def test_paired_gaps_pair_splits_and_average_draws():
    def row(encoder, selection, split, draw, accuracy, k=1):
        return {
            'head': 'ridge',
            'encoder': draws.label(encoder, selection),
            'selection': selection,
            'split_seed': split,
            'draw': draw,
            'k': k,
            'accuracy': accuracy,
        }

    rows = [row('enc', 'random', s, d, 0.5 + 0.1 * s + 0.02 * d) for s in range(3) for d in range(2)]
    rows += [row('enc', 'typical', s, d, 0.6 + 0.05 * s) for s in range(3) for d in range(2)]
    rows += [row('enc', 'typical', 9, 0, 1.0)]  # a split without random draws is not paired
    gaps = draws.paired_gaps(rows)['ridge']['enc']['typical']['1']
    expected = [(0.6 + 0.05 * s) - (0.51 + 0.1 * s) for s in range(3)]
    mean, low, high = draws.t_interval(expected)
    assert gaps['gap_mean'] == pytest.approx(mean)
    assert gaps['ci95'] == pytest.approx([low, high])
    assert (gaps['splits'], gaps['wins'], gaps['losses']) == (3, 2, 1)
    assert gaps['median'] == pytest.approx(0.65) and gaps['random_median'] == pytest.approx(0.61)


@pytest.mark.parametrize(
    ('value', 'expected'),
    [
        ('random', ('random',)),
        ('kmeans', ('random', 'kmeans')),
        ('coreset, random,typical', ('random', 'coreset', 'typical')),
        (('uniform', 'kmeans'), ('random', 'uniform', 'kmeans')),
    ],
)
def test_parse_draws(value, expected):
    assert draws.parse_draws(value) == expected


@pytest.mark.parametrize('value', ['', 'kcenter', 'kmeans,greedy'])
def test_unknown_draws_are_refused(value):
    with pytest.raises(ConfigError, match=rf'probe.draw={value!r}: expected one or more of'):
        draws.parse_draws(value)


def test_a_budget_above_the_training_part_names_the_draw_and_k():
    features, labels = blobs(3, per_class=6)
    split = {'train': np.arange(0, 24, 2), 'test': np.arange(1, 24, 2)}
    with pytest.raises(ConfigError, match=r"probe.draw='kmeans' at k=4: budget=16: expected .* 1 to 12"):
        selected_plan(features, labels, 'kmeans', shots=(4,), fixed_split=split)


def tiny(**probe_values):
    config = probe_nanowire.get_config('tiny')
    config.probe.encoders = ('texture=texture',)
    config.probe.shots = (1, 2)
    config.probe.update(probe_values)
    return config


def test_the_probe_reports_strategies_beside_random_draws(tmp_path):
    config = tiny(draw='kmeans,coreset', head='ridge', encoders=('texture=texture', 'raw pixels=raw-pixels'))
    summary = tasks.run('probe', config, tmp_path)
    with open(tmp_path / 'probe' / 'results.csv') as handle:
        rows = list(csv.DictReader(handle))
    # Each encoder's strategies come right after its random draws (the figures' box order).
    labels = list(dict.fromkeys((r['encoder'], r['selection']) for r in rows))
    assert labels == [
        ('texture', 'random'),
        ('texture (kmeans)', 'kmeans'),
        ('texture (coreset)', 'coreset'),
        ('raw pixels', 'random'),
        ('raw pixels (kmeans)', 'kmeans'),
        ('raw pixels (coreset)', 'coreset'),
    ]
    assert len(rows) == 2 * 3 * 3 * 2 == summary['runs_per_head']
    for r in rows:
        assert int(r['n_train']) == int(r['k']) * 4
    assert summary['draws'] == ['random', 'kmeans', 'coreset']
    gaps = summary['selection']['ridge']['texture']
    assert set(gaps) == {'kmeans', 'coreset'} and set(gaps['kmeans']) == {'1', '2'}
    assert gaps['kmeans']['1']['splits'] == 3
    assert len(summary['accuracy']['ridge']) == 6 and set(summary['selection']['ridge']) == {
        'texture',
        'raw pixels',
    }
    assert (tmp_path / 'figures' / 'selection_gap_ridge.png').is_file()
    assert json.loads((tmp_path / 'probe' / 'summary.json').read_text())['selection'] == summary['selection']


def test_the_default_draw_keeps_the_protocol(tmp_path):
    summary = tasks.run('probe', tiny(head='ridge'), tmp_path)
    assert 'selection' not in summary and summary['runs_per_head'] == 3 * 2
    with open(tmp_path / 'probe' / 'results.csv') as handle:
        assert {r['selection'] for r in csv.DictReader(handle)} == {'random'}


def test_draws_need_the_protocol_mode(tmp_path):
    with pytest.raises(
        ConfigError, match=r"probe.draw='kmeans' applies to probe.mode=protocol, not 'tuning'"
    ):
        tasks.run('probe', tiny(draw='kmeans', mode='tuning'), tmp_path)


def test_every_split_and_draw_selects_with_its_own_seed():
    seeds = {draws.selection_seed(42, split, draw) for split in range(-1, 20) for draw in range(3)}
    assert len(seeds) == 21 * 3
    assert draws.selection_seed(42, 3, 1) == draws.selection_seed(42, 3, 1)
