"""The probe's paired gaps (encoder − its own @0 init): pairing, seeds, and the task's summary."""

import csv
import json
import math

import jax
import numpy as np
import pytest
from scipy import stats as scipy_stats

from configs import probe_nanowire
from fewshot_jax import tasks
from fewshot_jax.analysis.stats import StatsInputError
from fewshot_jax.models import make_encoder
from fewshot_jax.probe import gaps
from fewshot_jax.train_lib.checkpoint import INIT_ENCODER_DIR, save_encoder


def test_init_pairs_match_workdirs_seeds_and_the_bn_control():
    specs = {
        'SimCLR seed 0': 'checkpoint:runs/a/',
        'SimCLR seed 1': 'checkpoint:runs/b@1300',
        'init 0': 'checkpoint:runs/a@0',
        'init 1': 'checkpoint:runs/b@0',
        'BN stats only': 'bn-stats:checkpoint:runs/a@0',
        'orphan': 'checkpoint:runs/c',
        'texture': 'texture',
    }
    pairs = {p['name']: p for p in gaps.init_pairs(specs)}
    assert set(pairs) == {'SimCLR seed 0', 'SimCLR seed 1', 'BN stats only'}
    assert (
        pairs['SimCLR seed 0']['init'],
        pairs['SimCLR seed 0']['group'],
        pairs['SimCLR seed 0']['seed'],
    ) == (
        'init 0',
        'SimCLR',
        0,
    )
    assert (pairs['SimCLR seed 1']['init'], pairs['SimCLR seed 1']['seed']) == ('init 1', 1)
    assert (pairs['BN stats only']['kind'], pairs['BN stats only']['init']) == ('bn-stats', 'init 0')


def _rows(encoder, accuracies, k=4):
    return [
        {'head': 'logistic', 'encoder': encoder, 'mode': 'protocol', 'k': k, 'split_seed': s, 'draw': 0,
         'fold': '', 'accuracy': a}
        for s, a in enumerate(accuracies)
    ]  # fmt: skip


def test_gap_table_over_seeds_matches_a_loop():
    specs = {
        'BT seed 0': 'checkpoint:w0',
        'BT seed 1': 'checkpoint:w1',
        'BT seed 2': 'checkpoint:w2',
        'i0': 'checkpoint:w0@0',
        'i1': 'checkpoint:w1@0',
        'i2': 'checkpoint:w2@0',
    }
    pretrained = {'BT seed 0': [0.6, 0.7, 0.65], 'BT seed 1': [0.5, 0.55, 0.6], 'BT seed 2': [0.7, 0.8, 0.75]}
    inits = {'i0': [0.4, 0.5, 0.5], 'i1': [0.45, 0.5, 0.5], 'i2': [0.5, 0.5, 0.55]}
    rows = [r for name, acc in {**pretrained, **inits}.items() for r in _rows(name, acc)]
    table = gaps.gap_table(rows, specs)['logistic']
    assert len(table) == 1 and table[0]['encoder'] == 'BT' and table[0]['inits'] == ['i0', 'i1', 'i2']
    cell = table[0]['by_k']['4']
    seed_means = []
    for (_, p), (_, i) in zip(pretrained.items(), inits.items(), strict=True):
        seed_means.append(sum(a - b for a, b in zip(p, i, strict=True)) / len(p))
    mean = sum(seed_means) / 3
    sd = math.sqrt(sum((m - mean) ** 2 for m in seed_means) / 2)
    half = scipy_stats.t.ppf(0.975, 2) * sd / math.sqrt(3)
    assert cell['mean'] == pytest.approx(mean)
    assert cell['ci95'] == pytest.approx([mean - half, mean + half])
    assert (cell['seeds'], cell['draws'], cell['over']) == (3, 9, 'seeds')
    assert cell['encoder_mean'] - cell['init_mean'] == pytest.approx(mean)


def test_unpaired_draws_are_an_error():
    specs = {'BT': 'checkpoint:w', 'init': 'checkpoint:w@0'}
    rows = _rows('BT', [0.6, 0.7]) + _rows('init', [0.5])
    with pytest.raises(StatsInputError, match='unpaired draws'):
        gaps.gap_table(rows, specs)
    assert gaps.gap_table(_rows('texture', [0.5]), {'texture': 'texture'}) == {}


def test_the_probe_summary_holds_the_gaps_of_the_encoder_and_the_bn_control(tmp_path):
    config = probe_nanowire.get_config('tiny')
    model = config.model.to_dict()
    workdir = tmp_path / 'pretrain'
    init = make_encoder(model).init(jax.random.key(1), np.zeros((1, 32, 32, 3), np.float32), train=False)
    trained = make_encoder(model).init(jax.random.key(2), np.zeros((1, 32, 32, 3), np.float32), train=False)
    save_encoder(workdir, jax.tree.map(np.asarray, init), model, step=0, folder=INIT_ENCODER_DIR)
    save_encoder(workdir, jax.tree.map(np.asarray, trained), model, step=5)
    config.probe.encoders = (
        f'mine=checkpoint:{workdir}',
        f'random-init=checkpoint:{workdir}@0',
        f'BN stats only=bn-stats:checkpoint:{workdir}@0',
        'intensity=intensity',
    )
    summary = tasks.run('probe', config, tmp_path / 'probe')
    table = {row['encoder']: row for row in summary['gaps']['logistic']}
    assert set(table) == {'mine', 'BN stats only'}
    with open(tmp_path / 'probe' / 'probe' / 'results.csv') as handle:
        rows = list(csv.DictReader(handle))
    for name in ('mine', 'BN stats only'):
        for k in ('1', '2', '4'):
            acc = {r['encoder']: {} for r in rows}
            for r in rows:
                if r['k'] == k:
                    acc[r['encoder']][r['split_seed']] = float(r['accuracy'])
            diffs = [acc[name][s] - acc['random-init'][s] for s in acc[name]]
            cell = table[name]['by_k'][k]
            assert cell['mean'] == pytest.approx(sum(diffs) / len(diffs))
            assert (cell['seeds'], cell['draws'], cell['over']) == (1, 3, 'draws')
    json.dumps(summary)  # the summary stays plain JSON


def test_the_demo_probe_lists_its_init_and_the_bn_control():
    from fewshot_jax.probe import features

    specs = dict(features.parse_entry(e) for e in probe_nanowire.get_config('demo').probe.encoders)
    pairs = gaps.init_pairs(specs)
    assert {(p['name'], p['init']) for p in pairs} == {
        ('SimCLR demo', 'random-init'),
        ('BN stats only', 'random-init'),
    }
    assert 'intensity' in specs
