"""Training one U-Net: builders + the shared loop (``loop.run``), nothing more.

:func:`train_segmenter` is what both ``segment.fit`` and the segmentation stage
call: it builds the model, the frozen-encoder optimizer, the train state, the
jitted step, a resumable batch stream and (optionally) a validation hook, hands
them to ``loop.run`` and saves the trained :class:`~fewshot_jax.segment.segmenter.Segmenter`
in ``finalize``. Inputs are already at the training resolution (uint8 images,
masks); the callers resize.

Model selection never sees test images: the segmenter is the final step's,
unless validation images (held out from the *training* images) are given, in
which case it is the step with the best validation Dice (checked at the hook's
cadence; the best decoder is kept on disk, so a resumed run keeps it too).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from collections.abc import Mapping
from pathlib import Path

import jax
import ml_collections
import numpy as np
from flax import serialization

from fewshot_jax.models.unet import DECODERS
from fewshot_jax.segment import metrics
from fewshot_jax.segment.model import (
    FROZEN,
    LOSSES,
    SegmentConfigError,
    build_unet,
    check_fraction,
    check_positive_int,
    check_resolution,
    init_variables,
    make_loss,
    segment_step_fn,
)
from fewshot_jax.segment.segmenter import Segmenter
from fewshot_jax.train_lib import loop, sharding
from fewshot_jax.train_lib.optim import make_optimizer
from fewshot_jax.train_lib.state import TrainState

log = logging.getLogger(__name__)

MODEL_DIR = 'model'
BEST_DECODER = 'best_decoder.msgpack'
BEST_META = 'best.json'
# The paper's epochs by labeled images per class (Methods: 1, 2, 4, 8, 16, 32, 80).
LR_SCHEDULES = ('constant', 'cosine')
PAPER_EPOCHS = {1: 120, 2: 120, 4: 120, 8: 60, 16: 40, 32: 30, 80: 20}


@dataclasses.dataclass(frozen=True)
class TrainSpec:
    """Everything one U-Net training needs besides data and encoder (plain values).

    Attributes:
        resolution: training side in px (a multiple of 32).
        steps: optimizer steps.
        decoder: 'paper' or 'unet'.
        loss: 'dice' or 'dice_bce'.
        num_classes: 1 (binary) or C.
        batch_size: global batch (paper: 4).
        lr: Adam learning rate (paper: 1e-3, Keras' default).
        lr_schedule: 'constant' (the paper's) or 'cosine' (decays to 0 at the last step).
        augment: random flips and quarter turns, identical for image and mask.
        intensity_augment: random contrast, brightness, gamma, illumination, noise (image only).
        invert_prob: probability of inverting an example's intensities (image only).
        dtype: compute dtype ('float32', 'bfloat16'); None keeps the encoder's.
        seed: decoder initialisation and data order.
        validation_every: cadence of the validation hook (steps or a fraction of the run).
        threshold, tile_overlap: stored in the segmenter for prediction.
        pixel_scale: training px per source px (see ``segmenter``).
        bn_momentum: the decoder's BatchNorm momentum; None: the decoder's default.
        decoder_width: the decoder's filters scale as ``decoder_width / 64``; None: the
            encoder's width.
        crop: train on random ``crop``-px windows of the ``resolution``-px images (one per
            example and presentation, the same for image and mask); the segmenter then
            predicts with ``crop``-px tiles. None: whole images.
        encoder_features: False trains the no-encoder control: the decoder sees zeros
            for the encoder's maps and learns from the image skip alone (``decoder='unet'``).
    """

    resolution: int
    steps: int
    decoder: str = 'paper'
    loss: str = 'dice'
    num_classes: int = 1
    batch_size: int = 4
    lr: float = 1e-3
    lr_schedule: str = 'constant'
    augment: bool = False
    intensity_augment: bool = False
    invert_prob: float = 0.0
    dtype: str | None = None
    seed: int = 42
    validation_every: float | int = 0.1
    threshold: float = 0.5
    tile_overlap: float = 0.25
    pixel_scale: float = 1.0
    bn_momentum: float | None = None
    decoder_width: int | None = None
    crop: int | None = None
    encoder_features: bool = True

    @property
    def window(self) -> int:
        """The side of the training windows (and of the segmenter's prediction tiles)."""
        return self.crop or self.resolution

    def validate(self, prefix: str = '') -> None:
        """Raises SegmentConfigError naming ``prefix + field`` for an unusable value."""
        check_resolution(self.resolution, f'{prefix}resolution')
        for name in ('steps', 'batch_size', 'num_classes'):
            check_positive_int(getattr(self, name), f'{prefix}{name}')
        check_positive_int(self.decoder_width, f'{prefix}decoder_width', optional=True)
        if self.crop is not None:
            check_resolution(self.crop, f'{prefix}crop')
            if self.crop > self.resolution:
                raise SegmentConfigError(
                    f'{prefix}crop={self.crop}: larger than the training resolution '
                    f'{self.resolution}; expected a window of at most {self.resolution} px (or None)'
                )
        if self.decoder not in DECODERS:
            raise SegmentConfigError(f'{prefix}decoder={self.decoder!r}: expected one of {DECODERS}')
        if not self.encoder_features and self.decoder != 'unet':
            raise SegmentConfigError(
                f"{prefix}decoder={self.decoder!r}: the no-encoder control ('none') needs decoder='unet', "
                'whose image skip is its only input (the paper decoder would see zeros alone)'
            )
        if self.loss not in LOSSES:
            raise SegmentConfigError(f'{prefix}loss={self.loss!r}: expected one of {LOSSES}')
        if self.lr_schedule not in LR_SCHEDULES:
            raise SegmentConfigError(
                f'{prefix}lr_schedule={self.lr_schedule!r}: expected one of {LR_SCHEDULES}'
            )
        if isinstance(self.lr, bool) or not isinstance(self.lr, (int, float)) or not self.lr > 0:
            raise SegmentConfigError(f'{prefix}lr={self.lr!r}: expected a positive learning rate')
        if self.bn_momentum is not None:
            check_fraction(self.bn_momentum, f'{prefix}bn_momentum')
        check_fraction(self.tile_overlap, f'{prefix}tile_overlap')
        check_fraction(self.invert_prob, f'{prefix}invert_prob')
        if self.dtype is not None and self.dtype not in ('float32', 'bfloat16', 'float16'):
            raise SegmentConfigError(f'model.dtype={self.dtype!r}: expected float32, bfloat16 or float16')


def steps_for(epochs: int, num_images: int, batch_size: int) -> int:
    """Optimizer steps of ``epochs`` passes over ``num_images`` in batches of ``batch_size``
    (Keras' count: a last short batch is a step; batches here are always full, so the
    run sees the same number of image presentations, rounded up)."""
    return max(1, -(-epochs * num_images // batch_size))


def paper_epochs(k: int) -> int:
    """The paper's epochs for k labeled images per class; other k take the nearest smaller k's."""
    known = [n for n in sorted(PAPER_EPOCHS) if n <= k] or [min(PAPER_EPOCHS)]
    return PAPER_EPOCHS[known[-1]]


def make_mesh_for(batch_size: int, num_devices: int | None = None):
    """A data mesh whose size divides the batch: all devices, or the largest count that fits.

    The paper's batch of 4 does not split over 8 devices; rather than fail, the U-Net
    trains on the largest device count that divides it (``num_devices`` caps it).
    """
    available = num_devices or jax.local_device_count()
    count = max(d for d in range(1, available + 1) if batch_size % d == 0)
    if count < available:
        log.info('batch %d trains on %d of %d devices', batch_size, count, available)
    return sharding.make_mesh(count)


class BatchStream:
    """Resumable, shuffled batches of in-memory arrays: one permutation per epoch from
    ``(seed, epoch)``, batches running on across epochs (a 2-image set fills a batch of 4).

    With ``crop``, each example is a ``crop``-px window of its image and mask whose
    corner is drawn from ``(seed, epoch, position in the epoch)``, so a resumed stream
    cuts the same windows.

    ``get_state()`` is ``{'epoch', 'offset'}``; the loop saves it with checkpoints.
    """

    def __init__(
        self,
        images: np.ndarray,
        masks: np.ndarray,
        batch_size: int,
        seed: int,
        mesh,
        state: Mapping | None = None,
        crop: int | None = None,
    ):
        self.images, self.masks = images, masks
        self.crop = crop
        self.batch_size, self.seed, self.mesh = batch_size, seed, mesh
        self.epoch = int(state['epoch']) if state else 0
        self.offset = int(state['offset']) if state else 0
        n_proc, proc = jax.process_count(), jax.process_index()
        local = batch_size // n_proc
        self._rows = slice(proc * local, (proc + 1) * local)

    def _order(self, epoch: int) -> np.ndarray:
        return np.random.default_rng((self.seed, epoch)).permutation(len(self.images))

    def __iter__(self):
        return self

    def _window(self, epoch: int, position: int) -> tuple[int, int]:
        """Top-left corner of the crop of the example at ``position`` of ``epoch``."""
        room = np.asarray(self.images.shape[1:3]) - self.crop + 1
        corner = np.random.default_rng((self.seed, epoch, position, 1)).integers(0, room)
        return int(corner[0]), int(corner[1])

    def __next__(self):
        picked = []  # (image index, epoch, position in the epoch)
        while len(picked) < self.batch_size:
            order = self._order(self.epoch)
            take = order[self.offset : self.offset + self.batch_size - len(picked)]
            picked.extend((int(i), self.epoch, self.offset + j) for j, i in enumerate(take))
            self.offset += len(take)
            if self.offset >= len(order):
                self.epoch, self.offset = self.epoch + 1, 0
        mine = picked[self._rows]
        rows = np.asarray([i for i, _, _ in mine])
        images, masks = self.images[rows], self.masks[rows]
        if self.crop:
            corners = [self._window(epoch, position) for _, epoch, position in mine]
            windows = [(slice(y, y + self.crop), slice(x, x + self.crop)) for y, x in corners]
            images = np.stack([im[w] for im, w in zip(images, windows, strict=True)])
            masks = np.stack([m[w] for m, w in zip(masks, windows, strict=True)])
        return sharding.to_global({'image': images, 'mask': masks}, self.mesh)

    def get_state(self) -> dict:
        return {'epoch': self.epoch, 'offset': self.offset}


def _decoder_of(variables) -> dict:
    host = jax.device_get(variables)
    return {c: host[c]['decoder'] for c in ('params', 'batch_stats')}


def _with_decoder(variables, decoder: Mapping) -> dict:
    return {c: {'encoder': variables[c]['encoder'], 'decoder': decoder[c]} for c in ('params', 'batch_stats')}


def _validation_hook(segmenter: Segmenter, images, masks, run_dir: Path, every) -> loop.Hook:
    """Validation Dice at ``every``; the best decoder so far goes to ``run_dir``."""

    def evaluate(step: int, state) -> dict:
        segmenter.variables = state.variables
        prob = segmenter.predict(images, scale=1.0, progress=False)
        dice = float(np.mean(np.asarray(metrics.dice(prob, masks, segmenter.threshold))))
        best_file = run_dir / BEST_META
        best = json.loads(best_file.read_text()) if best_file.is_file() else None
        if jax.process_index() == 0 and (best is None or dice > best['dice']):
            tmp = run_dir / (BEST_DECODER + '.tmp')
            tmp.write_bytes(
                serialization.msgpack_serialize(jax.tree.map(np.asarray, _decoder_of(state.variables)))
            )
            os.replace(tmp, run_dir / BEST_DECODER)
            best_file.write_text(json.dumps({'step': step, 'dice': dice}))
        return {'dice': dice}

    return loop.Hook('validation', evaluate, every)


def _compiled_training(encoder, spec: TrainSpec, num_devices: int | None):
    """The U-Net on ``encoder``, its initial variables, the replicated train state (Adam on
    the decoder only) and the jitted step, on a mesh sized for ``spec.batch_size``.

    Returns ``(variables, state, step_fn, mesh)``.
    """
    model = build_unet(
        encoder.config,
        spec.decoder,
        spec.num_classes,
        spec.dtype,
        spec.bn_momentum,
        spec.decoder_width,
        spec.encoder_features,
    )
    variables = init_variables(model, encoder.variables, spec.seed)
    end_lr = spec.lr if spec.lr_schedule == 'constant' else 0.0  # constant: as Keras' Adam
    optim_cfg = ml_collections.ConfigDict(
        {'name': 'adam', 'lr': spec.lr, 'warmup_steps': 0, 'end_lr': end_lr}
    )
    tx = make_optimizer(optim_cfg, spec.steps, frozen=FROZEN)
    mesh = make_mesh_for(spec.batch_size, num_devices)
    sharding.check_global_batch(spec.batch_size, mesh)
    _, step_key = jax.random.split(jax.random.PRNGKey(spec.seed))
    state = sharding.replicate(TrainState.create(variables, tx, step_key), mesh)
    step_fn = sharding.jit_step(
        segment_step_fn(
            model,
            tx,
            make_loss(spec.loss, spec.num_classes),
            spec.augment,
            spec.intensity_augment,
            spec.invert_prob,
        ),
        mesh,
    )
    return variables, state, step_fn, mesh


def train_segmenter(
    encoder,
    images: np.ndarray,
    masks: np.ndarray,
    spec: TrainSpec,
    run_dir: str | os.PathLike,
    *,
    train_cfg: Mapping | None = None,
    validation: tuple[np.ndarray, np.ndarray] | None = None,
    num_devices: int | None = None,
    info: Mapping | None = None,
    shared_encoder: str | os.PathLike | None = None,
    desc: str = 'segment',
) -> tuple[Segmenter, dict]:
    """Trains (or resumes, or finds finished) one U-Net in ``run_dir`` with ``loop.run``.

    Args:
        encoder: an ``Encoder`` (its ``variables`` and ``config``).
        images: uint8 (N, R, R, C) at ``spec.resolution``.
        masks: uint8 (N, R, R), {0, 1} or class ids.
        spec: the training settings.
        run_dir: the loop's workdir (lock, checkpoints, metrics); the segmenter goes to
            ``run_dir/model``.
        train_cfg: ``log_every``, ``checkpoint_every``, ``keep_checkpoints``, ``progress``.
        validation: optional (images, masks) held out from the training images.
        num_devices: cap on the devices to train on.
        info: provenance stored in the segmenter (encoder name, spec, k, …).
        shared_encoder: an ``encoder.msgpack`` the saved segmenter refers to.
        desc: progress-bar label.

    Returns:
        ``(segmenter, loop summary)``.
    """
    spec.validate()
    run_dir = Path(run_dir)
    variables, state, step_fn, mesh = _compiled_training(encoder, spec, num_devices)
    segmenter = Segmenter(
        variables,
        encoder.config,
        decoder=spec.decoder,
        num_classes=spec.num_classes,
        resolution=spec.window,
        channels=images.shape[-1],
        pixel_scale=spec.pixel_scale,
        threshold=spec.threshold,
        tile_overlap=spec.tile_overlap,
        dtype=spec.dtype,
        decoder_width=spec.decoder_width,
        encoder_features=spec.encoder_features,
        info={**(info or {}), 'steps': spec.steps, 'crop': spec.crop},
    )
    hooks = ()
    if validation is not None and len(validation[0]):
        hooks = (_validation_hook(segmenter, validation[0], validation[1], run_dir, spec.validation_every),)

    def finalize(state) -> dict:
        chosen, out = state.variables, {}
        best_file = run_dir / BEST_META
        if hooks and best_file.is_file():
            best = json.loads(best_file.read_text())
            decoder = serialization.msgpack_restore((run_dir / BEST_DECODER).read_bytes())
            chosen = _with_decoder(jax.device_get(state.variables), decoder)
            segmenter.info['selected_step'] = best['step']
            out = {'selected_step': best['step'], 'validation_dice': best['dice']}
        segmenter.variables = jax.device_put(jax.device_get(chosen))
        if jax.process_index() == 0:
            segmenter.save(run_dir / MODEL_DIR, shared_encoder=shared_encoder)
        return out

    config = ml_collections.ConfigDict(
        {
            'segment_run': {**dataclasses.asdict(spec), **_json_safe(info or {})},
            'train': _plain_dict(train_cfg),
        }
    )
    result = loop.run(
        step_fn,
        state,
        lambda data_state: BatchStream(
            images, masks, spec.batch_size, spec.seed, mesh, data_state, crop=spec.crop
        ),
        total_steps=spec.steps,
        workdir=run_dir,
        config=config,
        hooks=hooks,
        finalize=finalize,
        desc=desc,
    )
    return segmenter, result.summary


def _plain_dict(cfg) -> dict:
    if cfg is None:
        return {}
    return cfg.to_dict() if hasattr(cfg, 'to_dict') else dict(cfg)


def _json_safe(info: Mapping) -> dict:
    return {k: v if isinstance(v, (int, float, str, bool)) or v is None else str(v) for k, v in info.items()}
