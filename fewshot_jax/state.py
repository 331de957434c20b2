"""The train state: one pytree holding everything a step reads and writes."""

from __future__ import annotations

from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh

from fewshot_jax import sharding


@flax.struct.dataclass
class TrainState:
    """Params, BatchNorm statistics, optimizer state, step and base rng key.

    ``rng`` is a raw uint32 key (checkpointable as a plain array); each step
    derives its randomness as ``fold_in(rng, step)``, so a resumed run draws
    exactly what an uninterrupted one would.
    """

    step: jax.Array
    params: Any
    batch_stats: Any
    opt_state: optax.OptState
    rng: jax.Array

    @classmethod
    def create(cls, variables, tx: optax.GradientTransformation, rng: jax.Array) -> TrainState:
        """Builds the state at step 0 from model variables ``{'params', 'batch_stats'}``."""
        params = variables['params']
        return cls(step=jnp.zeros((), jnp.int32), params=params,
                   batch_stats=variables.get('batch_stats', {}),
                   opt_state=tx.init(params), rng=rng)

    @property
    def variables(self):
        """The model variables, as ``Module.apply`` takes them."""
        return {'params': self.params, 'batch_stats': self.batch_stats}


def init_state(model, tx: optax.GradientTransformation, seed: int, image_size: int,
               mesh: Mesh, init_spec: str = 'random', model_cfg=None) -> TrainState:
    """Initialises params, BatchNorm statistics and the optimizer, replicated on ``mesh``.

    The init key and the step key both derive from ``seed``, so a run is
    reproducible from (config, seed).

    Args:
        init_spec: ``config.model.init``: 'random', or a weight spec
            ('torchvision:/path', 'keras:/path.h5', 'checkpoint:/workdir') whose
            encoder replaces the random one (the projector stays random).
        model_cfg: ``config.model``, to check the weights fit; needed unless 'random'.
    """
    init_key, step_key = jax.random.split(jax.random.PRNGKey(seed))
    dummy = jnp.zeros((2, image_size, image_size, 3), jnp.float32)
    create = jax.jit(lambda variables: TrainState.create(variables, tx, step_key),
                     out_shardings=sharding.replicated(mesh))
    if init_spec in (None, '', 'random'):
        return jax.jit(lambda: TrainState.create(model.init(init_key, dummy, train=False), tx,
                                                 step_key),
                       out_shardings=sharding.replicated(mesh))()
    from fewshot_jax.models.weights import initial_variables  # file I/O, only when asked

    variables = jax.jit(lambda: model.init(init_key, dummy, train=False))()
    return create(initial_variables(init_spec, model_cfg, jax.device_get(variables)))
