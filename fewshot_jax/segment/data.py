"""Labeled masks for the U-Net: loading, checking, resizing, and the Otsu baseline.

Everything is checked before any training starts: image/mask size mismatches
and non-binary masks of a binary task raise :class:`SegmentDataError` naming
the file (or the array index) and what was expected.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np
from PIL import Image

from fewshot_jax.data import layouts, sources, synthetic
from fewshot_jax.data.io import DataError
from fewshot_jax.data.pipeline import to_uint8_square
from fewshot_jax.data.resize import square_crop_resize

SOURCES = ('synthetic', 'nanowire', 'masked_folder')
# data.mask_encoding: how mask files mark the foreground (data.io.read_mask).
MASK_ENCODINGS = ('auto', 'binary', 'color_overlay')


class SegmentDataError(DataError):
    """Images and masks a segmentation run cannot use."""


@dataclasses.dataclass
class MaskSet:
    """Images with masks at their own sizes.

    Attributes:
        images: float32 [0, 1] arrays (H, W) or (H, W, 3), one per image.
        masks: uint8 (H, W) arrays: {0, 1}, or class ids.
        labels: int (N,) morphology class of each image (for the stratified split).
        class_names: names of the morphology classes.
        names: a file path or an index per image (for messages and results).
    """

    images: list
    masks: list
    labels: np.ndarray
    class_names: tuple[str, ...]
    names: list[str]

    def __len__(self) -> int:
        return len(self.images)


def check_masks(images: Sequence, masks: Sequence, names: Sequence[str], num_classes: int = 1) -> None:
    """Raises SegmentDataError unless every mask has its image's size and valid values.

    Args:
        images, masks: per-image arrays.
        names: a file path or index per image, for the message.
        num_classes: 1 (binary: values in {0, 1}, or bool) or C (class ids in [0, C)).
    """
    if len(images) != len(masks):
        raise SegmentDataError(f'{len(images)} images but {len(masks)} masks; expected one mask per image')
    if len(images) == 0:
        raise SegmentDataError('no labeled images to train on')
    for image, mask, name in zip(images, masks, names, strict=True):
        mask = np.asarray(mask)
        if mask.ndim != 2 or mask.shape != np.shape(image)[:2]:
            raise SegmentDataError(
                f'{name}: mask of shape {mask.shape} for an image of shape '
                f'{np.shape(image)}; expected a 2-D mask of the image size'
            )
        values = np.unique(mask)
        if num_classes == 1:
            bad = values[(values != 0) & (values != 1)]
            if bad.size:
                raise SegmentDataError(
                    f'{name}: mask values {values[:8].tolist()} in a binary task; expected only '
                    f'0 and 1 (threshold the mask, or set the number of classes)'
                )
        elif values.min() < 0 or values.max() >= num_classes or not np.all(values == np.round(values)):
            raise SegmentDataError(
                f'{name}: mask values {values[:8].tolist()}; expected class ids 0..{num_classes - 1}'
            )


def unit_float(image, name: str) -> np.ndarray:
    """An image as float32 in [0, 1]: uint8 / 255, uint16 / 65535, floats checked.

    Raises:
        SegmentDataError: another dtype, or floats outside [0, 1] (names the image).
    """
    array = np.asarray(image)
    if array.dtype == np.uint8:
        return array.astype(np.float32) / np.float32(255)
    if array.dtype == np.uint16:
        return array.astype(np.float32) / np.float32(65535)
    if not np.issubdtype(array.dtype, np.floating):
        raise SegmentDataError(f'{name}: dtype {array.dtype}; expected uint8, uint16 or float in [0, 1]')
    low, high = (float(array.min()), float(array.max())) if array.size else (0.0, 0.0)
    if not (np.isfinite(low) and np.isfinite(high)) or low < -1e-3 or high > 1 + 1e-3:
        raise SegmentDataError(
            f'{name}: float values over [{low:g}, {high:g}]; expected [0, 1] '
            f'(divide 0-255 images by 255, or pass uint8)'
        )
    return np.clip(array.astype(np.float32), 0.0, 1.0)


def load_mask_set(data_cfg) -> MaskSet:
    """The labeled images and masks named by ``config.data``.

    * ``'synthetic'``: ``data.per_class`` synthetic nanowire images per class of
      ``data.synthetic_size`` px from ``data.seed``, classes ``data.classes``
      (default dispersed and network, the two the paper segmented).
    * ``'nanowire'``: the published nanowire set at ``data.root`` (dispersed and
      network, png masks beside the jpg images).
    * ``'masked_folder'``: class folders under ``data.root`` with masks named
      ``<image stem><data.mask_suffix>`` beside the images.
    """
    name = data_cfg.source
    if name == 'synthetic':
        wires = synthetic.nanowires(int(data_cfg.per_class), int(data_cfg.synthetic_size), int(data_cfg.seed))
        wanted = tuple(data_cfg.get('classes', ('dispersed', 'network')))
        unknown = [c for c in wanted if c not in wires.class_names]
        if unknown:
            raise SegmentDataError(
                f'data.classes: {unknown} are not synthetic nanowire classes {list(wires.class_names)}'
            )
        keep = np.flatnonzero(np.isin(wires.labels, [wires.class_names.index(c) for c in wanted]))
        labels = np.asarray([wanted.index(wires.class_names[wires.labels[i]]) for i in keep])
        return MaskSet(
            [wires.images[i] for i in keep],
            [wires.masks[i] for i in keep],
            labels,
            wanted,
            [f'synthetic/{wanted[c]}/{i}' for i, c in zip(keep, labels, strict=True)],
        )
    if name in ('nanowire', 'masked_folder'):
        if not data_cfg.get('root'):
            raise SegmentDataError(
                f'data.source={name!r} needs data.root: a folder of images '
                f'with masks; pass --config.data.root=/path'
            )
        # None: the layout's own default ('auto' for the nanowire release, whose masks are
        # colour overlays or binary; 'binary' for a folder of masks).
        encoding = data_cfg.get('mask_encoding') or ('auto' if name == 'nanowire' else 'binary')
        if encoding not in MASK_ENCODINGS:
            raise SegmentDataError(
                f'data.mask_encoding={encoding!r}: expected one of {MASK_ENCODINGS}, or None for the default'
            )
        if name == 'nanowire':
            source = layouts.nanowire_segmentation(data_cfg.root, mask_encoding=encoding)
        else:
            source = sources.MaskedImageSource(
                data_cfg.root,
                mask_suffix=data_cfg.get('mask_suffix', '_mask.png'),
                mask_encoding=encoding,
                class_folders=True,
                classes=data_cfg.get('classes') or None,
            )
        # Every image and mask is read once first: all unreadable pairs in one message.
        source.check_readable(data_cfg.get('on_unreadable', 'error'))
        records = [source[i] for i in range(len(source))]
        return MaskSet(
            [r['image'] for r in records],
            [r['mask'] for r in records],
            np.asarray(source.labels),
            tuple(source.class_names),
            [str(p) for p in source.paths],
        )
    raise SegmentDataError(f'data.source={name!r}: expected one of {SOURCES}')


def resize_pair(
    image: np.ndarray, mask: np.ndarray, resolution: int, channels: int = 1
) -> tuple[np.ndarray, np.ndarray]:
    """Image → uint8 (R, R, channels) and mask → uint8 (R, R) with the pipelines' geometry
    (shorter side to R, centre square; bilinear for the image, nearest for the mask, so
    class ids survive)."""
    pixels = to_uint8_square(image, resolution, channels)
    labels = square_crop_resize(
        Image.fromarray(np.asarray(mask, np.uint8)), resolution, Image.Resampling.NEAREST
    )
    return pixels, labels


def resize_set(
    images: Sequence, masks: Sequence, resolution: int, channels: int = 1
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`resize_pair` over lists: uint8 (N, R, R, channels) and (N, R, R)."""
    pairs = [resize_pair(i, m, resolution, channels) for i, m in zip(images, masks, strict=True)]
    return (np.stack([p for p, _ in pairs]), np.stack([m for _, m in pairs]))


def pixel_scale_of(images: Sequence, resolution: int) -> float:
    """Training px per source px: ``resolution / shorter side`` (median over the images)."""
    return float(np.median([resolution / min(np.shape(i)[:2]) for i in images]))


def otsu_polarity(images: np.ndarray, masks: np.ndarray) -> bool | None:
    """Which side of the threshold the foreground is on, from the (training) images.

    True when the foreground is brighter than the background in every image that has
    both, False when it is darker in every one, None when the images disagree (the
    synthetic sets draw the polarity per image): the baseline then decides per image.
    """
    sides = set()
    for image, mask in zip(images[..., 0].astype(np.float64), masks > 0, strict=True):
        if mask.any() and not mask.all():
            sides.add(bool(image[mask].mean() > image[~mask].mean()))
    if not sides:
        return True
    return sides.pop() if len(sides) == 1 else None


def otsu_masks(images: np.ndarray, bright_foreground: bool | None) -> np.ndarray:
    """Encoder-free baseline: the classic micrograph recipe of background flattening and an
    Otsu threshold per image.

    A weak baseline: one threshold per image, no training, no notion of shape. A U-Net
    beating it shows little; the control for what an encoder adds is the same decoder
    trained without encoder features (``segment.encoders`` entry ``'none=none'``).

    Each image's slowly varying illumination (a Gaussian blur with sigma 1/32 of the image
    side) is subtracted first: a global threshold on uneven illumination splits bright from
    dark regions instead of structure from background. (Chosen as the strongest of sigma =
    side/32, /16, /8 and no flattening on the demo's nanowires: median Dice 0.52, 0.50, 0.33
    and 0.05 at 128 px — a stronger baseline is the fairer comparison.) The foreground is on
    the side the training masks say or, with ``None``, on the side with fewer pixels of each
    image, the usual choice for sparse structures such as wires.
    uint8 (N, R, R, C) → uint8 (N, R, R) in {0, 1}.
    """
    from scipy import ndimage
    from skimage.filters import threshold_otsu

    out = np.zeros(images.shape[:3], np.uint8)
    for i, image in enumerate(images[..., 0].astype(np.float64)):
        flat = image - ndimage.gaussian_filter(image, max(1.0, image.shape[0] / 32))
        if flat.min() == flat.max():
            continue  # a flat image has no threshold: nothing is foreground
        bright = flat > threshold_otsu(flat)
        if bright_foreground is None:
            out[i] = bright if bright.sum() <= bright.size / 2 else ~bright
        else:
            out[i] = bright if bright_foreground else ~bright
    return out
