"""The online probe: its figures against plain references, and a tiny run that logs them."""

import json

import numpy as np
import pytest

from fewshot_jax import tasks
from fewshot_jax.pretrain import monitor
from fewshot_jax.pretrain.task import make_ssl_batches
from fewshot_jax.train_lib import sharding
from tests.conftest import tiny_ssl_config


def reference_knn(features, labels, train, test, n_neighbours):
    """Cosine kNN majority vote (ties: lowest label), as a plain loop."""
    correct = 0
    for i in test:
        sims = []
        for j in train:
            a, b = features[i], features[j]
            sims.append((-(a @ b) / (np.linalg.norm(a) * np.linalg.norm(b)), j))
        votes = [labels[j] for _, j in sorted(sims)[:n_neighbours]]
        counts = {c: votes.count(c) for c in set(votes)}
        best = max(counts.values())
        correct += min(c for c, n in counts.items() if n == best) == labels[i]
    return correct / len(test)


def test_probe_accuracies_match_a_plain_knn_and_separate_easy_classes():
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(3), 10)
    features = 0.3 * rng.normal(size=(30, 5)) + 4.0 * np.eye(5)[labels]  # well separated
    draws = monitor.fixed_draws(labels, 2, 4, seed=1)
    out = monitor.probe_accuracies(features, labels, draws)
    assert out['logistic'] == 1.0
    knn = [reference_knn(features, labels, d, np.setdiff1d(np.arange(30), d), 2) for d in draws]
    assert out['knn'] == pytest.approx(np.median(knn))

    noise = rng.normal(size=(30, 5))  # no signal: near chance
    assert monitor.probe_accuracies(noise, labels, draws)['logistic'] < 0.7


def test_fixed_draws_take_k_per_class_and_refuse_too_small_classes():
    labels = np.repeat(np.arange(2), 5)
    for draw in monitor.fixed_draws(labels, 3, 5, seed=0):
        assert np.bincount(labels[draw]).tolist() == [3, 3]
    with pytest.raises(monitor.MonitorConfigError, match='raise monitor.images_per_class'):
        monitor.fixed_draws(labels, 4, 1, seed=0)


def test_unknown_monitor_task_is_named():
    with pytest.raises(monitor.MonitorConfigError, match="'nanotubes'"):
        monitor.labeled_set('nanotubes', 4, 32, 0)


def test_tiny_run_logs_the_online_probe_at_its_cadence(tmp_path):
    config = tiny_ssl_config(**{'monitor.tasks': ('nanowires',), 'monitor.every': 3, 'num_devices': 2})
    tasks.run('pretrain', config, tmp_path)
    lines = [json.loads(x) for x in (tmp_path / 'metrics.jsonl').read_text().splitlines()]
    probed = {m['step']: m for m in lines if 'probe/nanowires/2shot_logistic' in m}
    assert sorted(probed) == [0, 3, 6]  # step 0 is the random-init reference
    for m in probed.values():
        assert 0.0 <= m['probe/nanowires/2shot_logistic'] <= 1.0
        assert 0.0 <= m['probe/nanowires/2shot_knn'] <= 1.0


def test_monitor_images_never_enter_the_pretraining_batches():
    config = tiny_ssl_config(**{'num_devices': 1})
    images, _ = monitor.labeled_set('nanowires', 6, 32, 7919)
    monitor_u8 = {np.round(im * 255).astype(np.uint8).tobytes() for im in images}
    source, make_batches = make_ssl_batches(config, sharding.make_mesh(1))
    batches = make_batches(None)
    seen = set()
    for _ in range(len(source) // config.data.batch_size + 1):
        for image in np.asarray(next(batches))[..., 0]:
            seen.add(image.tobytes())
    assert len(seen) == len(source)  # one epoch covers the whole source
    assert not monitor_u8 & seen


def test_real_data_runs_follow_only_labeled_folders(tmp_path, caplog):
    from fewshot_jax.pretrain.task import _monitor_hooks

    mesh = sharding.make_mesh(1)
    synthetic = tiny_ssl_config(**{'monitor.tasks': ('nanowires',)})
    assert len(_monitor_hooks(synthetic, mesh)) == 1
    folder = tiny_ssl_config(**{'monitor.tasks': ('nanowires',), 'data.source': 'folder'})
    with caplog.at_level('WARNING'):
        assert _monitor_hooks(folder, mesh) == []
    assert "the synthetic monitor tasks ['nanowires'] are off" in caplog.text
    from PIL import Image

    labeled = tmp_path / 'labeled'
    rng = np.random.default_rng(0)
    for name in ('a', 'b'):
        (labeled / name).mkdir(parents=True)
        for i in range(6):
            Image.fromarray(rng.integers(0, 255, (32, 32), dtype=np.uint8)).save(labeled / name / f'{i}.png')
    both = tiny_ssl_config(**{'monitor.tasks': ('nanowires', f'folder:{labeled}'), 'data.source': 'folder'})
    assert len(_monitor_hooks(both, mesh)) == 1  # the labeled folder, not the synthetic task
