"""One-shot anchor analysis: sides and distances on hand-built masks, then on synthetic ones."""

import numpy as np
import pytest

from fewshot_jax.analysis import anchors, plots
from fewshot_jax.data import synthetic
from fewshot_jax.masks import pixel_density


def _mask(fraction: float, size: int = 10) -> np.ndarray:
    mask = np.zeros(size * size, np.uint8)
    mask[: int(round(fraction * size * size))] = 1
    return mask.reshape(size, size)


@pytest.fixture
def masks():
    # Class 0 ('dispersed'): images 0-4; class 1 ('network'): images 5-9; class 2: 10.
    densities = [0.10, 0.20, 0.30, 0.40, 0.50, 0.40, 0.50, 0.60, 0.70, 0.80, 0.05]
    return np.stack([_mask(d) for d in densities]), np.asarray([0] * 5 + [1] * 5 + [2])


def test_sides_and_distances_match_hand_computation(masks):
    images, labels = masks
    test = np.asarray([1, 2, 3, 6, 7, 8])  # medians: class 0 → 0.30, class 1 → 0.60
    runs = [
        {'train': [0, 9, 10], 'test': test, 'accuracy': 0.9},  # 0.10 below, 0.80 above: opposite
        {'train': [4, 9, 10], 'test': test, 'accuracy': 0.5},  # 0.50 above, 0.80 above: same
        {'train': [0, 5, 10], 'test': test, 'accuracy': 0.4},  # below, below: same
    ]
    table = anchors.anchor_table(labels, images, runs, (0, 1), ('dispersed', 'network', 'x'))
    assert [r['side'] for r in table] == ['opposite', 'same', 'same']
    np.testing.assert_allclose([r['distance'] for r in table], [0.2 + 0.2, 0.2 + 0.2, 0.2 + 0.2])
    assert table[0]['median_dispersed'] == pytest.approx(0.3)
    assert table[0]['anchor_network'] == pytest.approx(0.8)
    summary = anchors.summarize(table)
    assert summary['opposite']['count'] == 1 and summary['same']['count'] == 2
    assert summary['opposite']['median_accuracy'] == 0.9
    assert summary['same']['median_accuracy'] == pytest.approx(0.45)


def test_bad_runs_are_named(masks):
    images, labels = masks
    with pytest.raises(anchors.AnchorError, match="run 0: 2 training images of class 'dispersed'"):
        anchors.anchor_table(
            labels,
            images,
            [{'train': [0, 1, 9], 'test': [2, 6], 'accuracy': 1}],
            (0, 1),
            ('dispersed', 'network', 'x'),
        )
    with pytest.raises(anchors.AnchorError, match="no test image of class 'network'"):
        anchors.anchor_table(
            labels,
            images,
            [{'train': [0, 9], 'test': [2], 'accuracy': 1}],
            (0, 1),
            ('dispersed', 'network', 'x'),
        )
    with pytest.raises(anchors.AnchorError, match='image 6 .* has no mask'):
        anchors.anchor_table(
            labels,
            {0: images[0], 9: images[9], 2: images[2]},
            [{'train': [0, 9], 'test': [2, 6], 'accuracy': 1}],
            (0, 1),
            ('dispersed', 'network', 'x'),
        )


def test_on_synthetic_nanowire_masks_with_a_figure(tmp_path):
    data = synthetic.nanowires(6, 48, seed=1)
    dispersed, network = (data.class_names.index(n) for n in ('dispersed', 'network'))
    rng = np.random.default_rng(0)
    runs = []
    for r in range(8):
        anchor = [int(rng.choice(np.flatnonzero(data.labels == c))) for c in (dispersed, network)]
        test = np.setdiff1d(np.flatnonzero(np.isin(data.labels, (dispersed, network))), anchor)
        runs.append({'run': r, 'train': anchor, 'test': test, 'accuracy': float(rng.random())})
    table = anchors.anchor_table(data.labels, data.masks, runs, (dispersed, network), data.class_names)
    for row, run in zip(table, runs, strict=True):  # plain recomputation
        a = [pixel_density(data.masks[i]) for i in run['train']]
        m = [
            np.median([pixel_density(data.masks[i]) for i in run['test'] if data.labels[i] == c])
            for c in (dispersed, network)
        ]
        assert row['side'] == ('opposite' if (a[0] - m[0]) * (a[1] - m[1]) < 0 else 'same')
        assert row['distance'] == pytest.approx(abs(a[0] - m[0]) + abs(a[1] - m[1]))
    best, worst = (
        int(np.argmax([r['accuracy'] for r in table])),
        int(np.argmin([r['accuracy'] for r in table])),
    )
    densities = {
        which: [
            [pixel_density(data.masks[i]) for i in runs[r]['test'] if data.labels[i] == c]
            for c in (dispersed, network)
        ]
        for which, r in (('best', best), ('worst', worst))
    }
    path = plots.anchor_figure(table, densities, ('dispersed', 'network'), tmp_path / 'a.png')
    assert path.stat().st_size > 10_000
