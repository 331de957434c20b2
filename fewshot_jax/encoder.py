"""Trained encoders as numpy-in, numpy-out objects: :func:`load_encoder` and :class:`Encoder`.

Example::

    from fewshot_jax import load_encoder
    enc = load_encoder('runs/demo/pretrain/simclr_tem')   # a pretraining workdir
    enc = load_encoder('keras:/models/barlow_resnet_batch64_project128_64_1024_seed42.h5')
    feats = enc.encode(images)                             # (N, 2048) for a ResNet50
    maps = enc.encode(images, layer='stage3')              # (N, H/16, W/16, 1024)

Images are numpy arrays ``(N, H, W)`` (grayscale, replicated to 3 channels as
in training), ``(N, H, W, 1)`` or ``(N, H, W, 3)``; uint8 (0-255), uint16
(0-65535) or float in [0, 1]. The encoder normalises them itself with the
statistics its weights were trained with (``config['input_mean'/'input_std']``).
It runs with BatchNorm in inference mode, so each image's features are
independent of the batch it is in; batches are split over every local device
(a 1-D ``('data',)`` mesh, params replicated) when there are several, so one
host's GPUs encode together. A short last batch is padded to the compiled shape
and its padding rows are dropped. ``fewshot_jax.probe.features`` caches these
features per (encoder, data set, size, layer) for the probes.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from tqdm import tqdm

from fewshot_jax.errors import is_count
from fewshot_jax.models import compute_dtype, make_encoder
from fewshot_jax.models.resnet import LAYER_NAMES, feature_dim
from fewshot_jax.models.weights import export_torchvision, load_weights, normalization_values
from fewshot_jax.train_lib import sharding

__all__ = ['Encoder', 'EncoderInputError', 'load_encoder']

# Show a progress bar by default only when encoding takes more than this many batches.
_PROGRESS_MIN_BATCHES = 8
_INTEGER_SCALES = {np.dtype(np.uint8): 255.0, np.dtype(np.uint16): 65535.0}


class EncoderInputError(ValueError):
    """Images or arguments that :meth:`Encoder.encode` cannot use."""


class Encoder:
    """A frozen ResNet encoder with its weights.

    Attributes:
        variables: ``{'params', 'batch_stats'}`` as JAX arrays on the default device.
        config: the model config (depth, width, variant, dtype, input_mean, input_std, …).
        name: a short label (workdir or file name, ``@step`` for a checkpoint step).
        step: the training step of a workdir's weights; None for imported files.
        source: the weight spec it was loaded from.
        module: the Flax ``ResNet``.
    """

    def __init__(
        self,
        variables: Mapping,
        config: Mapping,
        name: str = 'encoder',
        step: int | None = None,
        source: str | None = None,
    ):
        self.config = dict(config)
        self.name = name
        self.step = step
        self.source = source
        self.module = make_encoder(self.config)
        self._placements: dict[int, tuple] = {}
        self.variables = variables
        module = self.module

        def forward(variables, batch, layers):
            x = batch.astype(jnp.float32)
            scale = _INTEGER_SCALES.get(np.dtype(batch.dtype))
            if scale is not None:
                x = x / scale
            x = jnp.broadcast_to(x, (*x.shape[:3], 3))  # grayscale → 3 identical channels
            _, intermediates = module.apply(variables, x, train=False)
            return {name: intermediates[name].astype(jnp.float32) for name in layers}

        self._forward = jax.jit(forward, static_argnums=2)

    @property
    def variables(self) -> dict:
        """``{'params', 'batch_stats'}`` on the default device."""
        return self._variables

    @variables.setter
    def variables(self, variables: Mapping) -> None:
        # New weights (e.g. the online probe's, every evaluation) replace the copies
        # placed on devices for encoding, which were made from the old ones.
        self._variables = jax.device_put(
            {'params': variables['params'], 'batch_stats': variables['batch_stats']}
        )
        self._placements.clear()

    @property
    def feature_dim(self) -> int:
        """Length of the ``'pooled'`` feature vector (2048 for a ResNet50)."""
        return feature_dim(self.module.depth, self.module.width)

    def __repr__(self) -> str:
        c = self.config
        return (
            f'Encoder({self.name!r}: ResNet{c["depth"]}, width {c["width"]}, variant '
            f'{c.get("variant", "v1.5")!r}, step {self.step}, from {self.source})'
        )

    def encode(
        self,
        images,
        layer: str | Sequence[str] = 'pooled',
        batch_size: int = 64,
        progress: bool | None = None,
        num_devices: int | None = 1,
    ):
        """Features of ``images``, computed batch by batch.

        Args:
            images: numpy array (N, H, W), (N, H, W, 1) or (N, H, W, 3); uint8,
                uint16 or float in [0, 1]. Any H, W (the last batch is padded,
                not the images).
            layer: 'pooled' (N, D) or a feature map 'stem', 'stage1' … 'stage4'
                (N, h, w, C); a sequence of names returns a dict of them.
            batch_size: images per device call; lower it for large images.
            progress: show a progress bar; None shows one for long inputs.
            num_devices: local devices to split each batch over (default 1: the
                default device); None uses all of them. The batch is rounded up to
                a multiple of the device count.

        Returns:
            float32 numpy array (or dict of arrays, for a sequence of layers).

        Raises:
            EncoderInputError: a bad shape, dtype, value range, layer or batch size.
        """
        layers = (layer,) if isinstance(layer, str) else tuple(layer)
        unknown = [name for name in layers if name not in LAYER_NAMES]
        if unknown or not layers:
            raise EncoderInputError(f'layer={layer!r}: expected one or more of {LAYER_NAMES}')
        if not is_count(batch_size):
            raise EncoderInputError(f'batch_size={batch_size!r}: expected a positive integer')
        images = _checked_images(images)
        n = len(images)
        variables, place, devices = self._placement(num_devices)
        batch = -(-min(batch_size, n) // devices) * devices
        n_batches = -(-n // batch)
        show = n_batches > _PROGRESS_MIN_BATCHES if progress is None else bool(progress)
        outputs: dict[str, np.ndarray] = {}
        pending = None
        with tqdm(total=n, desc=f'encode {self.name}', unit='img', disable=not show) as bar:
            for start in range(0, n, batch):
                chunk = images[start : start + batch]
                count = len(chunk)
                if count < batch:  # pad to keep one compiled shape; padding rows are dropped
                    chunk = np.concatenate([chunk, np.zeros((batch - count, *chunk.shape[1:]), chunk.dtype)])
                result = self._forward(variables, place(chunk), layers)
                # Dispatch is asynchronous: fetch the previous batch while this one runs.
                if pending is not None:
                    self._store(outputs, pending, n)
                    bar.update(pending[2])
                pending = (start, result, count)
            self._store(outputs, pending, n)
            bar.update(pending[2])
        return outputs[layer] if isinstance(layer, str) else outputs

    def _placement(self, num_devices: int | None):
        """(variables, batch placement, device count) for encoding on num_devices local devices."""
        local = jax.local_devices()
        count = len(local) if num_devices is None else int(num_devices)
        if not 1 <= count <= len(local):
            raise EncoderInputError(
                f'num_devices={num_devices!r}: expected 1..{len(local)} '
                f'({len(local)} local {local[0].platform} devices)'
            )
        if count not in self._placements:
            if count == 1:
                self._placements[count] = (self.variables, lambda x: x, 1)
            else:
                # A mesh over this host's devices only: every host encodes its own images.
                mesh = jax.sharding.Mesh(np.asarray(local[:count]), (sharding.DATA_AXIS,))
                variables = jax.device_put(self.variables, sharding.replicated(mesh))
                batch_sharding = sharding.data_sharding(mesh)
                self._placements[count] = (variables, lambda x: jax.device_put(x, batch_sharding), count)
        return self._placements[count]

    @staticmethod
    def _store(outputs: dict, pending, n: int) -> None:
        start, result, count = pending
        for name, value in result.items():
            value = np.asarray(value)[:count]
            if name not in outputs:
                outputs[name] = np.empty((n, *value.shape[1:]), np.float32)
            outputs[name][start : start + count] = value

    def export_torchvision(self, path: str | os.PathLike) -> Path:
        """Writes the weights as a torchvision-layout state dict (see ``weights.export_torchvision``)."""
        return export_torchvision(jax.tree.map(np.asarray, self.variables), path)


def _checked_images(images) -> np.ndarray:
    array = np.asarray(images)
    if array.ndim == 3:
        array = array[..., None]
    if array.ndim != 4 or array.shape[-1] not in (1, 3):
        raise EncoderInputError(
            f'images of shape {np.shape(images)}: expected (N, H, W), (N, H, W, 1) or (N, H, W, 3)'
        )
    if len(array) == 0:
        raise EncoderInputError('no images to encode (N = 0)')
    if array.dtype in _INTEGER_SCALES:
        return array
    if not np.issubdtype(array.dtype, np.floating):
        raise EncoderInputError(f'images of dtype {array.dtype}: expected uint8, uint16 or float in [0, 1]')
    low, high = float(np.min(array)), float(np.max(array))
    # A little slack for interpolation overshoot; 0-255 floats are an error, not a guess.
    if not (np.isfinite(low) and np.isfinite(high)) or low < -1e-3 or high > 1 + 1e-3:
        raise EncoderInputError(
            f'float images range over [{low:g}, {high:g}]: expected [0, 1] '
            f'(divide 0-255 images by 255, or pass them as uint8)'
        )
    return array.astype(np.float32, copy=False)


def load_encoder(
    path_or_spec: str | os.PathLike,
    *,
    step: int | None = None,
    normalization: str | None = None,
    dtype: str | None = None,
) -> Encoder:
    """Loads a trained or imported encoder.

    Args:
        path_or_spec: a pretraining workdir, a weight file, or a weight spec:
            ``'checkpoint:/path/workdir'`` (``@<step>`` for a checkpoint step),
            ``'torchvision:/path/resnet50.pth'`` (.pth/.pt/.safetensors/.npz),
            ``'keras:/path/encoder.h5'``. See ``fewshot_jax.models.weights``.
        step: for a workdir, the checkpoint step; None takes the newest weights.
        normalization: override the input normalisation the weights come with:
            'imagenet', 'caffe' (Keras' ``preprocess_input``) or 'unit' (none).
        dtype: compute dtype override ('float32', 'bfloat16', 'float16').

    Returns:
        An :class:`Encoder`.

    Raises:
        fewshot_jax.models.weights.WeightsError: the spec names no usable weights.
    """
    loaded = load_weights(path_or_spec, step)
    config = dict(loaded.model)
    if normalization is not None:
        mean, std = normalization_values(normalization)
        config.update(input_mean=list(mean), input_std=list(std), normalization=normalization)
    if dtype is not None:
        compute_dtype(dtype)  # validates the name
        config['dtype'] = dtype
    return Encoder(loaded.variables, config, name=loaded.name, step=loaded.step, source=loaded.source)
