"""The select task on real folders of image files: outputs, duplicates, and the checks before encoding."""

import csv
import logging

import numpy as np
import pytest
from PIL import Image

from configs import select as select_config
from fewshot_jax import tasks
from fewshot_jax.errors import ConfigError
from fewshot_jax.models.weights import WeightsError
from fewshot_jax.select import task as select_task


def write_folder(folder, count=12, duplicates=(), unreadable=0, seed=0):
    """``count`` distinct PNGs, copies of the files in ``duplicates`` (sorted after them), broken files."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(count):
        # Distinct textures: noise of a different scale and brightness per image.
        base = rng.normal(60 + 12 * i, 5 + 3 * (i % 4), (24, 24))
        Image.fromarray(np.clip(base, 0, 255).astype(np.uint8)).save(folder / f'img{i:03d}.png')
    for j, source in enumerate(duplicates):
        (folder / f'z_copy{j:03d}.png').write_bytes((folder / f'img{source:03d}.png').read_bytes())
    for j in range(unreadable):
        (folder / f'broken{j:03d}.png').write_bytes(b'not a png')
    return folder


def config_for(root, **select):
    config = select_config.get_config('tiny')
    config.data.source = 'folder'
    config.data.root = str(root)
    config.select.encoder = 'texture'
    for key, value in select.items():
        config.select[key] = value
    return config


def read_rows(path):
    with open(path, newline='') as handle:
        return list(csv.DictReader(handle))


@pytest.mark.parametrize('method', ['typical', 'kmeans', 'coreset', 'random'])
def test_writes_the_list_and_the_sheet(tmp_path, method):
    root = write_folder(tmp_path / 'pool')
    summary = tasks.run('select', config_for(root, method=method, budget=5), tmp_path / 'w')
    rows = read_rows(tmp_path / 'w' / 'to_label.csv')
    assert list(rows[0]) == ['order', 'file', 'cluster', 'cluster_size', 'distance_to_centroid']
    assert [int(r['order']) for r in rows] == [1, 2, 3, 4, 5]
    assert len({r['file'] for r in rows}) == 5
    assert all(r['file'].startswith(str(root)) for r in rows)
    assert sum(int(r['cluster_size']) for r in rows) == 12
    assert sorted(int(r['cluster']) for r in rows) == [0, 1, 2, 3, 4]
    has_distance = [r['distance_to_centroid'] != '' for r in rows]
    assert all(has_distance) if method in ('typical', 'kmeans') else not any(has_distance)
    assert (tmp_path / 'w' / 'to_label.png').stat().st_size > 1000
    assert summary['pool'] == 12 and summary['method'] == method


def test_kmeans_clusters_are_largest_first(tmp_path):
    root = write_folder(tmp_path / 'pool', count=16)
    tasks.run('select', config_for(root, method='kmeans', budget=4), tmp_path / 'w')
    sizes = [int(r['cluster_size']) for r in read_rows(tmp_path / 'w' / 'to_label.csv')]
    assert sizes == sorted(sizes, reverse=True)


def test_duplicates_reported_and_never_both_picked(tmp_path, caplog):
    root = write_folder(tmp_path / 'pool', count=6, duplicates=(1, 1, 4))
    caplog.set_level(logging.WARNING)
    # Budget 6 = every distinct image: a copy could only enter by displacing its original's group.
    summary = tasks.run('select', config_for(root, method='coreset', budget=6), tmp_path / 'w')
    assert '3 duplicate image(s) in 2 group(s)' in caplog.text
    files = [r['file'] for r in read_rows(tmp_path / 'w' / 'to_label.csv')]
    assert not any('copy' in f for f in files)
    assert len(files) == 6 and summary['duplicates'] == 3
    rows = read_rows(tmp_path / 'w' / 'duplicates.csv')
    assert {(r['kept'].split('/')[-1], r['duplicate'].split('/')[-1]) for r in rows} == {
        ('img001.png', 'z_copy000.png'),
        ('img001.png', 'z_copy001.png'),
        ('img004.png', 'z_copy002.png'),
    }
    # Cluster sizes count the copies: every readable file is stood for.
    assert sum(int(r['cluster_size']) for r in read_rows(tmp_path / 'w' / 'to_label.csv')) == 9


def test_unreadable_files_are_left_out_with_their_count(tmp_path, caplog):
    root = write_folder(tmp_path / 'pool', count=6, unreadable=2)
    caplog.set_level(logging.WARNING)
    summary = tasks.run('select', config_for(root, budget=3), tmp_path / 'w')
    assert '2 of 8 files are unreadable' in caplog.text
    assert summary['unreadable'] == 2 and summary['pool'] == 6


@pytest.mark.parametrize('budget', [0, -3])
def test_budget_below_one_stops_before_reading(tmp_path, budget):
    with pytest.raises(ConfigError, match=rf'select.budget={budget!r}: expected an integer >= 1'):
        select_task.run_select(config_for(tmp_path / 'missing', budget=budget), tmp_path / 'w')


def test_budget_above_the_files_names_the_count(tmp_path):
    root = write_folder(tmp_path / 'pool', count=5)
    with pytest.raises(ConfigError, match=r'select.budget=9: expected at most 5, the number of image files'):
        select_task.run_select(config_for(root, budget=9), tmp_path / 'w')
    assert not (tmp_path / 'w' / 'features').exists()


def test_budget_above_the_distinct_readable_images_names_the_counts(tmp_path):
    root = write_folder(tmp_path / 'pool', count=4, duplicates=(0, 2), unreadable=1)
    message = r'select.budget=6: expected at most 4, the distinct readable .* \(7 files, 1 unreadable, 2 dup'
    with pytest.raises(ConfigError, match=message) as info:
        select_task.run_select(config_for(root, budget=6), tmp_path / 'w')
    assert '\n' not in str(info.value)
    assert not (tmp_path / 'w' / 'features').exists()  # nothing was encoded


def test_missing_encoder_stops_before_any_image_is_read(tmp_path, caplog):
    root = write_folder(tmp_path / 'pool', count=4, unreadable=1)
    caplog.set_level(logging.WARNING)
    spec = f'checkpoint:{tmp_path}/no_such_run'
    with pytest.raises(WeightsError, match=rf"select.encoder='{spec}': .*does not exist") as info:
        select_task.run_select(config_for(root, encoder=spec, budget=2), tmp_path / 'w')
    assert '\n' not in str(info.value)
    assert 'unreadable' not in caplog.text  # the folder's files were never decoded


@pytest.mark.parametrize(
    ('key', 'value', 'message'),
    [
        ('method', 'kcenter', "select.method='kcenter': expected one of"),
        ('encoder', '', "select.encoder='': expected a weight spec"),
        ('seed', -1, 'select.seed=-1: expected an integer >= 0'),
    ],
)
def test_bad_select_values(tmp_path, key, value, message):
    with pytest.raises(ConfigError, match=message):
        select_task.run_select(config_for(tmp_path, **{key: value}), tmp_path / 'w')


def test_synthetic_pool_is_written_without_labels(tmp_path):
    config = select_config.get_config('tiny')
    folder = select_task.pool_folder(config.data, tmp_path)
    names = sorted(p.name for p in folder.iterdir())
    assert names == [f'{i:05d}.png' for i in range(4 * config.data.per_class)]
    config.data.per_class = 2  # a rerun with fewer images leaves no stale file behind
    assert len(list(select_task.pool_folder(config.data, tmp_path).iterdir())) == 8


def test_nearest_pick_matches_a_loop():
    rng = np.random.default_rng(3)
    features = rng.normal(size=(30, 5))
    picks = np.array([4, 17, 22])
    x = (features - features.mean(0)) / features.std(0)
    expected = [min(range(3), key=lambda j, i=i: sum((x[i] - x[picks[j]]) ** 2)) for i in range(30)]
    np.testing.assert_array_equal(select_task.nearest_pick(features, picks), expected)
