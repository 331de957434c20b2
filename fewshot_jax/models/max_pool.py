"""The ResNet stem's 3x3 stride-2 max-pool, with a gradient built from dense ops only.

XLA differentiates ``reduce_window(max)`` with ``select-and-scatter``, which XLA:CPU
runs slowly (benchmarks/maxpool_grad.py: 384 ms against 66 ms for this version at
96 px, batch 16 views, under load; the stem's pool is ~10 % of a CPU step). Here the
forward pass takes the maximum of the nine strided window slices; the backward pass
walks the same slices in XLA's window order (row by row), gives each output's
cotangent to the first slice equal to the maximum (select-and-scatter keeps the first
of equal values, and ties are common after a ReLU), and places each slice's share
back on the input grid with an interior-padded ``lax.pad`` instead of a scatter. An
input's shares are added in the order of their windows, as select-and-scatter adds
them, so the gradient is the same to the bit (tests/test_resnet.py).

``max_pool_grad`` picks the implementation: 'xla' (``nn.max_pool``), 'dense' (this
one), or 'auto' (dense on the CPU, where it was measured faster; XLA's elsewhere,
where it was not measured).
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

MAX_POOL_GRADS = ('auto', 'xla', 'dense')
WINDOW, STRIDE = 3, 2


def _window_slices(padded, out_h: int, out_w: int):
    """The nine strided views ``padded[:, a + 2p, b + 2q]`` in window order (row by row)."""
    span_h, span_w = STRIDE * (out_h - 1) + 1, STRIDE * (out_w - 1) + 1
    return [
        (a, b, padded[:, a : a + span_h : STRIDE, b : b + span_w : STRIDE, :])
        for a in range(WINDOW)
        for b in range(WINDOW)
    ]


def _pool_forward(x):
    padded = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)), constant_values=-jnp.inf)
    out_h, out_w = (x.shape[1] - 1) // STRIDE + 1, (x.shape[2] - 1) // STRIDE + 1
    y = None
    for _, _, window in _window_slices(padded, out_h, out_w):
        y = window if y is None else jnp.maximum(y, window)
    return y, (padded, y)


def _pool_backward(residuals, dy):
    padded, y = residuals
    out_h, out_w = y.shape[1], y.shape[2]
    zero = jnp.zeros((), dy.dtype)
    taken = jnp.zeros(y.shape, bool)
    shares = []
    for a, b, window in _window_slices(padded, out_h, out_w):
        hit = (window == y) & ~taken
        taken = taken | hit
        shares.append((a, b, jnp.where(hit, dy, zero)))
    d_padded = jnp.zeros(padded.shape, dy.dtype)
    # Reverse window order: each input then receives its shares in its windows' order.
    for a, b, share in reversed(shares):
        tail_h = padded.shape[1] - a - (STRIDE * (out_h - 1) + 1)
        tail_w = padded.shape[2] - b - (STRIDE * (out_w - 1) + 1)
        d_padded = d_padded + jax.lax.pad(
            share, zero, ((0, 0, 0), (a, tail_h, STRIDE - 1), (b, tail_w, STRIDE - 1), (0, 0, 0))
        )
    return (d_padded[:, 1:-1, 1:-1, :],)


@jax.custom_vjp
def dense_grad_max_pool(x):
    """3x3 stride-2 max-pool with padding 1 (the ResNet stem's), NHWC, dense gradient."""
    return _pool_forward(x)[0]


dense_grad_max_pool.defvjp(_pool_forward, _pool_backward)


def stem_max_pool(x, max_pool_grad: str = 'auto'):
    """The stem's 3x3 stride-2 max-pool (padding 1) with the chosen gradient implementation."""
    if max_pool_grad not in MAX_POOL_GRADS:
        raise ValueError(f'model.max_pool_grad={max_pool_grad!r}: expected one of {list(MAX_POOL_GRADS)}')
    dense = max_pool_grad == 'dense' or (max_pool_grad == 'auto' and jax.default_backend() == 'cpu')
    if dense:
        return dense_grad_max_pool(x)
    return nn.max_pool(x, (WINDOW, WINDOW), (STRIDE, STRIDE), padding=[(1, 1), (1, 1)])
