"""Encoder weights in and out: weight specs, pretrained files, pretraining workdirs.

A *weight spec* names where an encoder's weights come from; configs
(``model.init``), the probe and U-Net encoder lists and
:func:`fewshot_jax.load_encoder` all accept the same strings:

* ``'random'``: no weights (keep the model's own initialisation).
* ``'torchvision:/path/resnet50.pth'``: a torchvision-layout ResNet state dict
  (``conv1.weight``, ``bn1.running_mean``, ``layer1.0.conv1.weight`` …; ``fc.*``
  ignored) in ``.pth``/``.pt`` (needs the ``torch`` extra), ``.safetensors`` or
  ``.npz``. Imported as ``variant='v1.5'`` with ImageNet input normalisation.
* ``'keras:/path/encoder.h5'``: a Keras ResNet50/ResNet101 ``.h5``, read with
  h5py, imported as ``variant='keras'``. The file's structure says what inputs
  its weights were trained on (``weights.keras``): a ``keras.applications``
  ImageNet file (ResNet layers at the top level) gets 'caffe' normalisation and
  a BGR stem; an encoder saved by the paper's notebook (the ResNet nested under
  a ``resnet50`` group) gets 'unit' (RGB in [0, 1], as the notebooks fed it) and
  an RGB stem.
* ``'checkpoint:/path/workdir'``: the encoder of a pretraining workdir: its
  final ``encoder/`` or, if newer, its latest checkpoint; append ``@<step>``
  (``'checkpoint:/path/workdir@500'``) for a given checkpoint step; ``@0`` is
  the weights the run started from (its random init, ``encoder_init/``): the
  like-for-like random-init baseline of that encoder.

A bare path works too: a folder is a workdir, ``.h5``/``.hdf5`` is Keras, and
``.pth``/``.pt``/``.safetensors``/``.npz`` is torchvision. Nothing is ever
downloaded: every spec names a local file.

Options follow a ``?``, joined by ``&``: ``input=<normalisation>`` (a key of
:data:`NORMALIZATIONS`: 'imagenet', 'caffe' or 'unit') and ``channels=rgb|bgr``
(the channel order the stem expects) replace what the file implies, e.g.
``'keras:/models/resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5?input=unit&channels=rgb'``
is Keras' ImageNet ResNet50 fed as the notebooks fed it. The normalisation and
channel order end up in the loaded model config (``input_mean``, ``input_std``,
``input_channels``), which every user of the encoder builds it from.

Variables are Flax's ``{'params': ..., 'batch_stats': ...}`` of the ResNet in
``fewshot_jax.models.resnet``; imports are checked key by key and shape by shape
against the architecture they imply, and every problem is reported at once.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from fewshot_jax.models.resnet import CHANNEL_ORDERS, IMAGENET_MEAN, IMAGENET_STD
from fewshot_jax.models.weights import keras as weights_keras
from fewshot_jax.models.weights import torchvision as weights_torch
from fewshot_jax.models.weights import workdir as weights_workdir
from fewshot_jax.models.weights.common import (
    LoadedWeights,
    WeightsError,
    flatten,
    is_random,
    mismatch_report,
    nest,
)

log = logging.getLogger(__name__)

SPEC_KINDS = ('random', 'torchvision', 'keras', 'checkpoint')
TORCH_SUFFIXES = ('.pth', '.pt', '.safetensors', '.npz')
KERAS_SUFFIXES = ('.h5', '.hdf5')

# Keras applications' ResNet50 was trained on 'caffe' inputs: BGR, 0-255, minus
# the per-channel ImageNet mean. The Keras import reverses the stem kernel's
# input channels (BGR -> RGB), so the encoder keeps taking RGB in [0, 1] and
# 'caffe' here is that mean (in RGB order, /255) with std 1/255.
_CAFFE_MEAN_RGB_255 = (123.68, 116.779, 103.939)
NORMALIZATIONS = {
    'imagenet': (tuple(IMAGENET_MEAN), tuple(IMAGENET_STD)),
    'caffe': (tuple(m / 255.0 for m in _CAFFE_MEAN_RGB_255), (1.0 / 255.0,) * 3),
    'unit': ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0)),
}
_DEFAULT_NORMALIZATION = {'v1.5': 'imagenet', 'keras': 'caffe'}
SPEC_OPTIONS = {'input': tuple(NORMALIZATIONS), 'channels': CHANNEL_ORDERS}

_STEP_SUFFIX = re.compile(r'^(?P<path>.+)@(?P<step>\d+)$')


def _split_options(text: str) -> tuple[str, dict[str, str]]:
    """``'keras:/m/e.h5?input=unit'`` → ``('keras:/m/e.h5', {'input': 'unit'})``."""
    base, sep, query = text.rpartition('?')
    # A '?' that is part of an existing file's name is not an option separator.
    if not sep or Path(text.partition(':')[2] or text).exists():
        return text, {}
    options = {}
    for item in query.split('&'):
        key, eq, value = item.partition('=')
        if not eq or key not in SPEC_OPTIONS:
            raise WeightsError(
                f'weight spec {text!r}: unknown option {item!r}; expected '
                + ' or '.join(f'{k}=<{"|".join(v)}>' for k, v in SPEC_OPTIONS.items())
            )
        if value not in SPEC_OPTIONS[key]:
            raise WeightsError(
                f'weight spec {text!r}: {key}={value!r} for {base.partition(":")[2] or base}; '
                f'expected one of {list(SPEC_OPTIONS[key])}'
            )
        options[key] = value
    return base, options


def spec_options(spec: str | os.PathLike) -> dict[str, str]:
    """The ``?key=value`` options of a weight spec (``{}`` when there are none).

    Raises:
        WeightsError: an unknown option or value (the message lists the known ones).
    """
    return _split_options(os.fspath(spec).strip())[1]


def parse_spec(spec: str | os.PathLike) -> tuple[str, Path | None, int | None]:
    """Splits a weight spec into ``(kind, path, step)``; see the module docstring.

    Raises:
        WeightsError: an unknown kind, an empty path, or a bare path whose kind
            cannot be told from its suffix.
    """
    text, options = _split_options(os.fspath(spec).strip())
    if is_random(text):
        if options:
            raise WeightsError(f'weight spec {spec!r}: options apply to weight files, not to random')
        return 'random', None, None
    kind, sep, rest = text.partition(':')
    if sep and kind in SPEC_KINDS:
        path_text = rest
    elif sep and re.fullmatch(r'[a-z_]+', kind) and not Path(text).exists():
        raise WeightsError(
            f'weight spec {text!r}: unknown kind {kind!r}; expected one of '
            f"{SPEC_KINDS} ('random' or '<kind>:/path')"
        )
    else:
        kind, path_text = None, text
    if not path_text:
        raise WeightsError(f'weight spec {text!r}: no path after {kind!r}:')
    step = None
    match = _STEP_SUFFIX.match(path_text)
    if match and not Path(path_text).exists():
        path_text, step = match['path'], int(match['step'])
    path = Path(path_text).expanduser()
    if kind is None:
        kind = _kind_of_path(path, text)
    if step is not None and kind != 'checkpoint':
        raise WeightsError(f'weight spec {text!r}: @<step> applies to workdirs only, not {kind!r} files')
    return kind, path, step


def _kind_of_path(path: Path, text: str) -> str:
    if path.is_dir():
        return 'checkpoint'
    suffix = path.suffix.lower()
    if suffix in TORCH_SUFFIXES:
        return 'torchvision'
    if suffix in KERAS_SUFFIXES:
        return 'keras'
    raise WeightsError(
        f'weight spec {text!r}: cannot tell the format from the path; write it as '
        f"'torchvision:PATH' ({'/'.join(TORCH_SUFFIXES)}), 'keras:PATH' "
        f"({'/'.join(KERAS_SUFFIXES)}) or 'checkpoint:WORKDIR'"
        + ('' if path.exists() else f' (and note that {path} does not exist)')
    )


def load_weights(spec: str | os.PathLike, step: int | None = None) -> LoadedWeights:
    """Reads the encoder weights a spec names.

    Args:
        spec: a weight spec or bare path (see the module docstring); not 'random'.
        step: for workdirs, the checkpoint step (overrides an ``@<step>`` suffix).

    Returns:
        The variables, the model config they need and a name.

    Raises:
        WeightsError: a missing file, a file of another architecture, missing,
            extra or misshapen parameters, or a workdir without weights.
    """
    kind, path, spec_step = parse_spec(spec)
    options = spec_options(spec)
    if kind == 'random':
        raise WeightsError("weight spec 'random' names no weights to load")
    if step is not None and kind != 'checkpoint':
        raise WeightsError(f'step={step} applies to workdirs only, not to {kind!r} file {path}')
    step = spec_step if step is None else int(step)
    if not path.exists():
        raise WeightsError(f'{kind} weights: {path} does not exist')
    path = path.absolute()
    if kind == 'checkpoint':
        loaded = weights_workdir.read_workdir(path, step)
        model = dict(loaded.model)
        if 'input' in options:
            mean, std = normalization_values(options['input'])
            model.update(input_mean=list(mean), input_std=list(std), normalization=options['input'])
        if 'channels' in options:
            model['input_channels'] = options['channels']
        return dataclasses.replace(loaded, model=model) if options else loaded
    if kind == 'torchvision':
        variables, depth, width = weights_torch.read_torchvision(path)
        variant, (normalization, channels) = 'v1.5', ('imagenet', 'rgb')
    else:
        variables, depth, width, layout = weights_keras.read_keras(path)
        variant, (normalization, channels) = 'keras', weights_keras.LAYOUTS[layout]
        log.info('%s: a Keras %s file (%s inputs, %s stem)', path, layout, normalization, channels)
    normalization = options.get('input', normalization)
    query = '&'.join(f'{k}={v}' for k, v in sorted(options.items()))
    return LoadedWeights(
        variables=variables,
        model=model_config(
            depth, width, variant, normalization, input_channels=options.get('channels', channels)
        ),
        name=path.stem,
        source=f'{kind}:{path}' + (f'?{query}' if query else ''),
    )


def model_config(
    depth: int, width: int, variant: str, normalization: str | None = None, **extra: Any
) -> dict:
    """The model config of an encoder, with the input normalisation its weights expect.

    Args:
        normalization: a key of :data:`NORMALIZATIONS`; None picks the one the
            variant's published weights were trained with ('imagenet' for
            torchvision, 'caffe' for Keras).
        **extra: further entries (dtype, zero_init_residual, …) kept as given.
    """
    normalization = normalization or _DEFAULT_NORMALIZATION[variant]
    mean, std = normalization_values(normalization)
    config = {
        'depth': int(depth),
        'width': int(width),
        'variant': variant,
        'dtype': 'float32',
        'input_mean': list(mean),
        'input_std': list(std),
        'input_channels': 'rgb',
        # The name, for people reading encoder.json; the model is built from mean/std.
        'normalization': normalization,
    }
    config.update(extra)
    return config


def normalization_values(name: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """``(mean, std)`` of a named input normalisation ('imagenet', 'caffe' or 'unit')."""
    if name not in NORMALIZATIONS:
        raise WeightsError(f'normalization={name!r}: expected one of {sorted(NORMALIZATIONS)}')
    return NORMALIZATIONS[name]


def initial_variables(init_spec: str, model_cfg: Mapping, variables: Mapping) -> Any:
    """The variables pretraining starts from: ``variables`` with the encoder replaced.

    The hook behind ``config.model.init``. Call it on freshly initialised
    variables, outside ``jit``, before building the train state.

    Args:
        init_spec: 'random' (returns ``variables`` unchanged) or a weight spec.
        model_cfg: ``config.model``; the weights must have its depth, width and
            variant (Keras weights need ``variant='keras'``, torchvision weights
            ``'v1.5'``).
        variables: the ``model.init`` output, either of the encoder alone or of an
            ``SSLModel`` (its ``'encoder'`` subtrees are replaced, the projector
            kept).

    Returns:
        A tree of the same structure, dtypes and shapes as ``variables``.

    Raises:
        WeightsError: the weights do not fit the configured model.
    """
    if is_random(init_spec):
        return variables
    return _replace_encoder(variables, check_init(init_spec, model_cfg))


def check_init(init_spec: str, model_cfg: Mapping) -> LoadedWeights:
    """Reads the weights ``model.init`` names and checks they fit the configured encoder.

    Cheap enough to run before any data is read or anything compiles (one file read).

    Returns:
        The loaded weights.

    Raises:
        WeightsError: a missing or unreadable file, or weights of another depth,
            width, variant or stem (the message names the file and the setting to change).
    """
    loaded = load_weights(init_spec)
    defaults = {'variant': 'v1.5', 'stem': 'imagenet'}
    for key in ('depth', 'width', 'variant', 'stem'):
        want, have = model_cfg.get(key, defaults.get(key)), loaded.model.get(key, defaults.get(key))
        if have != want:
            raise WeightsError(
                f'model.init={init_spec!r} holds a {_describe(loaded.model)} but the config builds '
                f'a {_describe({**loaded.model, key: want})}: set model.{key}={have!r}'
            )
    wanted_mean = loaded.model['input_mean']
    configured_mean = list(model_cfg.get('input_mean', IMAGENET_MEAN))
    if not np.allclose(configured_mean, wanted_mean):
        # Not an error: fine-tuning adapts, and the paper's notebook itself fed Keras' ImageNet
        # weights RGB in [0, 1] (the paper preset does the same, on purpose).
        log.warning(
            'model.init=%r was trained on inputs normalised with mean %s and std %s, but '
            'the config normalises with mean %s; set model.input_mean and '
            "model.input_std to match the weights rather than the paper's notebook",
            init_spec,
            wanted_mean,
            loaded.model['input_std'],
            configured_mean,
        )
    wanted_channels = loaded.model.get('input_channels', 'rgb')
    configured_channels = model_cfg.get('input_channels', 'rgb')
    if wanted_channels != configured_channels:
        # Not an error either: the notebooks fed RGB to Keras' BGR-trained ImageNet weights.
        log.warning(
            'model.init=%r was trained with a %s stem but the config feeds it %s '
            '(model.input_channels=%r); set model.input_channels=%r to match',
            init_spec,
            wanted_channels.upper(),
            configured_channels.upper(),
            configured_channels,
            wanted_channels,
        )
    return loaded


def _describe(model: Mapping) -> str:
    stem = model.get('stem', 'imagenet')
    return f'ResNet{model["depth"]} (width {model["width"]}, variant {model["variant"]!r}' + (
        f', stem {stem!r})' if stem != 'imagenet' else ')'
    )


def _replace_encoder(variables: Mapping, loaded: LoadedWeights):
    import jax.numpy as jnp

    nested = 'encoder' in variables.get('params', {})
    target = flatten(
        {
            col: (tree['encoder'] if nested else tree)
            for col, tree in variables.items()
            if col in ('params', 'batch_stats')
        }
    )
    source = flatten(loaded.variables)
    misshapen = [
        f'{"/".join(p)}: weights {source[p].shape}, model {tuple(target[p].shape)}'
        for p in target
        if p in source and source[p].shape != tuple(target[p].shape)
    ]
    problem = mismatch_report(
        loaded.source,
        sorted('/'.join(p) for p in set(target) - set(source)),
        sorted('/'.join(p) for p in set(source) - set(target)),
        misshapen,
    )
    if problem:
        raise WeightsError(problem)
    replaced = nest({p: jnp.asarray(source[p], dtype=target[p].dtype) for p in target})
    out = dict(variables)
    for col, tree in replaced.items():
        out[col] = {**variables[col], 'encoder': tree} if nested else tree
    return out


def export_torchvision(variables: Mapping, path: str | os.PathLike) -> Path:
    """Writes encoder variables as a torchvision-layout ResNet state dict.

    Args:
        variables: ``{'params', 'batch_stats'}`` of a ``variant='v1.5'`` encoder.
        path: ``.safetensors`` or ``.npz`` (no torch needed) or ``.pth``/``.pt``
            (needs torch). Load it into ``torchvision.models.resnet50()`` with
            ``strict=False`` (there is no ``fc``) or after ``model.fc = nn.Identity()``.

    Returns:
        The path written.
    """
    return weights_torch.write_torchvision(variables, Path(path))
