"""Optimizers, learning-rate schedules and freeze masks.

By default the schedule spans the whole run (``optim.schedule='cosine'``): linear
warm-up, then cosine decay that reaches ``end_lr`` at the last step.
``optim.schedule='paper'`` is the notebooks' ``tf.keras.experimental.CosineDecay(lr,
decay_steps=optim.decay_steps)`` (1000): no warm-up, cosine to 0 at ``decay_steps``
and 0 from there on, which left ~60 % of their 2600 steps at lr 0 (docs/paper.md).
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import ml_collections
import optax
from flax import traverse_util

from fewshot_jax.errors import ConfigError, is_count

OPTIMIZERS = ('sgd', 'lars', 'adam', 'adamw')
SCHEDULES = ('cosine', 'paper')


def make_schedule(optim_cfg: ml_collections.ConfigDict, total_steps: int) -> optax.Schedule:
    """The learning rate by step, as ``optim.schedule`` names it.

    'cosine' (default): warm-up from 0 to ``optim.lr`` over ``optim.warmup_steps``,
    then cosine to ``optim.end_lr`` at the last step. 'paper':
    ``lr * (1 + cos(pi * min(step, decay_steps) / decay_steps)) / 2``, Keras'
    ``CosineDecay`` as the notebooks ran it (warm-up and ``end_lr`` not used).

    Args:
        optim_cfg: ``config.optim`` with ``lr``, ``warmup_steps`` (int, or a float in
            [0, 1) read as a fraction of the run) and optional ``end_lr``,
            ``schedule`` and ``decay_steps``.
        total_steps: number of optimizer steps in the whole run.
    """
    if total_steps < 1:
        raise ConfigError(f'total_steps={total_steps}: expected at least 1 training step')
    name = optim_cfg.get('schedule', 'cosine')
    if name not in SCHEDULES:
        raise ConfigError(f'optim.schedule={name!r}: expected one of {SCHEDULES}')
    if name == 'paper':
        decay = optim_cfg.get('decay_steps', 1000)
        if not is_count(decay):
            raise ConfigError(f'optim.decay_steps={decay!r}: expected a positive number of steps')
        if optim_cfg.lr <= 0:
            raise ConfigError(f'optim.lr={optim_cfg.lr}: expected a positive learning rate')
        return optax.cosine_decay_schedule(optim_cfg.lr, decay)
    warmup = optim_cfg.get('warmup_steps', 0)
    if isinstance(warmup, float):
        if not 0.0 <= warmup < 1.0:
            raise ConfigError(f'optim.warmup_steps={warmup}: a float must be a fraction in [0, 1)')
        warmup = int(round(warmup * total_steps))
    warmup = min(int(warmup), total_steps - 1)
    if optim_cfg.lr <= 0:
        raise ConfigError(f'optim.lr={optim_cfg.lr}: expected a positive learning rate')
    end_lr = optim_cfg.get('end_lr', 0.0)
    if warmup == 0:
        return optax.cosine_decay_schedule(optim_cfg.lr, total_steps, alpha=end_lr / optim_cfg.lr)
    return optax.warmup_cosine_decay_schedule(
        init_value=0.0,
        peak_value=optim_cfg.lr,
        warmup_steps=warmup,
        decay_steps=total_steps,
        end_value=end_lr,
    )


def _is_kernel(params):
    """True for weight matrices/kernels; biases and BatchNorm scales are 1-D."""
    return jax.tree.map(lambda p: p.ndim > 1, params)


def make_optimizer(
    optim_cfg: ml_collections.ConfigDict, total_steps: int, frozen: Sequence[str] = ()
) -> optax.GradientTransformation:
    """Builds the optimizer named by ``optim.name``.

    * ``sgd``: momentum ``optim.momentum`` (0.9 if unset; the paper's notebook: 0),
      optional L2 weight decay ``optim.weight_decay`` on kernels only.
    * ``lars``: as in the Barlow Twins paper — biases and BatchNorm parameters are
      excluded from both weight decay and the trust-ratio adaptation.
    * ``adam`` / ``adamw``: for probes and decoders.

    Args:
        optim_cfg: ``config.optim``.
        total_steps: length of the run, for the schedule.
        frozen: top-level parameter collections (e.g. ``('encoder',)``) that
            receive no update at all (see :func:`trainable_labels`).
    """
    name = optim_cfg.name
    schedule = make_schedule(optim_cfg, total_steps)
    wd = optim_cfg.get('weight_decay', 0.0)
    if name == 'sgd':
        parts = [optax.add_decayed_weights(wd, mask=_is_kernel)] if wd else []
        # momentum 0 is plain SGD (the notebooks'): no trace buffer at all.
        tx = optax.chain(*parts, optax.sgd(schedule, momentum=optim_cfg.get('momentum', 0.9) or None))
    elif name == 'lars':
        tx = optax.lars(
            schedule,
            weight_decay=wd,
            weight_decay_mask=_is_kernel,
            trust_coefficient=optim_cfg.get('trust_coefficient', 0.001),
            eps=0.0,
            trust_ratio_mask=_is_kernel,
            momentum=optim_cfg.get('momentum', 0.9),
        )
    elif name == 'adam':
        tx = optax.adam(schedule)
    elif name == 'adamw':
        tx = optax.adamw(schedule, weight_decay=wd, mask=_is_kernel)
    else:
        raise ConfigError(f'optim.name={name!r}: expected one of {OPTIMIZERS}')
    if frozen:
        tx = optax.multi_transform(
            {'train': tx, 'frozen': optax.set_to_zero()}, lambda params: trainable_labels(params, frozen)
        )
    return tx


def trainable_labels(params, frozen: Sequence[str]):
    """Labels each parameter 'frozen' if its path starts with one of ``frozen``, else 'train'.

    ``frozen`` entries are '/'-joined path prefixes, e.g. 'encoder' or 'encoder/layer1_0'.
    """
    flat = traverse_util.flatten_dict(params, sep='/')
    unknown = [f for f in frozen if not any(k == f or k.startswith(f + '/') for k in flat)]
    if unknown:
        raise ValueError(
            f'frozen prefixes {unknown} match no parameter; top-level keys are '
            f'{sorted({k.split("/")[0] for k in flat})}'
        )
    labels = {k: 'frozen' if any(k == f or k.startswith(f + '/') for f in frozen) else 'train' for k in flat}
    return traverse_util.unflatten_dict(labels, sep='/')
