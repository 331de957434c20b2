"""Grain pipelines: geometry, epoch coverage, determinism, resumable iterator state, padding."""

import numpy as np
import pytest
from PIL import Image

from fewshot_jax.data import pipeline
from fewshot_jax.data.arrays import ArraySource
from fewshot_jax.data.io import DataError


def index_images(n, size=8):
    """Image i is the constant i/255, so a pixel tells which source item it came from."""
    return np.stack([np.full((size, size), i / 255.0, np.float32) for i in range(n)])


def ids(batch):
    return [int(v) for v in batch[:, 0, 0, 0]]


def test_to_uint8_square_geometry():
    img = np.zeros((16, 48), np.float32)
    img[:, 16:32] = 1.0  # the centre third is white
    out = pipeline.to_uint8_square(img, 16)
    assert out.shape == (16, 16, 3) and out.dtype == np.uint8
    assert np.all(out == 255)  # only the centre square survives
    same = np.random.default_rng(0).uniform(size=(16, 16)).astype(np.float32)
    ref = np.rint(same * 255).astype(np.uint8)
    np.testing.assert_array_equal(pipeline.to_uint8_square(same, 16)[..., 1], ref)
    rgb = np.random.default_rng(1).uniform(size=(20, 20, 3)).astype(np.float32)
    assert pipeline.to_uint8_square(rgb, 10).shape == (10, 10, 3)
    with pytest.raises(DataError, match=r'\(5, 5, 2\)'):
        pipeline.to_uint8_square(np.zeros((5, 5, 2)), 4)


def test_mask_follows_image_geometry():
    rng = np.random.default_rng(0)
    blocks = rng.integers(0, 2, (6, 9))
    mask = np.kron(blocks, np.ones((8, 8), np.uint8))  # 48 × 72
    image = mask.astype(np.float32)
    out_img = pipeline.to_uint8_square(image, 24)[..., 0]
    out_mask = pipeline.mask_to_square(mask, 24)
    assert set(np.unique(out_mask)) <= {0, 1}
    # Reference: centre crop 48×48 of the mask, then every second pixel.
    ref = mask[:, 12:60][::2, ::2]
    interior = (out_img == 0) | (out_img == 255)  # away from bilinear block edges
    np.testing.assert_array_equal(out_mask[interior], ref[interior])
    np.testing.assert_array_equal(out_mask[interior], (out_img[interior] > 127).astype(np.uint8))


def test_ssl_dataset_covers_each_epoch_once_and_is_deterministic():
    source = ArraySource(index_images(40))
    spec = pipeline.PipelineSpec(image_size=8, global_batch=8, seed=3, num_threads=2, prefetch=2)
    ds = pipeline.ssl_dataset(source, spec)
    first_epoch = [i for b in range(5) for i in ids(ds[b])]
    assert sorted(first_epoch) == list(range(40))
    second_epoch = [i for b in range(5, 10) for i in ids(ds[b])]
    assert sorted(second_epoch) == list(range(40)) and second_epoch != first_epoch
    again = pipeline.ssl_dataset(source, spec)
    assert [ids(again[b]) for b in range(10)] == [ids(ds[b]) for b in range(10)]
    other_seed = pipeline.ssl_dataset(source, pipeline.PipelineSpec(8, 8, seed=4))
    assert ids(other_seed[0]) != ids(ds[0])


def test_cache_serves_the_same_batches_as_reading_files(tmp_path):
    for i in range(12):
        Image.fromarray(np.full((20, 30), 20 * i, np.uint8)).save(tmp_path / f'im{i:02d}.png')
    source = pipeline.make_source(_data_cfg(root=str(tmp_path)))
    cached = pipeline.ssl_dataset(source, pipeline.PipelineSpec(10, 4, seed=1))
    direct = pipeline.ssl_dataset(source, pipeline.PipelineSpec(10, 4, seed=1, cache_bytes=0))
    for b in range(6):
        np.testing.assert_array_equal(cached[b], direct[b])
    assert cached[0].shape == (4, 10, 10, 1)


def test_channels_replicate_gray_or_take_luminance():
    rgb = np.zeros((8, 8, 3), np.float32)
    rgb[..., 1] = 1.0  # pure green
    gray = pipeline.to_uint8_square(rgb, 8, channels=1)
    assert gray.shape == (8, 8, 1) and np.all(gray == round(0.587 * 255))
    rep = pipeline.to_uint8_square(np.full((8, 8), 0.5, np.float32), 8, channels=3)
    assert rep.shape == (8, 8, 3) and np.all(rep == 128)
    assert pipeline.source_channels(ArraySource(np.zeros((2, 4, 4, 3)))) == 3
    assert pipeline.source_channels(ArraySource(np.zeros((2, 4, 4)))) == 1


def test_iterator_state_resumes_exactly():
    source = ArraySource(index_images(24))
    spec = pipeline.PipelineSpec(image_size=8, global_batch=4, seed=0, num_threads=2, prefetch=2)
    ds = pipeline.ssl_dataset(source, spec)
    it = pipeline.batch_iterator(ds, spec)
    for _ in range(7):
        next(it)
    state = it.get_state()
    expected = [ids(next(it)) for _ in range(5)]
    resumed = pipeline.batch_iterator(pipeline.ssl_dataset(source, spec), spec, state)
    assert [ids(next(resumed)) for _ in range(5)] == expected


def test_source_smaller_than_batch_is_an_error():
    with pytest.raises(DataError, match='3 images but data.batch_size is 8'):
        pipeline.ssl_dataset(
            ArraySource(index_images(3)), pipeline.PipelineSpec(image_size=8, global_batch=8, seed=0)
        )


def test_eval_dataset_pads_last_batch_and_keeps_order():
    labels = np.arange(10) % 3
    source = ArraySource(index_images(10), labels=labels)
    ds = pipeline.eval_dataset(source, [9, 2, 5, 7, 0], image_size=8, batch_size=4)
    batches = [ds[i] for i in range(len(ds))]
    assert len(batches) == 2
    assert ids(batches[0]['image']) == [9, 2, 5, 7]
    assert batches[1]['valid'].tolist() == [True, False, False, False]
    assert batches[1]['image'].shape == (4, 8, 8, 1)  # grayscale stays one channel
    assert int(batches[1]['label'][0]) == labels[0]
    with pytest.raises(DataError, match='out of range'):
        pipeline.eval_dataset(source, [10], image_size=8, batch_size=4)


def test_train_dataset_repeats_small_kshot_sets_and_segmentation_pairs(tmp_path):
    masks = np.zeros((6, 8, 8), np.uint8)
    masks[:, :, :4] = 1  # left half of every mask
    source = ArraySource(index_images(6), labels=np.arange(6) % 2, masks=masks)
    spec = pipeline.PipelineSpec(image_size=16, global_batch=8, seed=0)
    labeled = pipeline.train_dataset(source, [1, 4], spec)
    batch = labeled[0]
    assert sorted(set(ids(batch['image']))) == [1, 4] and batch['label'].shape == (8,)
    seg = pipeline.train_dataset(source, range(6), spec, kind='segmentation')[0]
    assert seg['mask'].shape == (8, 16, 16) and seg['mask'][:, :, :8].all()
    assert not seg['mask'][:, :, 8:].any()


def test_folder_source_through_pipeline(tmp_path):
    for i in range(6):
        Image.fromarray(np.full((30, 20), 40 * i, np.uint8)).save(tmp_path / f'im{i}.png')
    (tmp_path / 'notes.txt').write_text('not an image')
    source = pipeline.make_source(_data_cfg(root=str(tmp_path)))
    assert len(source) == 6
    ds = pipeline.ssl_dataset(source, pipeline.PipelineSpec(image_size=10, global_batch=3, seed=0))
    assert sorted(v for b in range(2) for v in ids(ds[b])) == [0, 40, 80, 120, 160, 200]


def _data_cfg(**kw):
    import ml_collections

    base = dict(source='folder', root='', subset=None, seed=0, keep_color=False)
    base.update(kw)
    return ml_collections.ConfigDict(base)


def test_labeled_pipelines_split_disjoint_complete_shards_over_processes():
    # A fake 2-process split: each process reads its own shard, the union is the split.
    labels = np.arange(11) % 3
    source = ArraySource(index_images(11), labels=labels)
    split = [10, 3, 7, 0, 5, 8, 1, 9, 2]  # 9 examples: shards of 5 and 4
    seen, n_batches = [], set()
    for proc in range(2):
        ds = pipeline.eval_dataset(source, split, image_size=8, batch_size=4, process=(proc, 2))
        batches = [ds[i] for i in range(len(ds))]
        n_batches.add(len(batches))
        for b in batches:
            assert b['image'].shape[0] == 2  # this process's half of the global batch
            for image_id, valid, index in zip(ids(b['image']), b['valid'], b['index'], strict=True):
                if valid:
                    assert split[index] == image_id
                    seen.append(image_id)
                else:
                    assert index == -1
    assert len(n_batches) == 1  # same number of (collective) steps on every process
    assert sorted(seen) == sorted(split)  # every example exactly once

    spec = pipeline.PipelineSpec(image_size=8, global_batch=4, seed=0)
    shards = [
        set(
            v
            for b in range(6)
            for v in ids(pipeline.train_dataset(source, split, spec, process=(p, 2))[b]['image'])
        )
        for p in range(2)
    ]
    assert shards[0].isdisjoint(shards[1]) and shards[0] | shards[1] == set(split)
    with pytest.raises(DataError, match='does not split over 3 processes'):
        pipeline.train_dataset(source, split, spec, process=(0, 3))
