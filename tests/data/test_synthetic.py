"""Tests for fewshot_jax.data.synthetic: shapes, determinism, exact masks, percolation labels."""

import dataclasses
import os

import numpy as np
import pytest

from fewshot_jax.data import synthetic
from fewshot_jax.masks import fast_clusters, percolates

LABELED = {
    'nanowires': ('singular', 'dispersed', 'network', 'bundle'),
    'nanoparticles': ('dispersed', 'separate_clusters', 'percolating_cluster'),
    'viruses': ('icosahedral', 'enveloped_spiky', 'brick', 'filamentous', 'ovoid_striated'),
}


@pytest.fixture(scope='module')
def labeled_sets():
    return {name: getattr(synthetic, name)(6, 64, seed=3) for name in LABELED}


def test_generic_shape_range_and_variety():
    x = synthetic.generic(12, 64, seed=0)
    assert x.shape == (12, 64, 64) and x.dtype == np.float32
    assert x.min() >= 0.0 and x.max() <= 1.0
    assert all(img.std() > 0.02 for img in x), 'an image is (nearly) constant'
    flat = x.reshape(12, -1)
    for i in range(12):
        for j in range(i + 1, 12):
            assert not np.array_equal(flat[i], flat[j])


def test_generic_is_deterministic_and_prefix_stable():
    a = synthetic.generic(5, 48, seed=7)
    np.testing.assert_array_equal(a, synthetic.generic(5, 48, seed=7))
    np.testing.assert_array_equal(a[:3], synthetic.generic(3, 48, seed=7))
    assert not np.array_equal(a, synthetic.generic(5, 48, seed=8))


def test_generic_zero_images_and_odd_size():
    assert synthetic.generic(0, 64, 0).shape == (0, 64, 64)
    assert synthetic.generic(2, 37, 0).shape == (2, 37, 37)


@pytest.mark.parametrize(
    'kwargs, match',
    [
        (dict(n=-1, size=64, seed=0), 'n must be a non-negative integer'),
        (dict(n=2.5, size=64, seed=0), 'n must be'),
        (dict(n=True, size=64, seed=0), 'n must be'),
        (dict(n=2, size=8, seed=0), 'size must be an integer >= 16'),
        (dict(n=2, size=64.0, seed=0), 'size must be'),
        (dict(n=2, size=64, seed=-3), 'seed must be'),
    ],
)
def test_bad_arguments_raise(kwargs, match):
    with pytest.raises(synthetic.SyntheticSpecError, match=match):
        synthetic.generic(**kwargs)
    with pytest.raises(synthetic.SyntheticSpecError, match=match):
        synthetic.everyday(**kwargs)
    per_class_match = match.replace('n must', 'n_per_class must')
    with pytest.raises(synthetic.SyntheticSpecError, match=per_class_match):
        synthetic.nanowires(kwargs['n'], kwargs['size'], kwargs['seed'])


@pytest.mark.parametrize('name', ['generic', *sorted(LABELED)])
def test_imaging_seed_images_the_same_specimens_again(name):
    make = getattr(synthetic, name)
    default, first, second = make(2, 48, 5), make(2, 48, 5, imaging_seed=0), make(2, 48, 5, imaging_seed=1)
    again = make(2, 48, 5, imaging_seed=0)
    if name != 'generic':
        # The same scenes (exact masks, labels), under other imaging conditions.
        np.testing.assert_array_equal(first.masks, default.masks)
        np.testing.assert_array_equal(second.masks, default.masks)
        np.testing.assert_array_equal(first.labels, default.labels)
        default, first, second, again = default.images, first.images, second.images, again.images
    np.testing.assert_array_equal(first, again)
    for a, b in ((default, first), (first, second)):
        for x, y in zip(a, b, strict=True):
            assert np.abs(x - y).mean() > 0.02
    for count in (1, 0):  # checked before anything is drawn
        with pytest.raises(synthetic.SyntheticSpecError, match='imaging_seed must be'):
            make(count, 48, 5, imaging_seed=-1)


@pytest.mark.parametrize('dark', [True, False])
def test_fixed_knobs_hold_a_condition_and_leave_the_scenes(dark):
    drawn = synthetic.viruses(2, 64, 7)
    held = synthetic.viruses(2, 64, 7, fixed_knobs={'dark_objects': dark, 'contrast': 'typical'})
    np.testing.assert_array_equal(held.masks, drawn.masks)
    for image, mask in zip(held.images, held.masks, strict=True):
        inside, outside = image[mask > 0].mean(), image[mask == 0].mean()
        assert (inside < outside) == dark, (inside, outside)


@pytest.mark.parametrize(
    'fixed, match',
    [({'doze': 1.0}, "unknown knob 'doze'"), ({'dark_objects': 1}, 'must be .typical. or a bool')],
)
def test_fixed_knobs_errors_name_the_knob(fixed, match):
    with pytest.raises(synthetic.SyntheticSpecError, match=match):
        synthetic.nanowires(1, 32, 0, fixed_knobs=fixed)


@pytest.mark.parametrize('name', sorted(LABELED))
def test_labeled_set_structure(labeled_sets, name):
    ds = labeled_sets[name]
    n_classes = len(LABELED[name])
    assert ds.class_names == LABELED[name]
    assert ds.images.shape == (6 * n_classes, 64, 64) and ds.images.dtype == np.float32
    assert ds.images.min() >= 0 and ds.images.max() <= 1
    np.testing.assert_array_equal(ds.labels, np.repeat(np.arange(n_classes), 6))
    assert ds.labels.dtype == np.int32
    assert ds.masks.shape == ds.images.shape and ds.masks.dtype == np.uint8
    assert set(np.unique(ds.masks)) <= {0, 1}
    assert all(m.any() for m in ds.masks), 'an image has no labeled object'
    with pytest.raises(dataclasses.FrozenInstanceError):
        ds.labels = None


@pytest.mark.parametrize('name', sorted(LABELED))
def test_labeled_sets_are_deterministic_and_extend(labeled_sets, name):
    small = getattr(synthetic, name)(3, 64, seed=3)
    big = labeled_sets[name]
    for c in range(len(LABELED[name])):
        # Image k of class c does not depend on how many images per class were asked for.
        mine, theirs = small.labels == c, big.labels == c
        np.testing.assert_array_equal(small.images[mine], big.images[theirs][:3])
        np.testing.assert_array_equal(small.masks[mine], big.masks[theirs][:3])


@pytest.mark.parametrize('name', sorted(LABELED))
def test_masks_mark_visible_objects(labeled_sets, name):
    # The image must differ inside and outside the mask (either polarity):
    # otherwise the mask is not the ground truth of what is drawn.
    ds = labeled_sets[name]
    gaps = []
    for img, mask in zip(ds.images, ds.masks, strict=True):
        inside, outside = img[mask == 1].mean(), img[mask == 0].mean()
        gaps.append(abs(inside - outside) / (img.std() + 1e-6))
    assert np.median(gaps) > 0.5
    assert np.mean(np.array(gaps) > 0.2) >= 0.8


def test_every_nanowire_label_agrees_with_percolation():
    ds = synthetic.nanowires(8, 96, seed=11)
    for label, mask in zip(ds.labels, ds.masks, strict=True):
        name = ds.class_names[label]
        if name == 'dispersed':
            assert not percolates(mask)
        elif name == 'network':
            assert percolates(mask)
    # The scikit-learn path agrees as well on a few of them.
    for i in np.flatnonzero(np.isin(ds.labels, [1, 2]))[::4]:
        assert percolates(ds.masks[i], method='dbscan') == (ds.labels[i] == 2)


def test_nanowire_labels_agree_with_percolation_at_several_sizes(labeled_sets):
    ds = labeled_sets['nanowires']
    for label, mask in zip(ds.labels, ds.masks, strict=True):
        if label in (1, 2):
            assert percolates(mask) == (label == 2)
    ds = synthetic.nanowires(2, 160, seed=0)
    for label, mask in zip(ds.labels, ds.masks, strict=True):
        if label in (1, 2):
            assert percolates(mask) == (label == 2)


def test_nanowire_morphologies_differ_as_described(labeled_sets):
    ds = labeled_sets['nanowires']
    clusters = np.array([fast_clusters(m).n_clusters for m in ds.masks])
    # Dispersed images hold several separate wires, singular ones a single wire.
    assert clusters[ds.labels == 1].mean() > clusters[ds.labels == 0].mean()


def test_dispersed_wires_never_touch_and_networks_are_denser(labeled_sets):
    ds = labeled_sets['nanowires']
    for mask in ds.masks[ds.labels == 1]:
        # Four or more short wires, each its own DBSCAN cluster: no junctions.
        assert fast_clusters(mask).n_clusters >= 4
    for mask in ds.masks[ds.labels == 0]:
        assert fast_clusters(mask).n_clusters == 1
    coverage = np.array([m.mean() for m in ds.masks])
    assert coverage[ds.labels == 2].mean() > 1.5 * coverage[ds.labels == 1].mean()
    assert coverage[ds.labels == 2].mean() > 3 * coverage[ds.labels == 0].mean()


def test_every_nanoparticle_label_agrees_with_percolation(labeled_sets):
    ds = labeled_sets['nanoparticles']
    for label, mask in zip(ds.labels, ds.masks, strict=True):
        assert percolates(mask) == (ds.class_names[label] == 'percolating_cluster')


def test_dispersed_particles_do_not_touch(labeled_sets):
    ds = labeled_sets['nanoparticles']
    for mask in ds.masks[ds.labels == 0]:
        c = fast_clusters(mask)
        # Particles are spread out: many small clusters, none much larger than a particle.
        sizes = np.bincount(c.labels.ravel())[1:]
        assert c.n_clusters >= 5
        assert sizes.max() <= 8 * np.median(sizes)


def test_particle_classes_differ_in_aggregate_size(labeled_sets):
    ds = labeled_sets['nanoparticles']
    largest = np.array([np.bincount(fast_clusters(m).labels.ravel())[1:].max() for m in ds.masks])
    counts = np.array([fast_clusters(m).n_clusters for m in ds.masks])
    # Separate clusters: several aggregates, each much larger than a dispersed particle,
    # much smaller than the one percolating cluster.
    assert (counts[ds.labels == 1] >= 2).all()
    assert np.median(largest[ds.labels == 1]) > 3 * np.median(largest[ds.labels == 0])
    assert np.median(largest[ds.labels == 2]) > 3 * np.median(largest[ds.labels == 1])


@pytest.mark.parametrize('name', sorted(LABELED))
def test_raw_pixels_do_not_give_the_label_away(name):
    # The calibration protocol on a small pool: a linear model on 32 x 32 pixels
    # with 8 labels per class stays near chance (the classes differ in
    # morphology, not in where things are or how bright the image is).
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    from fewshot_jax.probe.baselines import raw_pixels

    ds = getattr(synthetic, name)(20, 64, seed=5)
    x = raw_pixels(ds.images)
    n_classes = len(ds.class_names)
    accs = []
    for draw in range(5):
        rng = np.random.default_rng(draw)
        train = np.concatenate(
            [rng.choice(np.flatnonzero(ds.labels == c), 8, replace=False) for c in range(n_classes)]
        )
        test = np.setdiff1d(np.arange(len(x)), train)
        scaler = StandardScaler().fit(x[train])
        clf = LogisticRegression(max_iter=2000).fit(scaler.transform(x[train]), ds.labels[train])
        accs.append((clf.predict(scaler.transform(x[test])) == ds.labels[test]).mean())
    assert np.median(accs) < 1.0 / n_classes + 0.2


def test_everyday_colour_crops():
    x = synthetic.everyday(10, 48, seed=0)
    assert x.shape == (10, 48, 48, 3) and x.dtype == np.float32
    assert x.min() >= 0 and x.max() <= 1
    np.testing.assert_array_equal(x, synthetic.everyday(10, 48, seed=0))
    np.testing.assert_array_equal(x[:4], synthetic.everyday(4, 48, seed=0))
    colourful = [np.abs(img[..., 0] - img[..., 1]).mean() > 0.02 for img in x]
    assert any(colourful), 'no image has colour'
    assert not np.array_equal(x, synthetic.everyday(10, 48, seed=1))


def test_everyday_uses_only_bundled_photos():
    from fewshot_jax.data.synthetic import photos as synthetic_everyday

    folder = synthetic_everyday.photo_folder()
    assert all(os.path.isfile(os.path.join(folder, f)) for f in synthetic_everyday.PHOTO_FILES)
    photos = synthetic_everyday.bundled_photos()
    assert len(photos) == len(synthetic_everyday.PHOTO_FILES) >= 8
    assert all(p.mode == 'RGB' and min(p.size) >= 128 for p in photos)
