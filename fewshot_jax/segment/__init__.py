"""U-Net segmentation on a frozen encoder: ``fit``, the ``segment`` stage and the ``predict`` CLI.

From a handful of labeled masks, a decoder (``models.unet``) learns to segment
on top of the frozen pretrained encoder (paper Fig. 4, Methods "Segmentation
model description"). Three ways in::

    from fewshot_jax import load_encoder
    from fewshot_jax.segment import TrainSpec, fit, load_segmenter
    seg = fit(load_encoder('runs/bt_tem'), images, masks, resolution=256)   # 'small-data'
    seg = fit(encoder, images, masks, TrainSpec(resolution=256, steps=600, decoder='unet'))
    prob = seg.predict(new_images)            # (N, H, W) probabilities at native size
    seg.save('my_segmenter'); seg = load_segmenter('my_segmenter')

    python launch.py --config=configs/unet_nanowire.py --workdir=runs/bt_tem   # the protocol
    python -m fewshot_jax.segment predict --model runs/bt_tem/segment --images DIR --out DIR

This module is the public face: :func:`fit` lives here; the stage
(:func:`run_segment`, the ``segment`` task) is in ``task``, the command line in
``predict``, the :class:`Segmenter` object in ``segmenter`` and the training
record :class:`TrainSpec` in ``train``, all re-exported here.
"""

from __future__ import annotations

import dataclasses
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
    'TrainSpec',
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


# TrainSpec fields that ``fit`` computes from the data rather than takes.
_FROM_DATA = ('pixel_scale',)


def fit(
    encoder,
    images,
    masks,
    spec: TrainSpec | None = None,
    *,
    recipe: str | None = None,
    epochs: int | None = None,
    validation_fraction: float = 0.0,
    workdir: str | os.PathLike | None = None,
    num_devices: int | None = None,
    progress: bool = True,
    **settings,
) -> Segmenter:
    """Trains a U-Net decoder on the frozen ``encoder`` from labeled masks.

    Two ways to say how: a :class:`TrainSpec` (every setting, as the ``segment`` stage and its
    configs use), or a recipe with keyword overrides (the notebook way)::

        seg = fit(encoder, images, masks)                                  # 'small-data'
        seg = fit(encoder, images, masks, lr=1e-3, steps=800, crop=128)   # ... with overrides
        seg = fit(encoder, images, masks, recipe='paper')                  # the notebooks'
        seg = fit(encoder, images, masks, TrainSpec(resolution=256, steps=600, decoder='unet'))

    Args:
        encoder: an ``Encoder`` or a weight spec for ``load_encoder``.
        images: (N, H, W[, 1|3]) array or a list of (H, W[, 1|3]) arrays; uint8 or float in
            [0, 1]. Resized (shorter side, centre square) to the training resolution.
        masks: matching (H, W) masks: {0, 1} (binary) or class ids < ``num_classes``.
        spec: every training setting (:class:`TrainSpec`); keyword ``settings`` replace its
            fields. ``pixel_scale`` is always measured from the images. None builds the spec
            from ``recipe``.
        recipe: where the settings come from when no ``spec`` is given (:data:`RECIPES`).
            'small-data' (the default) is the recipe measured to train from a handful of
            masks: the classic U-Net decoder, flips and quarter turns, Adam 3e-3 with a cosine
            to 0, and at least 400 steps however few the images (60 epochs of 4 images are 60
            steps, too few for a decoder trained from scratch; benchmarks/RESULTS.md, U-Net).
            'paper' is the original notebooks': their decoder, 60 epochs, constant Adam 1e-3,
            no augmentation.
        epochs: passes over the training images, turned into ``steps`` (ignored when ``steps``
            is given); None: the recipe's (at least its minimum steps), or the spec's steps.
        validation_fraction: hold out this share of the images (per the stratified split of
            foreground/no-foreground images) and keep the step with the best validation Dice;
            0 keeps the last step.
        workdir: where the run's checkpoints and metrics go (resumable); None uses a temporary
            folder removed afterwards.
        num_devices: cap on the devices to train on.
        progress: show the progress bar.
        **settings: any :class:`TrainSpec` field, e.g. ``resolution`` (a multiple of 32; None
            takes the images' side when they are all square and of one such size),
            ``steps``, ``decoder`` ('paper' or 'unet'), ``loss`` ('dice' or 'dice_bce'),
            ``batch_size``, ``lr``, ``lr_schedule`` ('constant' or 'cosine'), ``augment``
            (flips and quarter turns of image and mask), ``intensity_augment``,
            ``invert_prob``, ``dtype``, ``seed``, ``num_classes``, ``tile_overlap``,
            ``threshold``, ``decoder_width``, ``bn_momentum``, ``crop`` (train on random
            windows of that side; the segmenter then predicts in tiles of it). The field
            docstrings of :class:`TrainSpec` say what each does.

    Returns:
        The trained :class:`Segmenter` (also saved in ``workdir/model`` when a workdir is given).

    Raises:
        SegmentDataError: masks that do not fit their images or the task (names the index).
        SegmentConfigError: a bad resolution, loss, decoder or count; a keyword that is not a
            setting; ``recipe`` together with ``spec``.
    """
    _check_settings(settings, spec, recipe)
    encoder = _as_encoder(encoder)
    num_classes = _setting(settings, spec, 'num_classes')
    seed = _setting(settings, spec, 'seed')
    image_list = [np.asarray(i) for i in images]
    mask_list = [np.asarray(m) for m in masks]
    names = [f'image {i}' for i in range(len(image_list))]
    check_masks(image_list, mask_list, names, num_classes)
    resolution = settings.get('resolution', spec.resolution if spec else None)
    resolution = check_resolution(
        _square_side(image_list) if resolution is None else resolution, 'resolution'
    )
    floats = [unit_float(i, name) for i, name in zip(image_list, names, strict=True)]
    channels = 3 if floats[0].ndim == 3 and floats[0].shape[-1] == 3 else 1
    floats = [f[..., 0] if f.ndim == 3 and f.shape[-1] == 1 else f for f in floats]
    pixels, labels = resize_set(floats, mask_list, resolution, channels)
    pixels, labels, validation = _hold_out(pixels, labels, validation_fraction, seed)
    settings = {**settings, 'resolution': resolution, 'pixel_scale': pixel_scale_of(floats, resolution)}
    spec = _training_spec(spec, recipe, epochs, settings, len(pixels))
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


def _check_settings(settings: dict, spec, recipe) -> None:
    """One-line errors for a keyword ``fit`` does not know or a spec given with a recipe."""
    fields = [f.name for f in dataclasses.fields(TrainSpec) if f.name not in _FROM_DATA]
    for key in settings:
        if key not in fields:
            raise SegmentConfigError(
                f'fit({key}=...): not a training setting; expected one of {sorted(fields)}'
            )
    if spec is not None and not isinstance(spec, TrainSpec):
        raise SegmentConfigError(f'spec={spec!r}: expected a TrainSpec (or None with recipe=)')
    if spec is not None and recipe is not None:
        raise SegmentConfigError(
            f'recipe={recipe!r} with a spec: a TrainSpec carries every setting; pass one or the other'
        )


def _setting(settings: dict, spec, name: str):
    """A setting as given, else the spec's, else TrainSpec's default."""
    if name in settings:
        return settings[name]
    return getattr(spec if spec is not None else TrainSpec, name)


def _square_side(images: list) -> int:
    """The side of square images all of one multiple-of-32 size (``resolution=None``)."""
    sizes = {np.shape(i)[:2] for i in images}
    side = next(iter(sizes))[0] if len(sizes) == 1 else None
    if side is None or side != next(iter(sizes))[1] or side % 32:
        raise SegmentConfigError(
            f'resolution=None needs square images of one side that is a '
            f'multiple of 32; got sizes {sorted(sizes)[:4]}: pass resolution='
        )
    return side


def _hold_out(pixels, labels, fraction: float, seed: int):
    """(train pixels, train labels, validation pair or None): a share of the images held out,
    stratified by whether a mask has foreground (when both kinds have two images or more)."""
    if not fraction:
        return pixels, labels, None
    has_fg = np.asarray([int(m.any()) for m in labels])
    two_kinds = len(np.unique(has_fg)) > 1 and min(np.bincount(has_fg)) >= 2
    strata = has_fg if two_kinds else np.zeros(len(labels), int)
    keep, held = stratified_split(strata, fraction, seed)
    return pixels[keep], labels[keep], (pixels[held], labels[held])


def _training_spec(spec, recipe, epochs, settings: dict, num_images: int) -> TrainSpec:
    """The spec ``fit`` trains with: the given spec or the recipe's, the settings in place,
    and the steps from ``epochs`` when no ``steps`` setting is given."""
    batch_size = _setting(settings, spec, 'batch_size')
    if spec is not None:
        if epochs is not None and 'steps' not in settings:
            settings = {**settings, 'steps': steps_for(epochs, num_images, batch_size)}
        return dataclasses.replace(spec, **settings)
    recipe_keys = ('decoder', 'lr', 'lr_schedule', 'augment')
    chosen = recipe_settings(
        recipe or 'small-data', epochs=epochs, **{k: settings.get(k) for k in recipe_keys}
    )
    steps = settings.get('steps')
    steps = recipe_steps(chosen, num_images, batch_size) if steps is None else steps
    return TrainSpec(**{**settings, **{k: chosen[k] for k in recipe_keys}, 'steps': steps})
