"""In-memory arrays as a Grain source (the synthetic generator's output).

Records follow the file sources' convention (see ``sources.py``):
``'image'`` float32 in [0, 1], ``'label'`` int32, ``'mask'`` uint8 {0, 1}.
"""

from __future__ import annotations

import pathlib
from collections.abc import Sequence

import numpy as np

from fewshot_jax.data.io import DataError


class ArraySource:
    """In-memory arrays as a source (the synthetic generator's output).

    Args:
      images: (N, H, W) or (N, H, W, 3); uint8 (divided by 255) or float in
        [0, 1].
      labels: (N,) integer class ids in [0, len(class_names)).
      masks: (N, H, W) with values in {0, 1} (bool or integer).
      class_names: Names of the label ids; default '0', '1', ...

    Records: {'image'} plus 'label' and 'mask' when given. `paths` holds
    placeholders ('array/000012'), not files, so code that logs paths works.
    """

    def __init__(
        self,
        images: np.ndarray,
        labels: np.ndarray | None = None,
        masks: np.ndarray | None = None,
        class_names: Sequence[str] | None = None,
    ):
        images = np.asarray(images)
        if images.ndim not in (3, 4) or (images.ndim == 4 and images.shape[-1] != 3):
            raise DataError(f'images: shape {images.shape}; expected (N, H, W) or (N, H, W, 3)')
        if images.dtype == np.uint8:
            images = images.astype(np.float32) / np.float32(255.0)
        elif np.issubdtype(images.dtype, np.floating):
            if images.size and not (np.isfinite(images).all() and images.min() >= 0 and images.max() <= 1):
                raise DataError(
                    f'images: float values must be finite and in [0, 1], got range '
                    f'[{np.nanmin(images)}, {np.nanmax(images)}]'
                )
            images = images.astype(np.float32, copy=False)
        else:
            raise DataError(f'images: dtype {images.dtype}; expected uint8 or float in [0, 1]')
        n = len(images)
        self.images = images
        self.labels = None if labels is None else _check_labels(labels, n, class_names)
        if self.labels is not None:
            count = int(self.labels.max(initial=-1)) + 1
            self.class_names = (
                tuple(class_names) if class_names is not None else tuple(str(i) for i in range(count))
            )
        elif class_names is not None:
            raise DataError('class_names given without labels')
        self.masks = None if masks is None else _check_masks(masks, images.shape[:3])
        self.paths = [pathlib.Path(f'array/{i:06d}') for i in range(n)]
        self.skipped: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self.images)

    def __repr__(self) -> str:
        return f'ArraySource(n={len(self)}, shape={self.images.shape[1:]})'

    def __getitem__(self, index: int) -> dict[str, np.ndarray]:
        index = int(index)
        if not 0 <= index < len(self):
            raise IndexError(f'{self!r}: index {index} out of range [0, {len(self)})')
        record = {'image': self.images[index]}
        if self.labels is not None:
            record['label'] = self.labels[index]
        if self.masks is not None:
            record['mask'] = self.masks[index]
        return record


def _check_labels(labels, n, class_names) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.shape != (n,) or not np.issubdtype(labels.dtype, np.integer):
        raise DataError(f'labels: shape {labels.shape}, dtype {labels.dtype}; expected {n} integers')
    limit = len(class_names) if class_names is not None else np.iinfo(np.int32).max
    if labels.size and (labels.min() < 0 or labels.max() >= limit):
        raise DataError(
            f'labels: values in [{labels.min()}, {labels.max()}]; expected [0, {limit}) to index class_names'
        )
    return labels.astype(np.int32)


def _check_masks(masks, image_shape) -> np.ndarray:
    masks = np.asarray(masks)
    if masks.shape != tuple(image_shape):
        raise DataError(f'masks: shape {masks.shape}; expected {tuple(image_shape)} like images')
    if masks.dtype != np.bool_ and not np.isin(np.unique(masks), (0, 1)).all():
        raise DataError(f'masks: values {np.unique(masks)[:8]}; expected only 0 and 1')
    return masks.astype(np.uint8)
