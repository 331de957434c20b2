"""Keras ResNet50/ResNet101 weights from an ``.h5`` file, read with h5py.

Keras names the layers of its (v1) ResNet ``conv1_conv``/``conv1_bn`` for the
stem and ``conv{s}_block{b}_{k}_conv``/``..._bn`` for convolution k of block b
of stage s (s = 2…5, b from 1; k = 0 is the projection shortcut). Convolutions
hold ``kernel`` (kh, kw, in, out, as in Flax) and ``bias``; BatchNorms hold
``gamma``, ``beta``, ``moving_mean``, ``moving_variance`` (epsilon 1.001e-5).
This maps onto the encoder's ``variant='keras'`` one-to-one.

Two kinds of file are told apart by where the ResNet's layers sit, because they
were trained on different inputs (:data:`LAYOUTS`):

* ``'applications'``: ``keras.applications`` ImageNet weights
  (``resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5``), written by
  ``save_weights`` of the bare ResNet: the ResNet layers are the file's top-level
  groups (``/conv1_conv/conv1_conv/kernel:0``; under ``/model_weights/`` after
  ``model.save``; Keras 3 ``/layers/conv1_conv/vars/0``). Trained on 'caffe'
  inputs: BGR, 0-255, ImageNet mean subtracted.
* ``'notebook'``: an encoder saved by the paper's notebook, ``save_weights`` of
  the whole self-supervised model: the ResNet is a sub-model one level down
  (``/resnet50/conv1_conv/kernel:0``, ``/model_weights/resnet50/…`` after
  ``model.save``), beside the projector's ``dense*`` and ``batch_normalization*``
  groups (ignored here). The notebooks fed RGB in [0, 1] everywhere (no
  ``preprocess_input``), so these encoders expect exactly that.

The arrays are taken as stored: the stem kernel keeps Keras' channel order, and
the loaded encoder's metadata records which order it expects
(``input_channels``, see ``fewshot_jax.models.resnet``).
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
# Layout → (input normalisation, stem channel order) its weights were trained with.
LAYOUTS = {'applications': ('caffe', 'bgr'), 'notebook': ('unit', 'rgb')}
_EXPECTED = (
    'a Keras applications ResNet (layers such as conv1_conv at the top level of the file) or '
    "an encoder saved by the paper's notebook (the ResNet nested under a 'resnet50' group)"
)
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


def _container(parts: list[str], layer: str, keras3: bool) -> str:
    """The group a ResNet layer sits in: '' at the top level, else the sub-model's path."""
    prefix = parts[:-3] if keras3 else parts[:-2]
    if prefix[:1] == ['model_weights']:
        prefix = prefix[1:]
    if keras3:
        # Keras 3 nests sub-models as layers/<model>/layers/<layer>/vars/<i>.
        prefix = prefix[:-1] if prefix[-1:] == ['layers'] else prefix
    elif prefix[-1:] == [layer]:
        # Keras 2 save_weights stores layer L's weights under /L/L/.
        prefix = prefix[:-1]
    return '/'.join(prefix)


def read_keras_layout(path: Path) -> tuple[dict[str, np.ndarray], str]:
    """Every ResNet weight in a Keras .h5 file and the file's kind.

    Returns:
        ``({'conv1_conv/kernel': array, …}, layout)`` with ``layout`` a key of
        :data:`LAYOUTS`: 'applications' when the ResNet layers are the file's
        top-level layers, 'notebook' when they sit in one sub-model group.

    Raises:
        WeightsError: not an HDF5 file, a ResNetV2, no ResNet layers, the same
            weight in several places (two ResNets in one file), or ResNet layers
            spread over several groups (neither layout).
    """
    import h5py

    found: dict[str, list[tuple[str, np.ndarray]]] = {}
    containers: dict[str, set[str]] = {}
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
            container = _container(parts, layer, keras3=False)
        elif len(parts) >= 3 and parts[-2] == 'vars' and _LAYER.fullmatch(parts[-3]) and leaf.isdigit():
            layer = parts[-3]
            container = _container(parts, layer, keras3=True)
            numbered = _NUMBERED[layer.rsplit('_', 1)[1]]
            leaf = numbered[int(leaf)] if int(leaf) < len(numbered) else f'vars/{leaf}'
        else:
            other_layers.add('/'.join(parts[:-1]) or '/')
            return
        found.setdefault(f'{layer}/{leaf}', []).append((name, np.asarray(obj[()])))
        containers.setdefault(container, set()).add(name)

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
            f'{path}: no Keras ResNet layers (conv1_conv, conv2_block1_1_conv, …) found; expected '
            f'{_EXPECTED}; top-level groups {top}, weights under {sorted(other_layers)[:10]}'
        )
    duplicated = {key: [where for where, _ in hits] for key, hits in found.items() if len(hits) > 1}
    if duplicated:
        key, wheres = next(iter(sorted(duplicated.items())))
        raise WeightsError(
            f'{path}: holds more than one ResNet ({key} at {wheres}); save the encoder you want on its own'
        )
    if len(containers) > 1:
        where = {group or '/': sorted(names)[0] for group, names in sorted(containers.items())}
        raise WeightsError(f'{path}: ResNet layers in several groups ({where}); expected {_EXPECTED}')
    (container,) = containers
    return {key: hits[0][1] for key, hits in found.items()}, 'notebook' if container else 'applications'


def read_keras_arrays(path: Path) -> dict[str, np.ndarray]:
    """Every ResNet weight in a Keras .h5 file as ``{'conv1_conv/kernel': array, …}``."""
    return read_keras_layout(path)[0]


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
        ``(variables, depth, width)`` with float32 numpy arrays, as stored (the stem
        kernel keeps the channel order of the file).

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
        flat[path] = array.astype(np.float32, copy=False)
    extra = sorted(set(arrays) - used)
    problem = mismatch_report(source, missing, extra, misshapen)
    if problem:
        raise WeightsError(problem)
    return nest(flat), depth, width


def read_keras(path: Path) -> tuple[dict, int, int, str]:
    """Reads a Keras ResNet ``.h5`` into ``(variables, depth, width, layout)``."""
    arrays, layout = read_keras_layout(path)
    return (*variables_from_keras_arrays(arrays, str(path)), layout)
