"""Self-supervised pretraining (SimCLR or Barlow Twins) = builders + the loop.

config → builders (mesh, source, pipeline, model, optimizer, state, step) →
``loop.run`` → metrics, checkpoints and, at the end, ``workdir/encoder``.
A run in a workdir that holds checkpoints continues from the newest readable
one: same step counter, same data order, same randomness.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
from collections.abc import Callable
from pathlib import Path

import ml_collections
import optax
from jax.sharding import Mesh

from fewshot_jax.data import pipeline, readable
from fewshot_jax.errors import ConfigError, is_count
from fewshot_jax.models import make_ssl_model
from fewshot_jax.models.heads import SSLModel
from fewshot_jax.models.weights.common import is_random
from fewshot_jax.pretrain import augment, steps
from fewshot_jax.train_lib import checkpoint, loop, sharding
from fewshot_jax.train_lib.optim import make_optimizer, make_schedule
from fewshot_jax.train_lib.state import TrainState, init_state

log = logging.getLogger(__name__)

# model.init of the paper presets: the ImageNet weights the paper started from, which only the
# user can give (nothing is downloaded); the run stops before any work until they do.
INIT_REQUIRED = 'required'
INIT_HOW = (
    '--config.model.init=keras:/path/resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5 '
    "(Keras' ImageNet ResNet50, as the paper's notebook) or --config.model.init=torchvision:/path.pth "
    'with --config.model.variant=v1.5, or --config.model.init=random to start from random weights'
)


def total_steps_of(train_cfg: ml_collections.ConfigDict, num_images: int, batch: int) -> int:
    """``train.num_steps`` if set, else ``train.epochs`` × (images // batch)."""
    if train_cfg.get('num_steps'):
        return int(train_cfg.num_steps)
    return int(train_cfg.epochs) * max(1, num_images // batch)


@dataclasses.dataclass
class SSLBuild:
    """Everything a pretraining run is made of, built from a config.

    Attributes:
        model: encoder + projector.
        tx: the optimizer.
        state: the initial train state, replicated on the mesh (``model.init`` applied).
        step_fn: the jitted ``(state, images) -> (state, metrics)``.
        mesh: the device mesh.
    """

    model: SSLModel
    tx: optax.GradientTransformation
    state: TrainState
    step_fn: Callable
    mesh: Mesh


def build_ssl(config: ml_collections.ConfigDict, mesh: Mesh, total_steps: int) -> SSLBuild:
    """Builds model, optimizer, initial state and jitted step for ``config``.

    The one builder chain for pretraining: the loop, the tests and the
    benchmarks all call it. ``config.model.init`` (a weight spec) is turned into
    the initial encoder variables here, so ``init_state`` sees variables only.
    """
    sharding.check_global_batch(config.data.batch_size, mesh)
    model = make_ssl_model(config.model)
    tx = make_optimizer(config.optim, total_steps)
    # Views come out at the pipeline's size, as in the paper (crop, then resize back).
    aug_cfg = augment.augment_config_from(config.augment, config.data.image_size)
    init_spec = config.model.get('init', 'random')
    if init_spec == INIT_REQUIRED:
        check_init_spec(config.model)  # raises: callers other than train_ssl skip check_config
    start_from = None
    if not is_random(init_spec):
        from fewshot_jax.models.weights import initial_variables  # file I/O, only when asked

        start_from = functools.partial(initial_variables, init_spec, config.model)
    state = init_state(model, tx, config.seed, config.data.image_size, mesh, start_from)
    loss_fn = steps.make_ssl_loss(config.loss)
    step_fn = sharding.jit_step(
        steps.ssl_step_fn(model, tx, loss_fn, aug_cfg, make_schedule(config.optim, total_steps)), mesh
    )
    return SSLBuild(model=model, tx=tx, state=state, step_fn=step_fn, mesh=mesh)


def make_ssl_batches(config: ml_collections.ConfigDict, mesh: Mesh):
    """The unlabeled source and a ``data_state -> iterator of global uint8 batches`` factory."""
    source = pipeline.make_source(config.data)
    spec = pipeline.spec_from(config.data, config.seed, pipeline.source_channels(source))
    dataset = pipeline.ssl_dataset(source, spec)

    def make_batches(data_state: dict | None):
        return _GlobalBatches(pipeline.batch_iterator(dataset, spec, data_state), mesh)

    return source, make_batches


class _GlobalBatches:
    """Host batches from a Grain iterator, turned into global arrays on the mesh."""

    def __init__(self, iterator, mesh: Mesh):
        self._iterator, self._mesh = iterator, mesh

    def __iter__(self):
        return self

    def __next__(self):
        return sharding.to_global(next(self._iterator), self._mesh)

    def get_state(self) -> dict:
        return self._iterator.get_state()


def check_config(config: ml_collections.ConfigDict) -> None:
    """Validates every pretraining setting by running the builders that read it, cheaply.

    Called before any data is generated or read and before anything compiles, so
    a bad value costs a second, not a run. Raises the project's errors
    (``ConfigError``, ``AugmentConfigError``, ``DataError``, ``WeightsError``).
    """
    data = config.data
    for key in ('batch_size', 'image_size'):
        value = data.get(key)
        if not is_count(value):
            raise ConfigError(f'data.{key}={value!r}: expected a positive integer')
    subset = data.get('subset')
    if subset is not None and not is_count(subset):
        raise ConfigError(
            f'data.subset={subset!r}: expected a positive number of images, or None for all of them'
        )
    if data.source not in pipeline.SOURCES:
        raise ConfigError(f'data.source={data.source!r}: expected one of {pipeline.SOURCES}')
    readable.check_on_unreadable(data.get('on_unreadable', 'error'))
    steps.make_ssl_loss(config.loss)
    augment.augment_config_from(config.augment, data.image_size)
    make_ssl_model(config.model)
    make_optimizer(config.optim, 100)
    loop.every_steps(config.train.get('log_every'), 100, name='train.log_every')
    loop.every_steps(config.train.get('checkpoint_every'), 100, name='train.checkpoint_every')
    num_steps = config.train.get('num_steps')
    if num_steps is not None and not is_count(num_steps):
        raise ConfigError(
            f'train.num_steps={num_steps!r}: expected a positive integer, or None to use train.epochs'
        )
    check_init_spec(config.model)


def check_init_spec(model_cfg: ml_collections.ConfigDict) -> None:
    """Refuses a ``model.init`` still 'required' (the paper presets) or naming unusable weights.

    Raises:
        ConfigError: ``model.init='required'``; the message says how to pass the weights.
        WeightsError: a missing file, or weights of another architecture (naming the file).
    """
    spec = model_cfg.get('init', 'random')
    if spec == INIT_REQUIRED:
        raise ConfigError(
            "model.init='required': the paper's run starts from ImageNet weights in a file you "
            f'give (nothing is downloaded): {INIT_HOW} (docs/paper.md)'
        )
    if not is_random(spec):
        from fewshot_jax.models.weights import check_init  # file I/O, only when asked

        check_init(spec, model_cfg)


def train_ssl(config: ml_collections.ConfigDict, workdir: str | os.PathLike) -> dict:
    """Runs (or resumes) self-supervised pretraining described by ``config``.

    Returns:
        A summary: ``{'step', 'total_steps', 'resumed_from', 'final_loss', 'encoder'}``.
    """
    workdir = Path(workdir)
    check_config(config)
    mesh = sharding.make_mesh(config.get('num_devices'))
    sharding.check_global_batch(config.data.batch_size, mesh)
    hooks = _monitor_hooks(config, mesh)
    source, make_batches = make_ssl_batches(config, mesh)
    total = total_steps_of(config.train, len(source), config.data.batch_size)
    build = build_ssl(config, mesh, total)

    def encoder_of(state: TrainState) -> dict:
        return {'params': state.params['encoder'], 'batch_stats': state.batch_stats['encoder']}

    if not checkpoint.encoder_meta_path(workdir, checkpoint.INIT_ENCODER_DIR).is_file():
        # The weights this run starts from (also when resuming: the build re-creates them from
        # the seed). They are the random-init baseline of the same seed, 'checkpoint:WORKDIR@0',
        # which a comparison of pretrained against random init needs to be like for like.
        checkpoint.save_encoder(
            workdir, encoder_of(build.state), config.model.to_dict(), 0, checkpoint.INIT_ENCODER_DIR
        )

    def export(state: TrainState) -> dict:
        path = checkpoint.save_encoder(workdir, encoder_of(state), config.model.to_dict(), total)
        return {
            'encoder': str(path),
            'next': f"load_encoder('{workdir}') in Python, or name 'checkpoint:{workdir}' "
            f'in a probe or U-Net config',
        }

    result = loop.run(
        build.step_fn,
        build.state,
        make_batches,
        total_steps=total,
        workdir=workdir,
        config=config,
        hooks=hooks,
        finalize=export,
        desc='pretrain',
    )
    return result.summary


def _monitor_hooks(config: ml_collections.ConfigDict, mesh: Mesh) -> list[loop.Hook]:
    """The online probe of ``config.monitor`` (none if the config has no monitor)."""
    monitor_cfg = config.get('monitor')
    if not monitor_cfg or not monitor_cfg.get('tasks'):
        return []
    tasks = tuple(monitor_cfg.tasks)
    if not str(config.data.source).startswith('synthetic'):
        # Synthetic probe tasks say nothing about an encoder of someone's own micrographs
        # and cost minutes; only labeled folders are followed on real data.
        kept = tuple(t for t in tasks if str(t).startswith('folder:'))
        if kept != tasks:
            log.warning(
                'monitor: data.source=%r is not synthetic, so the synthetic monitor tasks %s are '
                'off; follow a labeled folder with --config.monitor.tasks="(\'folder:/path\',)"',
                config.data.source,
                [t for t in tasks if t not in kept],
            )
        if not kept:
            return []
        monitor_cfg = monitor_cfg.copy_and_resolve_references()
        monitor_cfg.tasks = kept
    from fewshot_jax.pretrain import monitor  # builds labeled sets; only when asked

    return [monitor.make_probe_hook(monitor_cfg, config.model, mesh)]
