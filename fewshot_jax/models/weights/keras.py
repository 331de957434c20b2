"""Keras ``applications.ResNet50``/``ResNet101`` weights from an ``.h5`` file, read with h5py.

Keras names the layers of its (v1) ResNet ``conv1_conv``/``conv1_bn`` for the
stem and ``conv{s}_block{b}_{k}_conv``/``..._bn`` for convolution k of block b
of stage s (s = 2…5, b from 1; k = 0 is the projection shortcut). Convolutions
hold ``kernel`` (kh, kw, in, out, as in Flax) and ``bias``; BatchNorms hold
``gamma``, ``beta``, ``moving_mean``, ``moving_variance`` (epsilon 1.001e-5).
This maps onto the encoder's ``variant='keras'`` one-to-one.

The layers are found by name wherever they sit, which covers:

* Keras 2 ``model.save_weights('w.h5')``: ``/conv1_conv/conv1_conv/kernel:0``;
* Keras 2 ``model.save('m.h5')``: the same under ``/model_weights/``
  (``/optimizer_weights/`` is skipped);
* a ResNet nested as a sub-model of a bigger model (the paper's encoders):
  ``/model_weights/resnet50/conv1_conv/kernel:0``, other layers ignored;
* Keras 3 ``model.save_weights('w.weights.h5')``: ``/layers/conv1_conv/vars/0``,
  variables numbered in creation order.

Keras' ResNet expects 'caffe' inputs (BGR, 0-255, ImageNet mean subtracted).
The stem kernel's input channels are reversed here, so the encoder takes RGB
and its 'caffe' normalisation (``weights.NORMALIZATIONS``) reproduces Keras'
``preprocess_input`` exactly.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from fewshot_jax.models.weights.common import WeightsError, encoder_shapes, mismatch_report, nest

_LAYER = re.compile(r'conv1_(?:conv|bn)|conv([2-5])_block(\d+)_([0-3])_(?:conv|bn)')
_RESNET_V2 = re.compile(r'conv\d_block\d+_preact_bn|post_bn')
_SKIPPED_GROUPS = ('optimizer_weights', 'optimizer')
# Keras 3 stores a layer's variables as vars/0, vars/1, … in creation order.
_NUMBERED = {'conv': ('kernel', 'bias'), 'bn': ('gamma', 'beta', 'moving_mean', 'moving_variance')}
_KERAS_DEPTHS = {(3, 4, 6, 3): 50, (3, 4, 23, 3): 101}
_UNSUPPORTED = {(3, 8, 36, 3): 'ResNet152'}


def keras_name(path: tuple[str, ...]) -> str:
    """The Keras ``layer/weight`` of a flattened Flax variable path of a ``variant='keras'`` encoder.

    ``('params', 'layer1_0', 'downsample_bn', 'scale')`` → ``'conv2_block1_0_bn/gamma'``.
    """
    collection, *modules, leaf = path
    if len(modules) == 1:
        layer = 'conv1_conv' if modules[0] == 'conv1' else 'conv1_bn'
    else:
        stage, block = (int(x) for x in modules[0][len('layer') :].split('_'))
        child = modules[1]
        k = '0' if child.startswith('downsample') else child[-1]
        layer = f'conv{stage + 1}_block{block + 1}_{k}_{"bn" if "bn" in child else "conv"}'
    if layer.endswith('_conv'):
        return f'{layer}/{leaf}'
    names = {'scale': 'gamma', 'bias': 'beta', 'mean': 'moving_mean', 'var': 'moving_variance'}
    return f'{layer}/{names[leaf]}'


def read_keras_arrays(path: Path) -> dict[str, np.ndarray]:
    """Every ResNet weight in a Keras .h5 file as ``{'conv1_conv/kernel': array, …}``.

    Raises:
        WeightsError: not an HDF5 file, a ResNetV2, no ResNet layers, or the same
            weight in several places (two ResNets in one file).
    """
    import h5py

    found: dict[str, list[tuple[str, np.ndarray]]] = {}
    other_layers: set[str] = set()
    v2_layers: set[str] = set()

    def visit(name: str, obj) -> None:
        parts = name.split('/')
        if not isinstance(obj, h5py.Dataset) or parts[0] in _SKIPPED_GROUPS:
            return
        v2_layers.update(p for p in parts if _RESNET_V2.fullmatch(p))
        leaf = re.sub(r':\d+$', '', parts[-1])
        if len(parts) >= 2 and _LAYER.fullmatch(parts[-2]):
            layer = parts[-2]
        elif len(parts) >= 3 and parts[-2] == 'vars' and _LAYER.fullmatch(parts[-3]) and leaf.isdigit():
            layer = parts[-3]
            numbered = _NUMBERED[layer.rsplit('_', 1)[1]]
            leaf = numbered[int(leaf)] if int(leaf) < len(numbered) else f'vars/{leaf}'
        else:
            other_layers.add('/'.join(parts[:-1]) or '/')
            return
        found.setdefault(f'{layer}/{leaf}', []).append((name, np.asarray(obj[()])))

    try:
        with h5py.File(path, 'r') as f:
            f.visititems(visit)
            top = sorted(f.keys())
    except OSError as err:
        hint = (
            ' (a Keras 3 .keras file is a zip archive: extract its model.weights.h5)'
            if path.suffix == '.keras'
            else ''
        )
        raise WeightsError(f'{path}: not a readable HDF5 file{hint} ({err})') from err
    if v2_layers:
        raise WeightsError(
            f'{path}: a Keras ResNetV2 (pre-activation; layers such as '
            f'{sorted(v2_layers)[:3]}); only ResNet50/ResNet101 (v1) are supported'
        )
    if not found:
        raise WeightsError(
            f'{path}: no Keras ResNet layers (conv1_conv, conv2_block1_1_conv, …) found; '
            f'top-level groups {top}, weights under {sorted(other_layers)[:10]}'
        )
    duplicated = {key: [where for where, _ in hits] for key, hits in found.items() if len(hits) > 1}
    if duplicated:
        key, wheres = next(iter(sorted(duplicated.items())))
        raise WeightsError(
            f'{path}: holds more than one ResNet ({key} at {wheres}); save the encoder you want on its own'
        )
    return {key: hits[0][1] for key, hits in found.items()}


def architecture_of(arrays: dict[str, np.ndarray], source: str) -> tuple[int, int]:
    """``(depth, width)`` of the Keras ResNet whose weights ``arrays`` holds."""
    blocks: dict[int, set[int]] = {}
    for key in arrays:
        match = _LAYER.fullmatch(key.split('/')[0])
        if match and match[1]:
            blocks.setdefault(int(match[1]), set()).add(int(match[2]))
    counts = tuple(len(blocks.get(stage, ())) for stage in (2, 3, 4, 5))
    if counts in _UNSUPPORTED:
        raise WeightsError(
            f'{source}: a Keras {_UNSUPPORTED[counts]}; the encoder supports '
            f'ResNet50 and ResNet101 from Keras'
        )
    if counts not in _KERAS_DEPTHS:
        raise WeightsError(
            f'{source}: blocks per stage {counts} match no Keras ResNet '
            f'(ResNet50: (3, 4, 6, 3), ResNet101: (3, 4, 23, 3))'
        )
    if 'conv1_conv/kernel' not in arrays:
        raise WeightsError(f'{source}: no conv1_conv/kernel, cannot tell the network width')
    return _KERAS_DEPTHS[counts], int(arrays['conv1_conv/kernel'].shape[-1])


def variables_from_keras_arrays(arrays: dict[str, np.ndarray], source: str) -> tuple[dict, int, int]:
    """Converts ``{'conv1_conv/kernel': …}`` into ``variant='keras'`` Flax variables.

    Returns:
        ``(variables, depth, width)`` with float32 numpy arrays; the stem kernel's
        input channels are reversed (Keras feeds BGR, the encoder RGB).

    Raises:
        WeightsError: listing every missing and unexpected weight and every
            shape mismatch (with both shapes).
    """
    depth, width = architecture_of(arrays, source)
    expected = encoder_shapes(depth, width, 'keras')
    flat, missing, misshapen, used = {}, [], [], set()
    for path, shape in expected.items():
        name = keras_name(path)
        if name not in arrays:
            missing.append(name)
            continue
        used.add(name)
        array = arrays[name]
        if array.shape != shape:
            misshapen.append(
                f'{name}: file {array.shape}, Keras ResNet{depth} (width {width}) expects {shape}'
            )
            continue
        array = array.astype(np.float32, copy=False)
        if path == ('params', 'conv1', 'kernel'):
            array = np.ascontiguousarray(array[:, :, ::-1, :])
        flat[path] = array
    extra = sorted(set(arrays) - used)
    problem = mismatch_report(source, missing, extra, misshapen)
    if problem:
        raise WeightsError(problem)
    return nest(flat), depth, width


def read_keras(path: Path) -> tuple[dict, int, int]:
    """Reads a Keras ResNet ``.h5`` into ``(variables, depth, width)``."""
    return variables_from_keras_arrays(read_keras_arrays(path), str(path))
