"""Grain input pipelines: sources → uint8 batches at a base size → global arrays.

The pipeline only decodes, resizes and batches; random augmentation happens on
device (``augment.py``). Batches are deterministic in (source, seed, step), and
the iterator state is a small JSON-able dict saved in every checkpoint, so a
resumed run sees exactly the batches an uninterrupted run would have seen.
"""

from __future__ import annotations

import dataclasses
import functools

import grain
import jax
import ml_collections
import numpy as np
from PIL import Image

from fewshot_jax.data import sources, synthetic
from fewshot_jax.data.arrays import ArraySource
from fewshot_jax.data.io import DataError
from fewshot_jax.data.resize import square_crop_resize
from fewshot_jax.errors import ConfigError

SOURCES = ('synthetic', 'synthetic_everyday', 'folder')


def make_source(data_cfg: ml_collections.ConfigDict):
    """Builds the unlabeled pretraining source named by ``data.source``.

    * ``'synthetic'``: ``data.num_images`` generic TEM-like images of
      ``data.synthetic_size`` px from ``data.seed`` (no files needed);
    * ``'synthetic_everyday'``: colour photographs cropped from scikit-image's
      bundled images, the stand-in for the paper's 832 ImageNet images;
    * ``'folder'``: every image under ``data.root`` (recursive), optionally a
      ``data.subset`` of them drawn by ``data.seed`` (the paper drew 832).
    """
    name = data_cfg.source
    if name == 'synthetic':
        images = synthetic.generic(data_cfg.num_images, data_cfg.synthetic_size, data_cfg.seed)
        return ArraySource(images)
    if name == 'synthetic_everyday':
        images = synthetic.everyday(data_cfg.num_images, data_cfg.synthetic_size, data_cfg.seed)
        return ArraySource(images)
    if name == 'folder':
        if not data_cfg.get('root'):
            raise DataError(
                "data.source='folder' needs data.root: a folder of unlabeled images "
                '(png, jpg, tif, …); pass --config.data.root=/path/to/images'
            )
        source = sources.UnlabeledFolderSource(
            data_cfg.root,
            subset=data_cfg.get('subset'),
            seed=data_cfg.seed,
            keep_color=data_cfg.get('keep_color', False),
        )
        # Every file is read once before training: all unreadable files in one message.
        source.check_readable(data_cfg.get('on_unreadable', 'error'))
        return source
    raise ConfigError(f'data.source={name!r}: expected one of {SOURCES}')


def to_uint8_square(image: np.ndarray, size: int, channels: int = 3) -> np.ndarray:
    """Float [0,1] image (H, W) or (H, W, 3) → uint8 (size, size, channels).

    The shorter side is resized to ``size`` (bilinear, antialiased when
    shrinking) and the centre square kept. ``channels=1`` keeps micrographs
    grayscale (a third of the bytes to move; the device replicates them to the
    three channels the encoder takes); colour input then becomes luminance.
    ``channels=3`` replicates grayscale input.
    """
    image = np.asarray(image)
    if image.ndim == 3 and image.shape[-1] == 1:
        image = image[..., 0]
    if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[-1] != 3):
        raise DataError(f'expected an image of shape (H, W) or (H, W, 3); got {image.shape}')
    if channels not in (1, 3):
        raise ValueError(f'channels={channels}: expected 1 (grayscale) or 3 (colour)')
    if image.ndim == 3 and channels == 1:
        image = image @ np.asarray([0.299, 0.587, 0.114], np.float32)
    pil = Image.fromarray(np.clip(np.rint(image * 255.0), 0, 255).astype(np.uint8))
    out = square_crop_resize(pil, size, Image.Resampling.BILINEAR)
    if out.ndim == 2:
        out = np.repeat(out[..., None], channels, axis=-1)
    return out


def mask_to_square(mask: np.ndarray, size: int) -> np.ndarray:
    """Binary mask (H, W) → uint8 (size, size) in {0, 1}, nearest-neighbour, same geometry
    as :func:`to_uint8_square` so image and mask stay aligned."""
    pil = Image.fromarray((np.asarray(mask) > 0).astype(np.uint8))
    return square_crop_resize(pil, size, Image.Resampling.NEAREST)


def _prepare_ssl(record, size: int, channels: int):
    return to_uint8_square(record['image'], size, channels)


def _prepare_labeled(record, size: int, channels: int):
    return {
        'image': to_uint8_square(record['image'], size, channels),
        'label': np.asarray(record['label'], np.int32),
    }


def _prepare_segmentation(record, size: int, channels: int):
    if 'mask' not in record:
        raise DataError('a segmentation pipeline needs a source whose records have a mask')
    image, mask = record['image'], record['mask']
    if np.shape(mask) != np.shape(image)[:2]:
        raise DataError(f'mask shape {np.shape(mask)} differs from image shape {np.shape(image)}')
    return {'image': to_uint8_square(image, size, channels), 'mask': mask_to_square(mask, size)}


def source_channels(source) -> int:
    """3 if the source's records are colour images, else 1 (peeks at record 0)."""
    return 3 if np.ndim(source[0]['image']) == 3 else 1


@dataclasses.dataclass(frozen=True)
class PipelineSpec:
    """What a pipeline needs besides its source (plain values, no config).

    Attributes:
        image_size: output side in pixels.
        global_batch: rows per global batch (each host yields its share).
        seed: shuffling seed.
        channels: 1 for grayscale micrographs, 3 for colour (see ``source_channels``).
        num_threads: Grain read threads.
        prefetch: batches read ahead.
        num_workers: worker processes (0: threads only). Decoding large files is
            CPU-bound Python work that threads cannot parallelise past the GIL.
        cache_bytes: decode and resize every image once and keep the uint8
            result in memory when it fits in this many bytes (0: never). The
            paper's 832-image sets take 42 MB at 224 px.
    """

    image_size: int
    global_batch: int
    seed: int
    channels: int = 1
    num_threads: int = 8
    prefetch: int = 8
    num_workers: int = 0
    cache_bytes: int = 4 * 2**30


def spec_from(data_cfg: ml_collections.ConfigDict, seed: int, channels: int) -> PipelineSpec:
    """The pipeline settings of ``config.data`` (the one place that reads them)."""
    return PipelineSpec(
        image_size=data_cfg.image_size,
        global_batch=data_cfg.batch_size,
        seed=seed,
        channels=channels,
        num_threads=data_cfg.get('num_threads', 8),
        prefetch=data_cfg.get('num_threads', 8),
        num_workers=data_cfg.get('num_workers', 0),
        cache_bytes=int(data_cfg.get('cache_gb', 4.0) * 2**30),
    )


def process_shard(n: int, process_index: int, process_count: int) -> np.ndarray:
    """The positions ``0..n-1`` that process ``process_index`` of ``process_count`` reads.

    Interleaved (``i, i + P, i + 2P, …``): shards differ in size by at most one and
    together cover every position exactly once.
    """
    return np.arange(process_index, n, process_count)


class _Gather:
    """Rows of an in-memory array picked by a batch of indices (one copy per batch)."""

    def __init__(self, array: np.ndarray):
        self.array = array

    def __call__(self, indices):
        return self.array[np.asarray(indices)]


def _materialize(ds: grain.MapDataset, spec: PipelineSpec) -> np.ndarray:
    """Reads every element of ``ds`` once (threaded, in order) into one uint8 array."""
    options = grain.ReadOptions(num_threads=spec.num_threads, prefetch_buffer_size=spec.prefetch)
    cache = np.empty((len(ds), spec.image_size, spec.image_size, spec.channels), np.uint8)
    for i, image in enumerate(ds.to_iter_dataset(options)):
        cache[i] = image
    return cache


def ssl_dataset(source, spec: PipelineSpec, process: tuple[int, int] | None = None) -> grain.MapDataset:
    """An infinite, shuffled (reshuffled every epoch) dataset of uint8 image batches.

    The global batches are one order of the whole source, reshuffled every epoch
    and cut into ``global_batch`` rows, whatever the number of processes. On
    ``P`` processes process ``p`` yields rows ``[p·n, (p+1)·n)`` (``n =
    global_batch / P``) of each global batch and reads only those images: the
    processes' shares of an epoch are disjoint and together cover it, and a job
    on ``P`` hosts trains on exactly the batches of a one-host run. Small sets
    are decoded once and served from memory (``spec.cache_bytes``): up front on
    one process, on first use on several (so a process decodes only what it reads).
    ``process`` is ``(index, count)``, by default this JAX process's.
    """
    proc, n_proc = process or (jax.process_index(), jax.process_count())
    if spec.global_batch % n_proc:
        raise DataError(f'data.batch_size={spec.global_batch} does not split over {n_proc} processes')
    if len(source) < spec.global_batch:
        raise DataError(
            f'the source has {len(source)} images but data.batch_size is '
            f'{spec.global_batch}: provide more images or a smaller batch'
        )
    images = grain.MapDataset.source(source).map(
        functools.partial(_prepare_ssl, size=spec.image_size, channels=spec.channels)
    )
    # Shuffle and batch indices, then read each batch's images in one go: per-element
    # Python work would otherwise cap the rate at a few k images/s.
    indices = (
        grain.MapDataset.range(len(images))
        .shuffle(seed=spec.seed)
        .repeat(None)
        .batch(spec.global_batch, drop_remainder=True)
    )
    if n_proc > 1:
        local = spec.global_batch // n_proc
        indices = indices.map(_Rows(proc * local, (proc + 1) * local))
    fits = len(images) * spec.image_size**2 * spec.channels <= spec.cache_bytes
    if fits and n_proc == 1:
        return indices.map(_Gather(_materialize(images, spec)))
    shape = (spec.image_size, spec.image_size, spec.channels)
    return indices.map(_Read(images, shape, cache=fits))


class _Rows:
    """Rows ``[start, stop)`` of a global batch of indices: one process's share (picklable)."""

    def __init__(self, start: int, stop: int):
        self.start, self.stop = start, stop

    def __call__(self, indices):
        return np.asarray(indices)[self.start : self.stop]


class _Read:
    """The images at a batch of indices, optionally kept in memory after their first read.

    The cache fills on first use, so each process decodes only the images it is
    given; rows are written before being marked, so concurrent Grain threads at
    worst decode an image twice (to the same values).
    """

    def __init__(self, images: grain.MapDataset, shape: tuple[int, ...], cache: bool):
        self.images = images
        self.cache = np.empty((len(images),) + shape, np.uint8) if cache else None
        self.filled = np.zeros(len(images), bool) if cache else None

    def __call__(self, indices):
        indices = np.asarray(indices)
        if self.cache is None:
            return np.stack([self.images[int(i)] for i in indices])
        for i in indices[~self.filled[indices]]:
            self.cache[i] = self.images[int(i)]
            self.filled[i] = True
        return self.cache[indices]


def batch_iterator(dataset: grain.MapDataset, spec: PipelineSpec, state: dict | None = None):
    """Turns a batched MapDataset into a prefetching iterator, optionally restored.

    Args:
        dataset: output of e.g. :func:`ssl_dataset`.
        spec: thread and prefetch counts.
        state: a dict from a previous iterator's ``get_state()`` (from a checkpoint).
    """
    options = grain.ReadOptions(num_threads=spec.num_threads, prefetch_buffer_size=spec.prefetch)
    iter_ds = dataset.to_iter_dataset(options)
    if spec.num_workers > 0:
        # Needs absl flags parsed and a __main__ guard (launch.py provides both).
        iter_ds = iter_ds.mp_prefetch(grain.MultiprocessingOptions(num_workers=spec.num_workers))
    iterator = iter(iter_ds)
    if state is not None:
        iterator.set_state(state)
    return iterator


def eval_dataset(
    source,
    indices,
    *,
    image_size: int,
    batch_size: int,
    kind: str = 'labeled',
    channels: int = 1,
    process: tuple[int, int] | None = None,
) -> grain.MapDataset:
    """Every example of ``indices`` once, in order, deterministically resized (no augmentation).

    ``batch_size`` is the global batch. On several processes each reads its own
    interleaved shard of ``indices`` in batches of ``batch_size / process_count``
    rows, so every example is evaluated exactly once across processes; every
    process yields the same number of batches (the longest shard's), padded so
    every batch splits over the mesh. ``batch['valid']`` marks the real rows and
    ``batch['index']`` holds each row's position in ``indices``. ``kind`` is
    'labeled' (image, label) or 'segmentation' (image, mask). ``process`` is
    ``(index, count)``, by default this JAX process's.
    """
    prepare = {'labeled': _prepare_labeled, 'segmentation': _prepare_segmentation}[kind]
    indices = np.asarray(indices, np.int64)
    if indices.size == 0:
        raise DataError('eval_dataset got no indices: the split is empty')
    proc, n_proc = process or (jax.process_index(), jax.process_count())
    if batch_size % n_proc:
        raise DataError(f'eval batch size {batch_size} does not split over {n_proc} processes')
    local_batch = batch_size // n_proc
    positions = process_shard(len(indices), proc, n_proc)
    # Every process runs the same number of (collective) eval steps: the longest shard's.
    longest = -(-len(indices) // n_proc)
    n_rows = -(-longest // local_batch) * local_batch
    rows = _EvalRows(
        source, indices, positions, n_rows, functools.partial(prepare, size=image_size, channels=channels)
    )
    return grain.MapDataset.source(rows).batch(local_batch, drop_remainder=True)


def train_dataset(
    source, indices, spec: PipelineSpec, kind: str = 'labeled', process: tuple[int, int] | None = None
) -> grain.MapDataset:
    """Shuffled (per epoch), infinitely repeated batches of ``indices`` for supervised training.

    Used by the probe (kind 'labeled') and the U-Net (kind 'segmentation'); the
    random augmentation, if any, happens on device. On several processes each
    reads its own interleaved shard of ``indices`` and yields its
    ``global_batch / process_count`` rows of every global batch. ``process`` is
    ``(index, count)``, by default this JAX process's.
    """
    prepare = {'labeled': _prepare_labeled, 'segmentation': _prepare_segmentation}[kind]
    proc, n_proc = process or (jax.process_index(), jax.process_count())
    if spec.global_batch % n_proc:
        raise DataError(f'batch size {spec.global_batch} does not split over {n_proc} processes')
    indices = np.asarray(indices, np.int64)[process_shard(len(indices), proc, n_proc)]
    subset = _Subset(source, indices)
    if len(subset) == 0:
        raise DataError('train_dataset got no indices: the split is empty')
    # Small k-shot sets repeat inside a batch rather than failing: batches are
    # drawn from the repeated, per-epoch-reshuffled stream.
    return (
        grain.MapDataset.source(subset)
        .shuffle(seed=spec.seed)
        .repeat(None)
        .map(functools.partial(prepare, size=spec.image_size, channels=spec.channels))
        .batch(spec.global_batch // n_proc, drop_remainder=True)
    )


class _EvalRows:
    """Rows ``0..n_rows-1`` of one process's eval shard: real rows, then padding (picklable)."""

    def __init__(self, source, indices: np.ndarray, positions: np.ndarray, n_rows: int, prepare):
        self.subset = _Subset(source, indices[positions])
        self.positions, self.n_rows, self.prepare = positions, n_rows, prepare

    def __len__(self) -> int:
        return self.n_rows

    def __getitem__(self, i: int) -> dict:
        real = i < len(self.positions)
        # Padding repeats the shard's first row, so shapes and dtypes match.
        row = dict(self.prepare(self.subset[i if real else 0]))
        row['valid'] = np.bool_(real)
        row['index'] = np.int64(self.positions[i] if real else -1)
        return row


class _Subset:
    """A view of ``source`` restricted to ``indices`` (random access, picklable)."""

    def __init__(self, source, indices: np.ndarray):
        n = len(source)
        bad = indices[(indices < 0) | (indices >= n)]
        if bad.size:
            raise DataError(f'indices {bad[:5].tolist()} are out of range for a source of {n} items')
        self.source, self.indices = source, indices

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int):
        return self.source[int(self.indices[i])]

    def __repr__(self) -> str:
        return f'_Subset({self.source!r}, n={len(self.indices)})'
