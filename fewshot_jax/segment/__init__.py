"""U-Net segmentation on a frozen encoder: ``fit``, the ``segment`` stage and the ``predict`` CLI.

From a handful of labeled masks, a decoder (``models.unet``) learns to segment
on top of the frozen pretrained encoder (paper Fig. 4, Methods "Segmentation
model description"). Three ways in::

    from fewshot_jax import load_encoder
    from fewshot_jax.segment import fit, load_segmenter
    seg = fit(load_encoder('runs/bt_tem'), images, masks, resolution=256, epochs=60)
    prob = seg.predict(new_images)            # (N, H, W) probabilities at native size
    seg.save('my_segmenter'); seg = load_segmenter('my_segmenter')

    python launch.py --config=configs/unet_nanowire.py --workdir=runs/bt_tem   # the protocol
    python -m fewshot_jax.segment predict --model runs/bt_tem/segment --images DIR --out DIR

This module is the public face: :func:`fit` lives here; the stage
(:func:`run_segment`, the ``segment`` task) is in ``segment_stage``, the
command line in ``segment_predict``, the :class:`Segmenter` object in
``segmenter``, all re-exported here.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from fewshot_jax.data.splits import stratified_split
from fewshot_jax.encoder import Encoder, load_encoder
from fewshot_jax.segment.data import SegmentDataError, check_masks, pixel_scale_of, resize_set, unit_float
from fewshot_jax.segment.model import SegmentConfigError, check_resolution
from fewshot_jax.segment.predict import load_segmenter_path, main, predict_folder
from fewshot_jax.segment.segmenter import Segmenter, SegmenterError, load_segmenter
from fewshot_jax.segment.task import check_config, random_encoder, run_segment
from fewshot_jax.segment.train import TrainSpec, steps_for, train_segmenter

__all__ = [
    'RECIPES',
    'Segmenter',
    'SegmentConfigError',
    'SegmentDataError',
    'SegmenterError',
    'check_config',
    'fit',
    'recipe_settings',
    'recipe_steps',
    'load_segmenter',
    'load_segmenter_path',
    'main',
    'predict_folder',
    'random_encoder',
    'run_segment',
]


# The settings ``fit`` takes when its arguments are left at None.
RECIPES = {
    # Measured on few masks (benchmarks/RESULTS.md, U-Net): the paper's decoder with constant
    # Adam 1e-3 barely moves in the few dozen steps that 60 epochs of a handful of images
    # give; the classic decoder with augmentation and a cosine schedule trains.
    'small-data': {
        'decoder': 'unet',
        'epochs': 60,
        'lr': 3e-3,
        'lr_schedule': 'cosine',
        'augment': True,
        'min_steps': 400,
    },
    # The original notebooks' settings, for a faithful reproduction.
    'paper': {
        'decoder': 'paper',
        'epochs': 60,
        'lr': 1e-3,
        'lr_schedule': 'constant',
        'augment': False,
        'min_steps': 1,
    },
}


def recipe_settings(recipe: str, **given) -> dict:
    """The settings of ``recipe`` (a key of :data:`RECIPES`), with the non-None ``given``
    values in their place.

    Raises:
        SegmentConfigError: an unknown recipe.
    """
    if recipe not in RECIPES:
        raise SegmentConfigError(f'recipe={recipe!r}: expected one of {sorted(RECIPES)}')
    return {**RECIPES[recipe], **{k: v for k, v in given.items() if v is not None}}


def recipe_steps(settings: dict, num_images: int, batch_size: int) -> int:
    """Optimizer steps of a recipe: its epochs over ``num_images``, at least its minimum."""
    return max(settings['min_steps'], steps_for(settings['epochs'], num_images, batch_size))


def _as_encoder(encoder) -> Encoder:
    if isinstance(encoder, Encoder):
        return encoder
    if isinstance(encoder, (str, os.PathLike)):
        return load_encoder(encoder)
    raise SegmentConfigError(
        f'encoder={encoder!r}: expected an Encoder or a weight spec '
        f'(a workdir, checkpoint:/path, torchvision:/path, keras:/path)'
    )


def fit(
    encoder,
    images,
    masks,
    *,
    recipe: str = 'small-data',
    resolution: int | None = None,
    decoder: str | None = None,
    loss: str = 'dice',
    epochs: int | None = None,
    steps: int | None = None,
    batch_size: int = 4,
    lr: float | None = None,
    lr_schedule: str | None = None,
    augment: bool | None = None,
    intensity_augment: bool = False,
    invert_prob: float = 0.0,
    dtype: str | None = None,
    seed: int = 42,
    num_classes: int = 1,
    validation_fraction: float = 0.0,
    tile_overlap: float = 0.25,
    threshold: float = 0.5,
    decoder_width: int | None = None,
    bn_momentum: float | None = None,
    crop: int | None = None,
    workdir: str | os.PathLike | None = None,
    num_devices: int | None = None,
    progress: bool = True,
) -> Segmenter:
    """Trains a U-Net decoder on the frozen ``encoder`` from labeled masks.

    Args:
        encoder: an ``Encoder`` or a weight spec for ``load_encoder``.
        images: (N, H, W[, 1|3]) array or a list of (H, W[, 1|3]) arrays; uint8 or float in
            [0, 1]. Resized (shorter side, centre square) to ``resolution``.
        masks: matching (H, W) masks: {0, 1} (binary) or class ids < ``num_classes``.
        recipe: where the settings left at None come from (:data:`RECIPES`).
            'small-data' (the default) is the recipe measured to train from a handful of
            masks: the classic U-Net decoder, flips and quarter turns, Adam 3e-3 with a cosine
            to 0, and at least 400 steps however few the images (60 epochs of 4 images are 60
            steps, too few for a decoder trained from scratch; benchmarks/RESULTS.md, U-Net).
            'paper' is the original notebooks': their decoder, 60 epochs, constant Adam 1e-3,
            no augmentation.
        resolution: training side in px, a multiple of 32; None takes the images' side when
            they are all square and of one such size.
        decoder: 'paper' (the original notebooks') or 'unet' (classic); None: the recipe's.
        loss: 'dice' (1 − soft Dice, the paper's) or 'dice_bce'.
        epochs: passes over the images (ignored when ``steps`` is given); None: the recipe's.
        steps: optimizer steps; None: from ``epochs``, and at least the recipe's minimum.
        batch_size, lr: Adam's batch and learning rate (paper: 4, 1e-3; lr None: the recipe's).
        lr_schedule: 'constant' (the paper's) or 'cosine' (to 0 at the last step).
        augment: random flips and quarter turns applied identically to image and mask.
        intensity_augment: random contrast, brightness, gamma, illumination gradient and noise.
        invert_prob: probability of inverting a training image's intensities (x -> 1 - x),
            for image sets with both contrast polarities; the masks are unchanged.
        dtype: compute dtype ('float32', 'bfloat16'); None keeps the encoder's.
        seed: decoder initialisation and data order.
        num_classes: 1 for binary masks (sigmoid); C >= 2 for class-id masks (softmax).
        validation_fraction: hold out this share of the images (per the stratified split of
            foreground/no-foreground images) and keep the step with the best validation Dice;
            0 keeps the last step.
        tile_overlap, threshold: prediction settings stored in the segmenter.
        decoder_width: scale the decoder's filters by ``decoder_width / 64`` (None: the
            encoder's width).
        bn_momentum: the decoder's BatchNorm momentum (None: paper 0.99, unet 0.9).
        crop: train on random ``crop``-px windows of the ``resolution``-px images (a multiple
            of 32, at most ``resolution``); the segmenter then predicts in ``crop``-px tiles.
            For large micrographs, where a whole image per example does not fit a step.
        workdir: where the run's checkpoints and metrics go (resumable); None uses a temporary
            folder removed afterwards.
        num_devices: cap on the devices to train on.
        progress: show the progress bar.

    Returns:
        The trained :class:`Segmenter` (also saved in ``workdir/model`` when a workdir is given).

    Raises:
        SegmentDataError: masks that do not fit their images or the task (names the index).
        SegmentConfigError: a bad resolution, loss, decoder or count.
    """
    chosen = recipe_settings(
        recipe, decoder=decoder, epochs=epochs, lr=lr, lr_schedule=lr_schedule, augment=augment
    )
    decoder, epochs, lr = chosen['decoder'], chosen['epochs'], chosen['lr']
    lr_schedule, augment = chosen['lr_schedule'], chosen['augment']
    encoder = _as_encoder(encoder)
    image_list = [np.asarray(i) for i in images]
    mask_list = [np.asarray(m) for m in masks]
    names = [f'image {i}' for i in range(len(image_list))]
    check_masks(image_list, mask_list, names, num_classes)
    if resolution is None:
        sizes = {np.shape(i)[:2] for i in image_list}
        side = next(iter(sizes))[0] if len(sizes) == 1 else None
        if side is None or side != next(iter(sizes))[1] or side % 32:
            raise SegmentConfigError(
                f'resolution=None needs square images of one side that is a '
                f'multiple of 32; got sizes {sorted(sizes)[:4]}: pass '
                f'resolution='
            )
        resolution = side
    resolution = check_resolution(resolution, 'resolution')
    floats = [unit_float(i, name) for i, name in zip(image_list, names, strict=True)]
    channels = 3 if floats[0].ndim == 3 and floats[0].shape[-1] == 3 else 1
    floats = [f[..., 0] if f.ndim == 3 and f.shape[-1] == 1 else f for f in floats]
    pixels, labels = resize_set(floats, mask_list, resolution, channels)
    validation = None
    if validation_fraction:
        has_fg = np.asarray([int(m.any()) for m in labels])
        strata = (
            has_fg
            if len(np.unique(has_fg)) > 1 and min(np.bincount(has_fg)) >= 2
            else np.zeros(len(labels), int)
        )
        keep, held = stratified_split(strata, validation_fraction, seed)
        validation = (pixels[held], labels[held])
        pixels, labels = pixels[keep], labels[keep]
    spec = TrainSpec(
        resolution=resolution,
        decoder=decoder,
        loss=loss,
        num_classes=num_classes,
        steps=steps if steps is not None else recipe_steps(chosen, len(pixels), batch_size),
        batch_size=batch_size,
        lr=lr,
        lr_schedule=lr_schedule,
        augment=augment,
        intensity_augment=intensity_augment,
        invert_prob=invert_prob,
        dtype=dtype,
        seed=seed,
        tile_overlap=tile_overlap,
        threshold=threshold,
        pixel_scale=pixel_scale_of(floats, resolution),
        decoder_width=decoder_width,
        bn_momentum=bn_momentum,
        crop=crop,
    )
    train_cfg = {'log_every': 10, 'checkpoint_every': 0.5, 'keep_checkpoints': 1, 'progress': progress}
    info = {'name': encoder.name, 'encoder': encoder.source or encoder.name, 'train_images': len(pixels)}
    own_dir = workdir is None
    run_dir = Path(tempfile.mkdtemp(prefix='fewshot_segment_')) if own_dir else Path(workdir)
    try:
        segmenter, _ = train_segmenter(
            encoder,
            pixels,
            labels,
            spec,
            run_dir,
            train_cfg=train_cfg,
            validation=validation,
            num_devices=num_devices,
            info=info,
            desc='fit',
        )
    finally:
        if own_dir:
            shutil.rmtree(run_dir, ignore_errors=True)
    return segmenter
