"""The train state: one pytree holding everything a step reads and writes."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh

from fewshot_jax.train_lib import sharding


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
        return cls(
            step=jnp.zeros((), jnp.int32),
            params=params,
            batch_stats=variables.get('batch_stats', {}),
            opt_state=tx.init(params),
            rng=rng,
        )

    @property
    def variables(self):
        """The model variables, as ``Module.apply`` takes them."""
        return {'params': self.params, 'batch_stats': self.batch_stats}


def init_state(
    model,
    tx: optax.GradientTransformation,
    seed: int,
    image_size: int,
    mesh: Mesh,
    start_from: Callable[[Any], Any] | None = None,
) -> TrainState:
    """Initialises params, BatchNorm statistics and the optimizer, replicated on ``mesh``.

    The init key and the step key both derive from ``seed``, so a run is
    reproducible from (config, seed).

    Args:
        start_from: optional ``variables -> variables`` applied to the freshly
            initialised (host) variables before the optimizer state is built, e.g.
            replacing the encoder by pretrained weights (the builder makes it from
            ``config.model.init``).
    """
    init_key, step_key = jax.random.split(jax.random.PRNGKey(seed))
    dummy = jnp.zeros((2, image_size, image_size, 3), jnp.float32)
    create = jax.jit(
        lambda variables: TrainState.create(variables, tx, step_key), out_shardings=sharding.replicated(mesh)
    )
    if start_from is None:
        return jax.jit(
            lambda: TrainState.create(model.init(init_key, dummy, train=False), tx, step_key),
            out_shardings=sharding.replicated(mesh),
        )()
    variables = jax.jit(lambda: model.init(init_key, dummy, train=False))()
    return create(start_from(jax.device_get(variables)))
