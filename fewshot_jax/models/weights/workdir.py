"""The encoder of a pretraining workdir: its final ``encoder/`` or a checkpoint step.

A finished run leaves ``workdir/encoder/`` (variables + ``encoder.json`` with
the model config and step); every run leaves ``workdir/encoder_init/`` (the same,
for the weights it started from: step 0, the random init of its seed) and
``workdir/checkpoints/<step>/``
with the full train state, whose ``params``/``batch_stats`` hold the encoder
under ``'encoder'``. Only the encoder's arrays are read from a checkpoint (a
partial orbax restore into numpy), never the optimizer state.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from fewshot_jax import integrity
from fewshot_jax.models.resnet import IMAGENET_MEAN, IMAGENET_STD
from fewshot_jax.models.weights.common import (
    LoadedWeights,
    WeightsError,
    encoder_shapes,
    flatten,
    mismatch_report,
    read_json,
)
from fewshot_jax.train_lib import checkpoint

log = logging.getLogger(__name__)


class DamagedCheckpointError(WeightsError):
    """A checkpoint step whose files are missing or unreadable."""


def final_encoder_step(workdir: Path) -> int | None:
    """The step recorded in ``workdir/encoder/encoder.json``, or None if the run never finished."""
    meta = checkpoint.encoder_meta_path(workdir)
    if not meta.is_file():
        return None
    step = read_json(meta).get('step')
    if not isinstance(step, int):
        raise WeightsError(f'{meta}: expected an integer "step", got {step!r}')
    return step


def read_workdir(workdir: Path, step: int | None = None) -> LoadedWeights:
    """Reads a workdir's encoder: the given step, or the newest one.

    Without a step, the final ``encoder/`` is used unless a checkpoint is newer
    (a run resumed with more steps and still going, or killed); an unreadable
    newest checkpoint falls back to the previous one with a warning. Step 0 is
    ``encoder_init/``, the weights the run started from.

    Raises:
        WeightsError: no encoder and no checkpoints, an unknown step, or no
            readable checkpoint.
    """
    if step == 0 and checkpoint.encoder_meta_path(workdir, checkpoint.INIT_ENCODER_DIR).is_file():
        return _read_final(workdir, 0, checkpoint.INIT_ENCODER_DIR)
    steps = checkpoint.checkpoint_steps(workdir)
    final = final_encoder_step(workdir)
    if final is None and not steps:
        raise WeightsError(
            f'{workdir}: not a pretraining workdir with weights: it holds neither '
            f'{checkpoint.ENCODER_DIR}/{checkpoint.ENCODER_META} (written when a run finishes) '
            f'nor {checkpoint.CHECKPOINT_DIR}/<step>/'
        )
    if step is None:
        if final is not None and (not steps or final >= steps[-1]):
            return _read_final(workdir, final)
        candidates = steps[::-1]
    elif step == final:
        return _read_final(workdir, final)
    elif step in steps:
        candidates = [step]
    else:
        have = f'checkpoint steps {steps}' if steps else 'no checkpoints'
        have += f', final encoder at step {final}' if final is not None else ''
        raise WeightsError(f'{workdir}: no step {step}; it has {have}')

    if step is not None:
        try:
            return _read_checkpoint(workdir, step)
        except Exception as err:
            if not _is_damage(err):
                raise
            raise WeightsError(
                f'{workdir}: checkpoint step {step} is unreadable ({type(err).__name__}: {str(err)[:300]})'
            ) from err
    found, unreadable = checkpoint.first_readable(
        candidates, lambda s: _read_checkpoint(workdir, s), str(workdir), _is_damage
    )
    if found is None:
        raise WeightsError(f'{workdir}: no readable checkpoint; tried steps {unreadable}')
    return found[1]


def _is_damage(err: Exception) -> bool:
    # A readable step of the wrong architecture is an error, not damage.
    return not isinstance(err, WeightsError) or isinstance(err, DamagedCheckpointError)


def _with_defaults(model: dict, source: str) -> dict:
    for key in ('depth', 'width'):
        if not isinstance(model.get(key), int):
            raise WeightsError(f'{source}: model config has {key}={model.get(key)!r}, expected an integer')
    model = dict(model)
    model.setdefault('variant', 'v1.5')
    model.setdefault('stem', 'imagenet')
    model.setdefault('dtype', 'float32')
    model.setdefault('input_mean', list(IMAGENET_MEAN))
    model.setdefault('input_std', list(IMAGENET_STD))
    model.setdefault('input_norm', 'channel')
    model.setdefault('input_channels', 'rgb')
    return model


def _read_final(workdir: Path, step: int, folder: str = checkpoint.ENCODER_DIR) -> LoadedWeights:
    meta_path = checkpoint.encoder_meta_path(workdir, folder)
    meta = read_json(meta_path)
    model = _with_defaults(meta.get('model') or {}, str(meta_path))
    variables_path = checkpoint.encoder_variables_path(workdir, folder)
    if folder == checkpoint.INIT_ENCODER_DIR:
        redo = (
            f'delete {meta_path.parent} and rerun the pretraining command on {workdir} '
            '(it writes the starting weights again from the seed)'
        )
    else:
        redo = (
            f'rerun the pretraining command on {workdir} to export it again from its last checkpoint '
            '(in a workflow: --config.force=pretrain)'
        )
    integrity.check_seal(meta, meta_path, regenerate=redo)
    integrity.verify(
        variables_path,
        (meta.get('sha256') or {}).get('variables'),
        what='the exported encoder',
        regenerate=redo,
    )
    variables = _restore_numpy(variables_path, prefix=None)
    _check(variables, model, str(meta_path.parent))
    suffix = '@0' if folder == checkpoint.INIT_ENCODER_DIR else ''
    return LoadedWeights(
        variables=variables,
        model=model,
        name=workdir.name + suffix,
        source=f'checkpoint:{workdir}{suffix}',
        step=step,
    )


def _read_checkpoint(workdir: Path, step: int) -> LoadedWeights:
    folder = checkpoint.checkpoint_item_path(workdir, step, 'config').parent
    config = checkpoint.read_config_item(folder / 'config')
    if not isinstance(config, dict) or not isinstance(config.get('model'), dict):
        raise WeightsError(f'{folder}/config: holds no "model" section')
    model = _with_defaults(config['model'], f'{folder}/config')
    variables = _restore_numpy(folder / 'state', prefix='encoder')
    _check(variables, model, str(folder))
    return LoadedWeights(
        variables=variables,
        model=model,
        name=f'{workdir.name}@{step}',
        source=f'checkpoint:{workdir}@{step}',
        step=step,
    )


def _restore_numpy(path: Path, prefix: str | None) -> dict:
    """Restores ``{'params', 'batch_stats'}`` (or their ``prefix`` subtrees) as float32 numpy."""
    if not path.is_dir():
        raise DamagedCheckpointError(f'{path}: missing (an incomplete or damaged workdir)')
    tree = checkpoint.array_metadata(path)
    if not isinstance(tree, Mapping) or 'params' not in tree:
        raise DamagedCheckpointError(f'{path}: no "params" in this checkpoint')
    wanted = {}
    for collection in ('params', 'batch_stats'):
        node = tree.get(collection, {})
        if prefix is not None:
            if prefix not in node:
                raise WeightsError(
                    f'{path}: no {collection}/{prefix} in this checkpoint (found {sorted(node)})'
                )
            node = {prefix: node[prefix]}
        wanted[collection] = dict(node)
    restored = checkpoint.restore_numpy(path, wanted)
    if prefix is not None:
        restored = {col: restored[col][prefix] for col in ('params', 'batch_stats')}
    return {col: _f32(restored[col]) for col in ('params', 'batch_stats')}


def _f32(tree: Mapping) -> dict:
    return {k: _f32(v) if isinstance(v, Mapping) else np.asarray(v, np.float32) for k, v in tree.items()}


def _check(variables: dict, model: dict, source: str) -> None:
    expected = encoder_shapes(model['depth'], model['width'], model['variant'], model['stem'])
    found = {path: tuple(leaf.shape) for path, leaf in flatten(variables).items()}
    misshapen = [
        f'{"/".join(p)}: stored {found[p]}, model expects {shape}'
        for p, shape in expected.items()
        if p in found and found[p] != shape
    ]
    problem = mismatch_report(
        f'{source} (ResNet{model["depth"]}, width {model["width"]}, variant {model["variant"]!r})',
        sorted('/'.join(p) for p in set(expected) - set(found)),
        sorted('/'.join(p) for p in set(found) - set(expected)),
        misshapen,
    )
    if problem:
        raise WeightsError(problem)
