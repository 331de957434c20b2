"""The micrograph normalisation's background blur: two matrix products against two 1-D
convolutions of the same reflected-edge Gaussian, per batch of images, at each background sigma.

    python benchmarks/micrograph_blur.py --batch=512 --size=64 --sigmas=0.0625,0.25

Prints the median time of ``--repeats`` jitted calls per implementation (after one warm-up
call) and the largest difference between the two.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from jax import lax  # noqa: E402

from fewshot_jax.models.input_norm import _blur  # noqa: E402


def blur_by_convolution(gray: jax.Array, sigma: float) -> jax.Array:
    """The same blur as two 1-D convolutions over a symmetrically padded image."""
    height, width = gray.shape[1:]
    radius = max(1, min(int(3 * sigma + 0.5), height - 1, width - 1))
    offsets = jnp.arange(-radius, radius + 1, dtype=jnp.float32)
    kernel = jnp.exp(-0.5 * (offsets / sigma) ** 2)
    kernel = kernel / jnp.sum(kernel)
    padded = jnp.pad(gray, ((0, 0), (radius, radius), (radius, radius)), mode='symmetric')[..., None]
    dims = ('NHWC', 'HWIO', 'NHWC')
    x = lax.conv_general_dilated(padded, kernel.reshape(-1, 1, 1, 1), (1, 1), 'VALID', dimension_numbers=dims)
    x = lax.conv_general_dilated(x, kernel.reshape(1, -1, 1, 1), (1, 1), 'VALID', dimension_numbers=dims)
    return x[..., 0]


def median_seconds(fn, x, repeats: int) -> float:
    fn(x).block_until_ready()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn(x).block_until_ready()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--batch', type=int, default=512)
    parser.add_argument('--size', type=int, default=64)
    parser.add_argument('--sigmas', default='0.0625,0.25', help='fractions of the image side')
    parser.add_argument('--repeats', type=int, default=5)
    args = parser.parse_args()
    gray = jax.random.uniform(jax.random.PRNGKey(0), (args.batch, args.size, args.size))
    print(f'# {args.batch} images of {args.size} px on {jax.devices()[0].platform}')
    print(f'{"sigma":>7} {"matrix s":>9} {"conv s":>9} {"ratio":>6} {"max diff":>9}')
    for fraction in (float(s) for s in args.sigmas.split(',')):
        sigma = args.size * fraction
        matrix = jax.jit(lambda x, s=sigma: _blur(x, s))
        conv = jax.jit(lambda x, s=sigma: blur_by_convolution(x, s))
        t_matrix = median_seconds(matrix, gray, args.repeats)
        t_conv = median_seconds(conv, gray, args.repeats)
        diff = float(jnp.max(jnp.abs(matrix(gray) - conv(gray))))
        print(
            f'{fraction:>7g} {t_matrix:>9.3f} {t_conv:>9.3f} {t_conv / t_matrix:>6.1f} {diff:>9.1e}',
            flush=True,
        )


if __name__ == '__main__':
    main()
