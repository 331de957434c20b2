"""torchvision-layout ResNet state dicts to and from the Flax encoder's variables.

The encoder's names mirror torchvision's (see ``resnet.py``), so a key maps
one-to-one: ``('params', 'layer1_0', 'downsample_conv', 'kernel')`` is
``layer1.0.downsample.0.weight``, BatchNorm ``scale``/``bias`` are
``weight``/``bias`` and ``batch_stats`` ``mean``/``var`` are
``running_mean``/``running_var``. Convolution kernels are transposed between
Flax's (kh, kw, in, out) and torch's (out, in, kh, kw); nothing else changes,
so an import followed by an export gives back the same bits. BatchNorm epsilon
is 1e-5 on both sides. ``fc.*`` and ``*.num_batches_tracked`` are ignored on
import and not written on export.

``.safetensors`` and ``.npz`` need no torch; ``.pth``/``.pt`` need the
``torch`` extra (``pip install 'fewshot_jax[torch]'``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from fewshot_jax.models.resnet import BOTTLENECK_DEPTHS, STAGE_DEPTHS
from fewshot_jax.models.weights.common import WeightsError, encoder_shapes, flatten, mismatch_report, nest

_LEAF_NAMES = {
    'kernel': 'weight',
    'scale': 'weight',
    'bias': 'bias',
    'mean': 'running_mean',
    'var': 'running_var',
}
_BLOCK = re.compile(r'layer(\d+)_(\d+)')
_TORCH_BLOCK = re.compile(r'^layer(\d+)\.(\d+)\.')
_IGNORED = re.compile(r'^fc\.|(^|\.)num_batches_tracked$')


def torch_key(path: tuple[str, ...]) -> str:
    """The torchvision key of a flattened Flax variable path.

    ``('params', 'layer1_0', 'downsample_bn', 'scale')`` → ``'layer1.0.downsample.1.weight'``.
    """
    _, *modules, leaf = path
    parts = []
    for module in modules:
        block = _BLOCK.fullmatch(module)
        if block:
            parts += [f'layer{block[1]}', block[2]]
        else:
            parts.append(
                {'downsample_conv': 'downsample.0', 'downsample_bn': 'downsample.1'}.get(module, module)
            )
    return '.'.join(parts + [_LEAF_NAMES[leaf]])


def _to_torch(path: tuple[str, ...], array: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(array.transpose(3, 2, 0, 1)) if path[-1] == 'kernel' else array


def _torch_shape(path: tuple[str, ...], shape: tuple[int, ...]) -> tuple[int, ...]:
    return (shape[3], shape[2], shape[0], shape[1]) if path[-1] == 'kernel' else shape


def _from_torch(path: tuple[str, ...], array: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(array.transpose(2, 3, 1, 0)) if path[-1] == 'kernel' else array


def read_state_dict(path: Path) -> dict[str, np.ndarray]:
    """A state dict file as ``{key: numpy array}`` (``.pth``/``.pt``/``.safetensors``/``.npz``).

    A ``.pth`` holding ``{'state_dict': ...}`` or ``{'model': ...}`` (common for
    training checkpoints) is unwrapped.
    """
    suffix = path.suffix.lower()
    try:
        if suffix == '.safetensors':
            from safetensors.numpy import load_file

            return dict(load_file(str(path)))
        if suffix == '.npz':
            with np.load(path, allow_pickle=False) as data:
                return {key: data[key] for key in data.files}
        if suffix in ('.pth', '.pt'):
            return _read_torch_file(path)
    except WeightsError:
        raise
    except Exception as err:  # noqa: BLE001 - every reader's failure gets the file's name
        raise WeightsError(
            f'{path}: cannot read it as a {suffix} state dict ({type(err).__name__}: {err})'
        ) from err
    raise WeightsError(f'{path}: expected a .pth, .pt, .safetensors or .npz state dict')


def _read_torch_file(path: Path) -> dict[str, np.ndarray]:
    try:
        import torch
    except ImportError as err:
        raise WeightsError(
            f'{path}: reading .pth/.pt files needs torch (pip install '
            f"'fewshot_jax[torch]'), or convert it to .safetensors"
        ) from err
    obj = torch.load(path, map_location='cpu', weights_only=True)
    for wrapper in ('state_dict', 'model'):
        if isinstance(obj, Mapping) and isinstance(obj.get(wrapper), Mapping):
            obj = obj[wrapper]
    if not isinstance(obj, Mapping):
        raise WeightsError(f'{path}: holds a {type(obj).__name__}, expected a state dict')
    out = {}
    for key, value in obj.items():
        if not torch.is_tensor(value):
            raise WeightsError(f'{path}: entry {key!r} is a {type(value).__name__}, not a tensor')
        value = value.detach().cpu()
        # bfloat16 has no numpy dtype; float32 holds it exactly.
        out[key] = (value.float() if value.dtype == torch.bfloat16 else value).numpy()
    return out


def _strip_prefix(state: dict[str, np.ndarray], source: str) -> dict[str, np.ndarray]:
    """Removes a wrapper prefix such as ``module.`` or ``encoder.`` shared by the ResNet keys."""
    prefixes = {
        key[: -len('conv1.weight')]
        for key in state
        if key.endswith('conv1.weight') and not re.search(r'layer\d+\.\d+\.$', key[: -len('conv1.weight')])
    }
    if len(prefixes) > 1:
        raise WeightsError(
            f'{source}: holds several ResNets (key prefixes {sorted(prefixes)}); '
            f'save the one you want on its own'
        )
    prefix = prefixes.pop() if prefixes else ''
    if not prefix:
        return state
    return {(key[len(prefix) :] if key.startswith(prefix) else key): value for key, value in state.items()}


def architecture_of(state: Mapping[str, np.ndarray], source: str) -> tuple[int, int]:
    """``(depth, width)`` of the torchvision ResNet a state dict belongs to."""
    if 'conv1.weight' not in state:
        sample = ', '.join(sorted(state)[:8]) or 'none'
        raise WeightsError(
            f'{source}: not a torchvision ResNet state dict (no conv1.weight; keys include {sample})'
        )
    blocks: dict[int, set[int]] = {}
    for key in state:
        match = _TORCH_BLOCK.match(key)
        if match:
            blocks.setdefault(int(match[1]), set()).add(int(match[2]))
    counts = tuple(len(blocks.get(stage, ())) for stage in (1, 2, 3, 4))
    bottleneck = 'layer1.0.conv3.weight' in state
    for depth, stage_depths in STAGE_DEPTHS.items():
        if stage_depths == counts and (depth in BOTTLENECK_DEPTHS) == bottleneck:
            return depth, int(state['conv1.weight'].shape[0])
    raise WeightsError(
        f'{source}: {"bottleneck" if bottleneck else "basic"} blocks per stage {counts} match no '
        f'supported ResNet ({", ".join(f"ResNet{d}: {s}" for d, s in STAGE_DEPTHS.items())})'
    )


def variables_from_state_dict(state: Mapping[str, np.ndarray], source: str) -> tuple[dict, int, int]:
    """Converts a torchvision ResNet state dict into Flax variables.

    Args:
        state: ``{key: array}``; ``fc.*`` and ``num_batches_tracked`` are ignored.
        source: the file, for error messages.

    Returns:
        ``(variables, depth, width)``; variables are float32 numpy arrays.

    Raises:
        WeightsError: listing every missing and unexpected key and every
            parameter whose shape differs (with both shapes).
    """
    state = _strip_prefix(dict(state), source)
    depth, width = architecture_of(state, source)
    expected = encoder_shapes(depth, width, 'v1.5')
    flat, missing, misshapen, used = {}, [], [], set()
    for path, shape in expected.items():
        key = torch_key(path)
        if key not in state:
            missing.append(key)
            continue
        used.add(key)
        array = np.asarray(state[key])
        want = _torch_shape(path, shape)
        if array.shape != want:
            misshapen.append(f'{key}: file {array.shape}, ResNet{depth} (width {width}) expects {want}')
            continue
        if not np.issubdtype(array.dtype, np.floating):
            misshapen.append(f'{key}: dtype {array.dtype}, expected floating point')
            continue
        flat[path] = _from_torch(path, array.astype(np.float32, copy=False))
    extra = sorted(k for k in state if k not in used and not _IGNORED.search(k))
    problem = mismatch_report(source, missing, extra, misshapen)
    if problem:
        raise WeightsError(problem)
    return nest(flat), depth, width


def read_torchvision(path: Path) -> tuple[dict, int, int]:
    """Reads a torchvision-layout file into ``(variables, depth, width)``."""
    return variables_from_state_dict(read_state_dict(path), str(path))


def state_dict_from_variables(variables: Mapping) -> dict[str, np.ndarray]:
    """Converts encoder variables (``variant='v1.5'``) into a torchvision state dict of numpy arrays.

    Raises:
        WeightsError: the variables are not those of a v1.5 ResNet encoder alone.
    """
    if 'encoder' in variables.get('params', {}):
        raise WeightsError(
            "export takes the encoder's variables: pass "
            "{'params': v['params']['encoder'], 'batch_stats': v['batch_stats']['encoder']}"
        )
    flat = {
        path: np.asarray(leaf)
        for path, leaf in flatten(variables).items()
        if path[0] in ('params', 'batch_stats')
    }
    if ('params', 'conv1', 'bias') in flat:
        raise WeightsError(
            "these variables are of a variant='keras' ResNet (convolutions with "
            'biases, strides in the 1x1 convolutions); torchvision has no such ResNet'
        )
    if ('params', 'conv1', 'kernel') not in flat:
        raise WeightsError(
            f'not ResNet encoder variables: no params/conv1/kernel among '
            f'{sorted("/".join(p) for p in flat)[:8]}'
        )
    # safetensors writes an array's memory as it lies: only C-contiguous arrays survive.
    state = {
        torch_key(path): np.ascontiguousarray(_to_torch(path, leaf), np.float32)
        for path, leaf in flat.items()
    }
    # Checks the tree is a complete encoder (raises on anything missing or extra).
    variables_from_state_dict(state, 'exported variables')
    return state


def write_torchvision(variables: Mapping, path: Path) -> Path:
    """Writes ``variables`` as a torchvision state dict (``.safetensors``/``.npz``/``.pth``/``.pt``)."""
    state = state_dict_from_variables(variables)
    suffix = path.suffix.lower()
    path.parent.mkdir(parents=True, exist_ok=True)
    if suffix == '.safetensors':
        from safetensors.numpy import save_file

        save_file(state, str(path))
    elif suffix == '.npz':
        with path.open('wb') as f:  # a file object keeps numpy from renaming the path
            np.savez(f, **state)
    elif suffix in ('.pth', '.pt'):
        try:
            import torch
        except ImportError as err:
            raise WeightsError(
                f'{path}: writing .pth/.pt needs torch (pip install '
                f"'fewshot_jax[torch]'); .safetensors needs nothing more"
            ) from err
        # torch.tensor copies: arrays fetched from JAX are read-only.
        torch.save({key: torch.tensor(value) for key, value in state.items()}, path)
    else:
        raise WeightsError(f'{path}: expected a .safetensors, .npz, .pth or .pt path')
    return path
