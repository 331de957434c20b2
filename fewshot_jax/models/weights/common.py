"""What every weight reader shares: the error type, the loaded-weights record,
variable-tree helpers and the expected shapes of an encoder.

The bottom of the weights modules: the dispatcher (``weights.py``) and the
format readers (``weights_torch``, ``weights_keras``, ``weights_workdir``)
import from here, never from each other.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from fewshot_jax.models.resnet import STAGE_DEPTHS, ResNet

RANDOM_SPECS = ('', 'random')


def is_random(spec: str | os.PathLike | None) -> bool:
    """True when a weight spec names no weights (``'random'``, empty or None)."""
    return spec is None or os.fspath(spec).strip() in RANDOM_SPECS


class WeightsError(ValueError):
    """A weight spec, file or workdir that cannot give the requested encoder."""


@dataclasses.dataclass(frozen=True)
class LoadedWeights:
    """An encoder's variables and what it takes to rebuild its module.

    Attributes:
        variables: ``{'params': ..., 'batch_stats': ...}`` of float32 numpy arrays.
        model: the model config as a dict: ``depth``, ``width``, ``variant``,
            ``dtype``, ``input_mean``, ``input_std`` (and, from a workdir,
            whatever else its ``config.model`` held).
        name: a short label (file stem or workdir name, with ``@step``).
        source: the resolved spec, e.g. ``'keras:/abs/encoder.h5'``.
        step: the training step of a workdir's weights; None for files.
    """

    variables: dict
    model: dict
    name: str
    source: str
    step: int | None = None


@functools.lru_cache(maxsize=16)
def encoder_shapes(
    depth: int, width: int, variant: str, stem: str = 'imagenet'
) -> dict[tuple[str, ...], tuple[int, ...]]:
    """Every variable of a ResNet encoder: ``{('params', 'conv1', 'kernel'): shape, …}``.

    Traced abstractly (no arrays are allocated), so it costs the same for any width.
    """
    import jax
    import jax.numpy as jnp

    if depth not in STAGE_DEPTHS:
        raise WeightsError(f'ResNet depth {depth}: expected one of {sorted(STAGE_DEPTHS)}')
    module = ResNet(depth=depth, width=width, variant=variant, stem=stem)
    abstract = jax.eval_shape(lambda: module.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3), jnp.float32)))
    return {path: tuple(leaf.shape) for path, leaf in flatten(abstract).items()}


def flatten(tree: Mapping) -> dict[tuple[str, ...], Any]:
    """``{'a': {'b': x}}`` → ``{('a', 'b'): x}``."""
    flat = {}
    for key, value in tree.items():
        if isinstance(value, Mapping):
            flat.update({(key, *sub): leaf for sub, leaf in flatten(value).items()})
        else:
            flat[(key,)] = value
    return flat


def nest(flat: Mapping[tuple[str, ...], Any]) -> dict:
    """The inverse of :func:`flatten`."""
    tree: dict = {}
    for path, leaf in flat.items():
        node = tree
        for key in path[:-1]:
            node = node.setdefault(key, {})
        node[path[-1]] = leaf
    return tree


def mismatch_report(source: str, missing: list[str], extra: list[str], misshapen: list[str]) -> str | None:
    """One error message listing every missing, unexpected and misshapen entry, or None."""
    parts = []
    if missing:
        parts.append(f'{len(missing)} missing: {_listing(missing, ", ")}')
    if extra:
        parts.append(f'{len(extra)} unexpected: {_listing(extra, ", ")}')
    if misshapen:
        parts.append(f'{len(misshapen)} with the wrong shape: {_listing(misshapen, "; ")}')
    return f'{source}: ' + ' | '.join(parts) if parts else None


def _listing(items: list[str], sep: str, limit: int = 25) -> str:
    # A file of another architecture mismatches hundreds of keys; the first
    # few tell the story.
    shown = sep.join(items[:limit])
    return shown if len(items) <= limit else f'{shown}{sep}… and {len(items) - limit} more'


def read_json(path: Path) -> dict:
    """A JSON file as a dict, with an error that names the file."""
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise WeightsError(f'{path}: unreadable ({type(err).__name__}: {err})') from err
