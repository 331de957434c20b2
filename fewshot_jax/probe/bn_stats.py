"""The BatchNorm-statistics-only control: an init's weights, its BatchNorm statistics re-estimated.

A pretrained encoder differs from its ``@0`` init in two ways: its weights moved,
and its BatchNorm running statistics were estimated on micrographs (an init's are
mean 0, variance 1, which suit no real input). The second alone can move a probe:
features normalised with statistics of the right images are better conditioned.
This control keeps the init's weights bit for bit and re-estimates only the
statistics — what pretraining at learning rate 0 would do — so that
"pretrained − BN-stats-only" is the part of the gap the weights earned.

In a probe's encoder list it is the weight spec with the prefix ``bn-stats:``::

    'BN stats only=bn-stats:checkpoint:runs/demo/pretrain/simclr_tem@0'

The statistics are re-estimated on the images the probe encodes (all of the
task's images; the labels are never read), then the features are extracted in
inference mode as for every other encoder.

How the statistics are estimated: the images go through the network in train mode
(every BatchNorm normalises with its batch's statistics, as in pretraining), in
batches of near-equal size no larger than the probe's ``encode_batch``; each
BatchNorm layer's input mean and (biased) variance per channel are pooled over
all images, each batch weighted by its size. Pretraining would keep an
exponential moving average of the same batch statistics; the pooled value is
that average's limit without its dependence on the batch order. The first
BatchNorm layer's statistics are then exactly those of its input over all images.
"""

from __future__ import annotations

import math

import numpy as np

from fewshot_jax.errors import is_count

__all__ = ['PREFIX', 'BatchStatsError', 'base_spec', 'reestimate_batch_stats']

PREFIX = 'bn-stats:'
_INTEGER_SCALES = {np.dtype(np.uint8): 255.0, np.dtype(np.uint16): 65535.0}


class BatchStatsError(ValueError):
    """Images or variables the BatchNorm re-estimation cannot use."""


def base_spec(spec: str) -> str | None:
    """The weight spec inside a ``'bn-stats:<spec>'`` entry; None for any other spec."""
    spec = str(spec)
    if not spec.startswith(PREFIX):
        return None
    base = spec[len(PREFIX) :].strip()
    if not base:
        raise BatchStatsError(f'encoder spec {spec!r}: expected "bn-stats:<weight spec>"')
    return base


def _unit_float(images) -> np.ndarray:
    """Images as float32 (N, H, W, 3) in [0, 1], the encoder's own input convention."""
    x = np.asarray(images)
    if x.ndim == 3:
        x = x[..., None]
    if x.ndim != 4 or x.shape[-1] not in (1, 3) or len(x) == 0:
        raise BatchStatsError(
            f'images of shape {np.shape(images)}: expected a non-empty (N, H, W), (N, H, W, 1) '
            'or (N, H, W, 3)'
        )
    scale = _INTEGER_SCALES.get(x.dtype)
    if scale is None and not np.issubdtype(x.dtype, np.floating):
        raise BatchStatsError(f'images of dtype {x.dtype}: expected uint8, uint16 or float in [0, 1]')
    x = x.astype(np.float32) / scale if scale else x.astype(np.float32)
    return np.broadcast_to(x, (*x.shape[:3], 3))  # grayscale → 3 identical channels, as Encoder


def reestimate_batch_stats(module, variables, images, *, batch_size: int = 64) -> dict:
    """The variables with every BatchNorm's running statistics re-estimated on ``images``.

    Args:
        module: the Flax ResNet (``Encoder.module``).
        variables: ``{'params', 'batch_stats'}``; the params are returned unchanged
            (the same arrays).
        images: (N, H, W[, C]) uint8, uint16 or float in [0, 1].
        batch_size: the largest train-mode batch (batches are of near-equal size).

    Returns:
        ``{'params': variables['params'], 'batch_stats': re-estimated}`` as numpy
        arrays for the statistics, in each statistic's original dtype.

    Raises:
        BatchStatsError: unusable images or batch size, or a BatchNorm layer whose
            statistics the forward pass did not reach.
    """
    import flax.linen as nn
    import jax
    import jax.numpy as jnp

    if not is_count(batch_size):
        raise BatchStatsError(f'batch_size={batch_size!r}: expected a positive integer')
    x = _unit_float(images)
    params = variables['params']
    old_stats = variables['batch_stats']

    # Weights are arguments, not closed-over constants: a ResNet50's would be baked into the program.
    def moments(params, batch_stats, batch):
        captured = {}

        def capture(next_fun, args, kwargs, context):
            if isinstance(context.module, nn.BatchNorm) and context.method_name == '__call__':
                h = args[0].astype(jnp.float32)
                axes = tuple(range(h.ndim - 1))
                mean = h.mean(axes)
                captured['/'.join(context.module.path)] = (mean, ((h - mean) ** 2).mean(axes))
            return next_fun(*args, **kwargs)

        with nn.intercept_methods(capture):
            module.apply(
                {'params': params, 'batch_stats': batch_stats}, batch, train=True, mutable=['batch_stats']
            )
        return captured

    moments = jax.jit(moments)
    count = math.ceil(len(x) / batch_size)
    totals: dict[str, list] = {}
    # Near-equal batches (at most two shapes to compile) so no batch is a lone image whose
    # train-mode statistics would be degenerate.
    for index in np.array_split(np.arange(len(x)), count):
        for path, (mean, var) in moments(params, old_stats, jnp.asarray(x[index])).items():
            totals.setdefault(path, []).append(
                (len(index), np.asarray(mean, np.float64), np.asarray(var, np.float64))
            )
    flat = {}
    for path, parts in totals.items():
        sizes = np.asarray([n for n, _, _ in parts], np.float64)[:, None]
        means = np.stack([m for _, m, _ in parts])
        variances = np.stack([v for _, _, v in parts])
        pooled_mean = (sizes * means).sum(0) / sizes.sum()
        # Pooled variance: within-batch spread plus the spread of the batch means.
        pooled_var = (sizes * (variances + (means - pooled_mean) ** 2)).sum(0) / sizes.sum()
        flat[path] = (pooled_mean, pooled_var)
    return {'params': params, 'batch_stats': _replace_stats(old_stats, flat)}


def _replace_stats(old, flat: dict, prefix: tuple = ()) -> dict:
    out = {}
    for key, value in old.items():
        path = (*prefix, key)
        if set(value.keys()) != {'mean', 'var'}:  # a parent module, not a BatchNorm's statistics
            out[key] = _replace_stats(value, flat, path)
            continue
        name = '/'.join(path)
        if name not in flat:
            raise BatchStatsError(f'BatchNorm layer {name!r} was not reached by the forward pass')
        mean, var = flat[name]
        out[key] = {
            'mean': mean.astype(np.asarray(value['mean']).dtype),
            'var': var.astype(np.asarray(value['var']).dtype),
        }
    return out
