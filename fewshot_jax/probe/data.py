"""The probe's labeled images, from ``config.data``: one array at the probe's image size.

``data.source``:

* ``'synthetic'``: the built-in benchmark, ``data.task`` ∈ {'nanowires',
  'nanoparticles', 'viruses'}, ``data.per_class`` images per class of
  ``data.synthetic_size`` px from ``data.seed``, with exact masks;
* ``'nanowire'``: the nanowire morphology release under ``data.root``
  (4 classes), with the dispersed/network masks beside the images when present;
* ``'mnp'``: AutoDetect-mNP sorted into the 3 assembly morphologies;
* ``'virus'``: the TEM virus set with its own train/validation/test split
  (``data.classes`` picks viruses; None takes all);
* ``'folder'``: any class-per-folder set under ``data.root``.

Images are resized (shorter side to ``data.image_size``, centre square; masks
by nearest neighbour, same geometry) and kept as uint8, grayscale (N, S, S)
unless ``data.keep_color``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from fewshot_jax.data import layouts, synthetic
from fewshot_jax.data.io import DataError
from fewshot_jax.data.pipeline import mask_to_square, to_uint8_square
from fewshot_jax.data.readable import check_on_unreadable
from fewshot_jax.data.sources import ClassFolderSource
from fewshot_jax.errors import ConfigError

SOURCES = ('synthetic', 'nanowire', 'mnp', 'virus', 'folder')
SYNTHETIC_TASKS = ('nanowires', 'nanoparticles', 'viruses')


@dataclasses.dataclass
class LabeledImages:
    """A labeled image set ready to encode.

    Attributes:
        images: uint8 (N, S, S) or (N, S, S, 3).
        labels: int64 (N,).
        class_names: tuple of names, in label order.
        names: a name (file path) per image, for messages.
        masks: uint8 (N, S, S) or None; ``has_mask`` marks the images that have one.
        has_mask: bool (N,).
        fixed_split: the data set's own split ({'train', 'validation', 'test'}
            indices), or None (the probe draws stratified splits).
        description: one line for logs and the summary.
        groups: (N,) the original each image derives from (rotations of one
            image share it), or None; the probe's splits keep a group on one side.
    """

    images: np.ndarray
    labels: np.ndarray
    class_names: tuple[str, ...]
    names: list[str]
    masks: np.ndarray | None = None
    has_mask: np.ndarray | None = None
    fixed_split: dict | None = None
    description: str = ''
    groups: np.ndarray | None = None


def load_labeled(data_cfg) -> LabeledImages:
    """Reads the labeled set ``config.data`` describes (see the module docstring).

    Raises:
        ConfigError: an unknown source or task.
        DataError: missing folders, unreadable files, empty classes.
    """
    source = data_cfg.get('source', 'synthetic')
    size = int(data_cfg.get('image_size', 224))
    color = bool(data_cfg.get('keep_color', False))
    if source == 'synthetic':
        return _synthetic(data_cfg, size)
    if source not in SOURCES:
        raise ConfigError(f'data.source={source!r}: expected one of {SOURCES}')
    root = data_cfg.get('root') or ''
    on_unreadable = check_on_unreadable(data_cfg.get('on_unreadable', 'error'))
    if not root:
        raise DataError(
            f'data.source={source!r} needs data.root: the folder of the data set '
            '(see docs/datasets.md); pass --config.data.root=/path'
        )
    if source == 'virus':
        parts = layouts.tem_virus(root, classes=data_cfg.get('classes'), keep_color=color)
        for part in parts.values():
            part.check_readable(on_unreadable)
        images = np.concatenate([_read(parts[name], size, color) for name in layouts.VIRUS_SPLITS])
        labels = np.concatenate([parts[name].labels for name in layouts.VIRUS_SPLITS])
        names = [str(p) for name in layouts.VIRUS_SPLITS for p in parts[name].paths]
        bounds = np.cumsum([0] + [len(parts[name]) for name in layouts.VIRUS_SPLITS])
        split = {name: np.arange(bounds[i], bounds[i + 1]) for i, name in enumerate(layouts.VIRUS_SPLITS)}
        return LabeledImages(
            images,
            labels.astype(np.int64),
            tuple(parts['train'].class_names),
            names,
            fixed_split=split,
            description=f'TEM virus set at {root}',
        )
    if source == 'nanowire':
        src = layouts.nanowire_morphology(root, keep_color=color)
    elif source == 'mnp':
        src = layouts.mnp_morphology(root, keep_color=color)
    else:
        src = ClassFolderSource(root, classes=data_cfg.get('classes'), keep_color=color)
    src.check_readable(on_unreadable)
    images = _read(src, size, color)
    names = [str(p) for p in src.paths]
    masks = has_mask = None
    if source == 'nanowire':
        masks, has_mask = _nanowire_masks(root, src.paths, size)
    return LabeledImages(
        images,
        src.labels.astype(np.int64),
        tuple(src.class_names),
        names,
        masks,
        has_mask,
        description=f'{source} images at {root}',
        groups=src.groups,
    )


def _read(source, size: int, color: bool) -> np.ndarray:
    channels = 3 if color else 1
    return np.stack([_square(source[i]['image'], size, channels) for i in range(len(source))])


def _square(image, size: int, channels: int) -> np.ndarray:
    square = to_uint8_square(image, size, channels)
    return square[..., 0] if channels == 1 else square


def _nanowire_masks(root, paths: Sequence, size: int):
    """Masks of the dispersed/network images (png beside each jpg), aligned to ``paths``."""
    try:
        masked = layouts.nanowire_segmentation(root)
    except DataError:
        return None, None
    index = {str(p): i for i, p in enumerate(paths)}
    masks = np.zeros((len(paths), size, size), np.uint8)
    has_mask = np.zeros(len(paths), bool)
    for i, path in enumerate(masked.paths):
        row = index.get(str(path))
        if row is not None:
            masks[row] = mask_to_square(masked[i]['mask'], size)
            has_mask[row] = True
    return (masks, has_mask) if has_mask.any() else (None, None)


def _synthetic(data_cfg, size: int) -> LabeledImages:
    task = data_cfg.get('task', 'nanowires')
    if task not in SYNTHETIC_TASKS:
        raise ConfigError(f'data.task={task!r}: expected one of {SYNTHETIC_TASKS}')
    native = int(data_cfg.get('synthetic_size', size))
    data = getattr(synthetic, task)(int(data_cfg.get('per_class', 100)), native, int(data_cfg.get('seed', 0)))
    if native == size:
        images = np.clip(np.rint(data.images * 255.0), 0, 255).astype(np.uint8)
        masks = data.masks
    else:
        images = np.stack([_square(image, size, 1) for image in data.images])
        masks = np.stack([mask_to_square(m, size) for m in data.masks])
    names = [f'synthetic/{task}/{data.class_names[label]}/{i:05d}' for i, label in enumerate(data.labels)]
    return LabeledImages(
        images,
        data.labels.astype(np.int64),
        tuple(data.class_names),
        names,
        masks,
        np.ones(len(images), bool),
        description=f'synthetic {task}, {data_cfg.get("per_class", 100)} per '
        f'class, {native} px, seed {data_cfg.get("seed", 0)}',
    )
