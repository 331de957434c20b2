"""The probe task end to end (tiny preset), its plans, metrics, statistics and bad input."""

import csv
import json

import jax
import numpy as np
import pytest
from scipy.stats import binom
from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

from configs import probe_mnp, probe_nanowire, probe_virus
from fewshot_jax import tasks
from fewshot_jax.data.io import DataError
from fewshot_jax.data.splits import check_disjoint
from fewshot_jax.models import make_encoder
from fewshot_jax.models.weights import WeightsError
from fewshot_jax.probe import features
from fewshot_jax.probe import grid as probe_grid
from fewshot_jax.train_lib.checkpoint import save_encoder


def _tiny(**probe):
    config = probe_nanowire.get_config('tiny')
    config.probe.update(probe)
    return config


@pytest.fixture(scope='module')
def pretrained(tmp_path_factory):
    """A workdir with an exported encoder of the tiny architecture (the 'trained' one)."""
    workdir = tmp_path_factory.mktemp('bt_run')
    model = _tiny().model.to_dict()
    variables = make_encoder(model).init(jax.random.key(9), np.zeros((1, 32, 32, 3), np.float32), train=False)
    save_encoder(workdir, jax.tree.map(np.asarray, variables), model, step=3)
    return workdir


@pytest.fixture(scope='module')
def probe_run(tmp_path_factory, pretrained):
    workdir = tmp_path_factory.mktemp('probe')
    config = _tiny(
        encoders=(
            f'BT tiny=checkpoint:{pretrained}',
            'random-init',
            'raw pixels=raw-pixels',
            'texture=texture',
        )
    )
    return config, workdir, tasks.run('probe', config, workdir)


def test_the_tiny_probe_writes_results_summary_and_figures(probe_run):
    config, workdir, summary = probe_run
    encoders = ['BT tiny', 'random-init', 'raw pixels', 'texture']
    with open(workdir / 'probe' / 'results.csv') as handle:
        rows = list(csv.DictReader(handle))
    runs = config.probe.split_seeds * config.probe.draws * len(config.probe.shots)
    assert len(rows) == runs * len(encoders) == summary['runs_per_head']
    assert sorted({r['encoder'] for r in rows}) == sorted(encoders)
    assert {int(r['k']) for r in rows} == set(config.probe.shots)
    assert all(r['converged'] == 'True' for r in rows)
    # Every encoder is tested on the same draws: same training hashes per (split, draw, k).
    hashes = {}
    for r in rows:
        hashes.setdefault((r['split_seed'], r['draw'], r['k']), set()).add(r['train_hash'])
    assert all(len(h) == 1 for h in hashes.values())
    first = rows[0]
    confusion = np.asarray(json.loads(first['confusion']))
    assert confusion.sum() == int(first['n_test'])
    assert float(first['accuracy']) == pytest.approx(np.trace(confusion) / confusion.sum())
    stored = json.loads((workdir / 'probe' / 'summary.json').read_text())
    assert stored['accuracy'] == summary['accuracy']
    assert set(summary['accuracy']['logistic']) == set(encoders)
    cell = summary['accuracy']['logistic']['texture']['4']
    values = [float(r['accuracy']) for r in rows if r['encoder'] == 'texture' and r['k'] == '4']
    assert cell['median'] == pytest.approx(np.median(values)) and cell['runs'] == len(values)
    assert cell['ci95'][0] <= cell['median'] <= cell['ci95'][1]
    names = {p.split('/')[-1] for p in summary['figures']}
    assert names == {
        'accuracy_logistic.png',
        'confusion_logistic.png',
        'tsne_best.png',
        'tsne_worst.png',
        'anchors.png',
    }
    for name in names:
        assert (workdir / 'figures' / name).stat().st_size > 10_000
    assert summary['anchors']['encoder'] == 'BT tiny'
    assert (
        summary['anchors']['opposite']['count'] + summary['anchors']['same']['count']
        == config.probe.split_seeds * config.probe.draws
    )
    # random-init copied the pretrained encoder's architecture.
    dims = {e['name']: e['dim'] for e in summary['encoders']}
    assert dims['random-init'] == dims['BT tiny']


def test_a_rerun_skips_and_a_changed_config_reuses_the_cached_features(probe_run):
    config, workdir, summary = probe_run
    assert tasks.run('probe', config, workdir) == summary
    changed = config.copy_and_resolve_references()
    changed.probe.figure_k = 4
    again = tasks.run('probe', changed, workdir)
    assert all(e['cached'] for e in again['encoders'])
    assert again['accuracy'] == summary['accuracy']


@pytest.mark.parametrize('switch', [{'average_orientations': True}, {'pooling': 'gem'}])
def test_the_feature_switches_reach_encoders_and_not_baselines(pretrained, switch):
    from fewshot_jax.probe.task import build_extractors

    entries = (f'BT tiny=checkpoint:{pretrained}', 'random-init', 'texture=texture')
    plain = build_extractors(_tiny(encoders=entries))
    switched = build_extractors(_tiny(encoders=entries, **switch))
    changed = [a.fingerprint != b.fingerprint for a, b in zip(plain, switched, strict=True)]
    assert changed == [True, True, False]


def test_tuning_mode_cross_validates_inside_the_training_part(tmp_path):
    config = _tiny(mode='tuning', tuning_splits=2, head='logistic,knn')
    summary = tasks.run('probe', config, tmp_path)
    with open(tmp_path / 'probe' / 'results.csv') as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 2 * 4 * 4 * 2  # splits × folds × encoders (random init, 3 baselines) × heads
    assert {r['fold'] for r in rows} == {'0', '1', '2', '3'}
    assert set(summary['accuracy']['knn']['texture']) == {'cv'}
    assert (tmp_path / 'figures' / 'accuracy_knn.png').is_file()


def test_protocol_plan_is_nested_disjoint_and_reproducible():
    labels = np.repeat(np.arange(3), 20)
    plan = probe_grid.protocol_plan(labels, shots=(1, 2, 4), split_seeds=(0, 1), draws=2, holdout_per_class=3)
    assert len(plan) == 2 * 2 * 3
    again = probe_grid.protocol_plan(
        labels, shots=(1, 2, 4), split_seeds=(0, 1), draws=2, holdout_per_class=3
    )
    for run, other in zip(plan, again, strict=True):
        np.testing.assert_array_equal(run.train, other.train)
        check_disjoint(train=run.train, test=run.test, holdout=run.holdout)
        assert np.bincount(labels[run.train], minlength=3).tolist() == [run.k] * 3
        assert np.bincount(labels[run.holdout], minlength=3).tolist() == [3] * 3
        assert np.bincount(labels[run.test], minlength=3).tolist() == [4] * 3
    by_key = {(r.split_seed, r.draw, r.k): r for r in plan}
    assert set(by_key[(0, 0, 2)].train) <= set(by_key[(0, 0, 4)].train)
    assert by_key[(0, 0, 4)].train_hash != by_key[(0, 1, 4)].train_hash


def test_plans_refuse_too_large_k_and_too_few_test_images():
    labels = np.repeat(np.arange(2), 10)
    with pytest.raises(DataError, match="class 0 \\('a'\\) has 8 training image"):
        probe_grid.protocol_plan(labels, shots=(9,), split_seeds=(0,), draws=1, class_names=('a', 'b'))
    with pytest.raises(DataError, match='early stopping wants 5 per class'):
        probe_grid.protocol_plan(labels, shots=(4,), split_seeds=(0,), draws=1, holdout_per_class=5)
    with pytest.raises(
        DataError, match=r"class 0 \('a'\) has 5 image.*1 test image.*at least 8 images per class"
    ):
        probe_grid.protocol_plan(
            np.repeat(np.arange(2), 5), shots=(1,), split_seeds=(0,), draws=1, class_names=('a', 'b')
        )


def test_tuning_plan_folds_cover_the_training_part_once():
    labels = np.repeat(np.arange(4), 25)
    plan = probe_grid.tuning_plan(labels, split_seeds=(0, 1, 2, 3, 4), folds=4)
    assert len(plan) == 20
    for seed in range(5):
        runs = [r for r in plan if r.split_seed == seed]
        validated = np.concatenate([r.test for r in runs])
        assert len(validated) == len(set(validated)) == 80  # the 80 % training part, once each
        for r in runs:
            check_disjoint(fit=r.train, validation=r.test)


def test_classification_metrics_match_sklearn():
    rng = np.random.default_rng(0)
    truth = rng.integers(0, 4, 60)
    predicted = np.where(rng.random(60) < 0.6, truth, rng.integers(0, 4, 60))
    predicted[predicted == 3] = 2  # a class never predicted: zero_division
    ours = probe_grid.classification_metrics(predicted, truth, 4)
    p, r, f, _ = precision_recall_fscore_support(truth, predicted, average='weighted', zero_division=0)
    assert (ours['precision'], ours['recall'], ours['f1']) == pytest.approx((p, r, f))
    assert ours['accuracy'] == pytest.approx(np.mean(truth == predicted))
    np.testing.assert_array_equal(ours['confusion'], confusion_matrix(truth, predicted, labels=range(4)))


@pytest.mark.parametrize('n', [3, 10, 20, 100])
def test_median_ci_is_the_order_statistic_interval(n):
    values = np.random.default_rng(n).random(n)
    low, high = probe_grid.median_ci(values)
    x = np.sort(values)
    # Brute force: the narrowest symmetric order-statistic pair with coverage >= 95 %.
    best = (x[0], x[-1])
    for j in range(1, n // 2 + 1):
        coverage = binom.cdf(n - j, n, 0.5) - binom.cdf(j - 1, n, 0.5)
        if coverage >= 0.95:
            best = (x[j - 1], x[n - j])
    assert (low, high) == best


def test_bad_encoders_fail_before_any_training(tmp_path, pretrained):
    config = _tiny(encoders=('ghost=checkpoint:/nonexistent/run', 'raw-pixels'))
    with pytest.raises(WeightsError, match='/nonexistent/run'):
        tasks.run('probe', config, tmp_path)
    assert not (tmp_path / 'probe').exists()
    config = _tiny(encoders=('random-init:BT', 'raw-pixels'))
    with pytest.raises(Exception, match="no pretrained encoder named 'BT'"):
        tasks.run('probe', config, tmp_path)
    config = _tiny(encoders=('a=raw-pixels', 'a=texture'))
    with pytest.raises(features.FeatureError, match=r"\['a'\] used twice"):
        tasks.run('probe', config, tmp_path)


def test_bad_plans_and_non_encoders_fail_before_any_encoding(tmp_path):
    # k larger than a class's training pool: named before any encoder runs.
    config = _tiny(shots=(1, 500), encoders=('random-init', 'texture'))
    with pytest.raises(DataError, match=r"class 0 \('\w+'\) has \d+ training image"):
        tasks.run('probe', config, tmp_path / 'big_k')
    assert not (tmp_path / 'big_k' / 'features').exists()
    # An existing folder that holds no encoder.
    empty = tmp_path / 'empty_run'
    empty.mkdir()
    config = _tiny(encoders=(f'mine=checkpoint:{empty}', 'raw-pixels'))
    with pytest.raises(WeightsError, match="encoder 'mine'"):
        tasks.run('probe', config, tmp_path / 'empty')
    assert not (tmp_path / 'empty' / 'features').exists()


def test_configs_keep_the_papers_protocol():
    for module in (probe_nanowire, probe_mnp):
        c = module.get_config()
        assert tuple(c.probe.shots) == (1, 2, 4, 8, 16, 32, 80)
        assert (c.probe.split_seeds, c.probe.draws, c.probe.shot_seed) == (20, 1, 42)
        assert c.task == 'probe' and c.probe.head == 'logistic' and c.data.image_size == 224
        assert {'random-init', 'raw pixels=raw-pixels', 'texture=texture'} <= set(c.probe.encoders)
        assert module.get_config('demo').data.source == 'synthetic'
    virus = probe_virus.get_config()
    assert tuple(virus.probe.shots) == (10, 20, 40, 80, 120, 200, 600)
    assert virus.probe.draws == 20 and virus.data.source == 'virus'


def _write_nanowire_release(root, per_class=10, size=32):
    """The Zenodo layout in miniature: jpg images per class, png masks beside dispersed/network."""
    from PIL import Image

    from fewshot_jax.data import synthetic

    data = synthetic.nanowires(per_class, size, seed=2)
    for i, (image, mask, label) in enumerate(zip(data.images, data.masks, data.labels, strict=True)):
        folder = root / data.class_names[label]
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray((image * 255).astype(np.uint8)).save(folder / f'img{i:03d}.jpg', quality=95)
        if data.class_names[label] in ('dispersed', 'network'):
            Image.fromarray(mask * 255).save(folder / f'img{i:03d}.png')
    return data


def test_real_files_nanowire_layout_with_masks_gives_the_anchor_analysis(tmp_path):
    _write_nanowire_release(tmp_path / 'nanowires')
    config = _tiny(
        encoders=('raw pixels=raw-pixels', 'texture=texture'), split_seeds=4, tsne_encoder='texture'
    )
    config.data.source = 'nanowire'
    config.data.root = str(tmp_path / 'nanowires')
    summary = tasks.run('probe', config, tmp_path / 'run')
    assert summary['data']['class_names'] == ['bundle', 'dispersed', 'network', 'singular']
    assert summary['anchors']['opposite']['count'] + summary['anchors']['same']['count'] == 4
    with open(tmp_path / 'run' / 'probe' / 'anchors.csv') as handle:
        assert len(list(csv.DictReader(handle))) == 4


def test_real_files_virus_layout_keeps_its_own_split(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    counts = {'train': 6, 'validation': 3, 'test': 3}
    for split, count in counts.items():
        for virus in ('adeno', 'ebola', 'rota'):
            folder = tmp_path / 'virus' / split / virus
            folder.mkdir(parents=True)
            for i in range(count):
                pixels = (rng.random((32, 32)) * 255).astype(np.uint8)
                Image.fromarray(pixels).save(folder / f'{virus}_{i}.png')
    config = _tiny(encoders=('raw-pixels',), shots=(1, 2), draws=3, head='adam')
    config.probe.adam.update(holdout_per_class=2, max_epochs=5)
    config.data.source = 'virus'
    config.data.root = str(tmp_path / 'virus')
    tasks.run('probe', config, tmp_path / 'run')
    with open(tmp_path / 'run' / 'probe' / 'results.csv') as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 3 * 2  # draws × shots, the shipped split only
    assert {r['split_seed'] for r in rows} == {'-1'}
    assert {r['n_test'] for r in rows} == {'9'} and {r['n_extra_labels'] for r in rows} == {'6'}
