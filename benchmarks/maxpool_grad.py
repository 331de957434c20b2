"""The ResNet stem's 3x3 stride-2 max-pool: XLA's gradient (select-and-scatter) against a
gradient built from dense ops only (fewshot_jax/models/max_pool.py), on the CPU.

The dense gradient: the forward pass takes the maximum of the nine strided window
slices; the backward pass walks the same nine slices in XLA's window order (row by
row), gives each output's cotangent to the first slice equal to the maximum (the tie
rule of XLA's select-and-scatter, which keeps the first of equal values), and puts each
slice's share back onto the input grid with an interior-padded ``lax.pad`` (stride 2)
rather than a scatter. Ties are common here: the pool follows a ReLU.

Checks that both gradients agree (maximum absolute difference; zero means the same
elements received the same cotangents) and times forward+backward of each, interleaved,
at the stem's output shapes for 96 and 160 px images and batch 16 views.

    python benchmarks/maxpool_grad.py --rounds=10
"""

from __future__ import annotations

import os
import statistics
import sys
import time

from fewshot_jax.train_lib.xla_setup import prefer_eigen_convolutions_on_cpu

prefer_eigen_convolutions_on_cpu()  # the project's CPU setting (before jax starts)

import flax.linen as nn  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from fewshot_jax.models.max_pool import dense_grad_max_pool  # noqa: E402

WINDOW, STRIDE = 3, 2


def xla_max_pool(x):
    return nn.max_pool(x, (WINDOW, WINDOW), (STRIDE, STRIDE), padding=[(1, 1), (1, 1)])


def main(argv):
    rounds = int(next((a.split('=')[1] for a in argv if a.startswith('--rounds=')), 10))
    for image_size in (96, 160):
        side = image_size // 2  # the stem's stride-2 convolution
        rng = np.random.default_rng(0)
        # Post-ReLU activations (about half exact zeros, so ties) and a random cotangent.
        x = jnp.asarray(np.maximum(rng.standard_normal((16, side, side, 64)), 0), jnp.float32)
        dy = jnp.asarray(rng.standard_normal(xla_max_pool(x).shape), jnp.float32)
        fns = {
            name: jax.jit(jax.grad(lambda v, f=f, dy=dy: jnp.vdot(f(v), dy)))
            for name, f in (('xla', xla_max_pool), ('dense', dense_grad_max_pool))
        }
        np.testing.assert_array_equal(np.asarray(xla_max_pool(x)), np.asarray(dense_grad_max_pool(x)))
        grads = {name: np.asarray(f(x)) for name, f in fns.items()}
        diff = float(np.max(np.abs(grads['xla'] - grads['dense'])))
        times = {name: [] for name in fns}
        for _ in range(rounds):
            for name, f in fns.items():
                t0 = time.perf_counter()
                f(x).block_until_ready()
                times[name].append(time.perf_counter() - t0)
        med = {name: statistics.median(t) for name, t in times.items()}
        print(
            f'{image_size} px (pool input {tuple(x.shape)}): xla {1e3 * med["xla"]:.1f} ms, '
            f'dense {1e3 * med["dense"]:.1f} ms fwd+bwd (median of {rounds}); '
            f'max |grad difference| {diff:g}; load {os.getloadavg()[0]:.1f}',
            flush=True,
        )


if __name__ == '__main__':
    main(sys.argv[1:])
