"""Pure train steps ``(state, batch) -> (state, metrics)``.

Model, optimizer, loss and augmentation are bound by closure in the ``make_*``
builders; the returned step is jit-compiled over the mesh with the batch
sharded along ``'data'``, the state replicated and donated. Losses see the
global batch (see ``sharding.py``).
"""

from __future__ import annotations

from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import optax

from fewshot_jax.errors import ConfigError
from fewshot_jax.pretrain import augment, losses
from fewshot_jax.train_lib.state import TrainState

SSL_METHODS = ('simclr', 'barlow_twins')


def make_ssl_loss(loss_cfg: ml_collections.ConfigDict) -> Callable[[jax.Array, jax.Array], jax.Array]:
    """Returns ``loss(z1, z2) -> scalar`` for ``loss.name`` in ('simclr', 'barlow_twins')."""
    variant = loss_cfg.get('variant', 'standard')
    if loss_cfg.name == 'simclr':
        tau = loss_cfg.temperature
        return lambda z1, z2: losses.nt_xent(z1, z2, temperature=tau, variant=variant)
    if loss_cfg.name == 'barlow_twins':
        lambd = loss_cfg.lambd
        return lambda z1, z2: losses.barlow_twins(z1, z2, lambd=lambd, variant=variant)
    raise ConfigError(f'loss.name={loss_cfg.name!r}: expected one of {SSL_METHODS}')


def ssl_step_fn(
    model: nn.Module,
    tx: optax.GradientTransformation,
    loss_fn: Callable,
    aug_cfg: augment.AugmentConfig,
    schedule: optax.Schedule | None = None,
):
    """The un-jitted SSL step: augment two views on device, forward, loss, update.

    Args:
        model: an ``SSLModel``; ``apply(variables, x, train=True)`` → ``(z, pooled)``.
        tx: the optimizer.
        loss_fn: ``(z1, z2) -> scalar`` over the global batch.
        aug_cfg: augmentation settings (static).
        schedule: optional lr schedule, only to report the lr in the metrics.

    Returns:
        ``step(state, images) -> (state, metrics)`` where ``images`` is the uint8
        batch (N, H, W, 3) and metrics are scalars.
    """

    def step(state: TrainState, images: jax.Array):
        key = jax.random.fold_in(state.rng, state.step)
        view1, view2 = augment.two_views(key, images, aug_cfg)
        n = view1.shape[0]
        # Interleave the views as (N, 2, ...) → (2N, ...): each device keeps both
        # views of its own examples, so no data moves; BatchNorm sees all 2N views.
        both = jnp.stack([view1, view2], axis=1).reshape((2 * n,) + view1.shape[1:])

        def loss_of(params):
            (z, pooled), updates = model.apply(
                {'params': params, 'batch_stats': state.batch_stats},
                both,
                train=True,
                mutable=['batch_stats'],
            )
            z = z.reshape((n, 2) + z.shape[1:])
            loss = loss_fn(z[:, 0], z[:, 1])
            return loss, (updates['batch_stats'], z, pooled)

        (loss, (batch_stats, z, pooled)), grads = jax.value_and_grad(loss_of, has_aux=True)(state.params)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        metrics = {
            'loss': loss,
            'grad_norm': optax.tree.norm(grads),
            # Collapse indicators: per-dimension std of the normalised projection and
            # of the encoder features; both fall towards 0 if the run collapses.
            'z_std': jnp.mean(
                jnp.std(z[:, 0] / (jnp.linalg.norm(z[:, 0], axis=-1, keepdims=True) + 1e-8), 0)
            ),
            'feature_std': jnp.mean(jnp.std(pooled, axis=0)),
        }
        if schedule is not None:
            metrics['lr'] = schedule(state.step)
        new_state = state.replace(
            step=state.step + 1, params=params, batch_stats=batch_stats, opt_state=opt_state
        )
        return new_state, metrics

    return step
