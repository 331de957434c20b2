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
from fewshot_jax.data.io import DataError

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
        return sources.ArraySource(images)
    if name == 'synthetic_everyday':
        images = synthetic.everyday(data_cfg.num_images, data_cfg.synthetic_size, data_cfg.seed)
        return sources.ArraySource(images)
    if name == 'folder':
        if not data_cfg.get('root'):
            raise DataError("data.source='folder' needs data.root: a folder of unlabeled images "
                            "(png, jpg, tif, …); pass --config.data.root=/path/to/images")
        return sources.UnlabeledFolderSource(
            data_cfg.root, subset=data_cfg.get('subset'), seed=data_cfg.seed,
            keep_color=data_cfg.get('keep_color', False))
    raise ValueError(f'data.source={name!r}: expected one of {SOURCES}')


def to_uint8_square(image: np.ndarray, size: int) -> np.ndarray:
    """Float [0,1] image (H, W) or (H, W, 3) → uint8 (size, size, 3).

    The shorter side is resized to ``size`` (area-aware, antialiased) and the
    centre square kept, so non-square micrographs are not distorted.
    Grayscale is replicated to three channels for ImageNet-shaped encoders.
    """
    image = np.asarray(image)
    if image.ndim == 3 and image.shape[-1] == 1:
        image = image[..., 0]
    if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[-1] != 3):
        raise DataError(f'expected an image of shape (H, W) or (H, W, 3); got {image.shape}')
    pil = Image.fromarray(np.clip(np.rint(image * 255.0), 0, 255).astype(np.uint8))
    w, h = pil.size
    scale = size / min(w, h)
    new_w, new_h = max(size, round(w * scale)), max(size, round(h * scale))
    if (new_w, new_h) != (w, h):
        pil = pil.resize((new_w, new_h), Image.Resampling.BILINEAR)
    left, top = (new_w - size) // 2, (new_h - size) // 2
    out = np.asarray(pil.crop((left, top, left + size, top + size)))
    if out.ndim == 2:
        out = np.repeat(out[..., None], 3, axis=-1)
    return out


def _prepare_ssl(record, size: int):
    return to_uint8_square(record['image'], size)


@dataclasses.dataclass(frozen=True)
class PipelineSpec:
    """What a pipeline needs besides its source (plain values, no config)."""

    image_size: int
    global_batch: int
    seed: int
    num_threads: int = 8
    prefetch: int = 8


def ssl_dataset(source, spec: PipelineSpec) -> grain.MapDataset:
    """An infinite, shuffled (reshuffled every epoch) dataset of uint8 image batches.

    Each host reads its own interleaved shard of the source and yields its
    ``global_batch / process_count`` rows of every global batch.
    """
    n_hosts = jax.process_count()
    local_batch = spec.global_batch // n_hosts
    if len(source) < spec.global_batch:
        raise DataError(f'the source has {len(source)} images but data.batch_size is '
                        f'{spec.global_batch}: provide more images or a smaller batch')
    ds = grain.MapDataset.source(source)
    if n_hosts > 1:
        ds = ds[jax.process_index()::n_hosts]
    return (ds.shuffle(seed=spec.seed)
            .repeat(None)
            .map(functools.partial(_prepare_ssl, size=spec.image_size))
            .batch(local_batch, drop_remainder=True))


def batch_iterator(dataset: grain.MapDataset, spec: PipelineSpec, state: dict | None = None):
    """Turns a batched MapDataset into a prefetching iterator, optionally restored.

    Args:
        dataset: output of e.g. :func:`ssl_dataset`.
        spec: thread and prefetch counts.
        state: a dict from a previous iterator's ``get_state()`` (from a checkpoint).
    """
    options = grain.ReadOptions(num_threads=spec.num_threads, prefetch_buffer_size=spec.prefetch)
    iterator = iter(dataset.to_iter_dataset(options))
    if state is not None:
        iterator.set_state(state)
    return iterator
