"""Supervised ceiling of the demo architecture on the synthetic tasks.

How well can the demo encoder (ResNet18 at width 16, the project's
`fewshot_jax.models.make_encoder`) do on a synthetic task when it is given
many labels? It is trained from scratch with a linear head, Adam and random
flips (horizontal, vertical, diagonal) on `--per_class` labeled images per
class, and tested on a held-out set drawn with another seed. A benchmark can
only show label efficiency if this ceiling is high (the calibration target is
>= 0.85 at 200 images per class).

    python benchmarks/supervised_ceiling.py --size 64 --per_class 200 --steps 2000

2000 steps at batch 64 (128-213 epochs of 600-1000 images) fit every training
set (training accuracy 1.000); 1000 steps gave test accuracies 0.01-0.05 lower
and 400 steps far lower (viruses 0.58-0.68, training accuracy below 0.9).
One run takes about 2 minutes on a GPU and 15-20 minutes on a busy 2-core
CPU. The Eigen-convolution XLA flag (`fewshot_jax.train_lib.xla_setup`) is applied
before JAX starts.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import time

from fewshot_jax.train_lib.xla_setup import prefer_eigen_convolutions_on_cpu

prefer_eigen_convolutions_on_cpu()  # before JAX starts: faster convolutions on a CPU

import flax.linen as nn  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402

from fewshot_jax.data import synthetic  # noqa: E402
from fewshot_jax.models import make_encoder  # noqa: E402

TASKS = ('nanowires', 'nanoparticles', 'viruses')
# Test images come from a seed offset so that they never coincide with training images.
TEST_SEED_OFFSET = 1_000_003


@dataclasses.dataclass(frozen=True)
class CeilingResult:
    """Outcome of one supervised run: accuracies and the test confusion matrix (rows: truth)."""

    train_accuracy: float
    test_accuracy: float
    confusion: np.ndarray


class _Classifier(nn.Module):
    """Encoder plus a linear head; grayscale inputs are repeated to 3 channels."""

    depth: int
    width: int
    num_classes: int

    @nn.compact
    def __call__(self, images, train: bool = False):
        rgb = jnp.repeat(images[..., None], 3, axis=-1)
        pooled, _ = make_encoder({'depth': self.depth, 'width': self.width})(rgb, train=train)
        return nn.Dense(self.num_classes, name='head')(pooled)


def _flip(key, images):
    """Random horizontal, vertical and diagonal flips, per image (the 8 symmetries of a square).

    Micrographs have no preferred orientation, so every flip is label-preserving.
    """
    kh, kv, kd = jax.random.split(key, 3)
    n = images.shape[0]
    h = jax.random.bernoulli(kh, 0.5, (n, 1, 1))
    v = jax.random.bernoulli(kv, 0.5, (n, 1, 1))
    d = jax.random.bernoulli(kd, 0.5, (n, 1, 1))
    images = jnp.where(h, images[:, :, ::-1], images)
    images = jnp.where(v, images[:, ::-1, :], images)
    return jnp.where(d, jnp.swapaxes(images, 1, 2), images)


def train_and_test(
    train_x: np.ndarray,
    train_y: np.ndarray,
    test_x: np.ndarray,
    test_y: np.ndarray,
    num_classes: int,
    steps: int = 2000,
    batch: int = 64,
    lr: float = 1e-3,
    seed: int = 0,
    depth: int = 18,
    width: int = 16,
) -> CeilingResult:
    """Trains the classifier from scratch and tests it on held-out images.

    Args:
      train_x, test_x: float32 (n, H, W) images in [0, 1].
      train_y, test_y: int labels.
      num_classes: number of classes.
      steps: Adam steps at batch size `batch` (batches are drawn with replacement).
      lr: Adam learning rate, cosine-decayed to 0.
      seed: initialisation, batch and flip seed.
      depth, width: ResNet depth and stem width.
    """
    model = _Classifier(depth, width, num_classes)
    key = jax.random.PRNGKey(seed)
    variables = model.init(key, jnp.zeros((1,) + train_x.shape[1:]), train=False)
    params, stats = variables['params'], variables['batch_stats']
    tx = optax.adam(optax.cosine_decay_schedule(lr, steps))
    opt = tx.init(params)

    @jax.jit
    def step(params, stats, opt, key, x, y):
        x = _flip(key, x)

        def loss_fn(p):
            logits, new = model.apply(
                {'params': p, 'batch_stats': stats}, x, train=True, mutable=['batch_stats']
            )
            return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean(), new

        (loss, new), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
        updates, opt = tx.update(grads, opt, params)
        return optax.apply_updates(params, updates), new['batch_stats'], opt, loss

    @jax.jit
    def predict(params, stats, x):
        return model.apply({'params': params, 'batch_stats': stats}, x, train=False).argmax(-1)

    rng = np.random.default_rng(seed)
    for i in range(steps):
        idx = rng.integers(0, len(train_x), batch)
        params, stats, opt, _ = step(
            params, stats, opt, jax.random.fold_in(key, i), train_x[idx], train_y[idx]
        )

    def predictions(x):
        return np.concatenate(
            [np.asarray(predict(params, stats, x[i : i + 256])) for i in range(0, len(x), 256)]
        )

    train_pred, test_pred = predictions(train_x), predictions(test_x)
    confusion = np.zeros((num_classes, num_classes), np.int64)
    np.add.at(confusion, (np.asarray(test_y), test_pred), 1)
    return CeilingResult(
        float((train_pred == train_y).mean()), float((test_pred == test_y).mean()), confusion
    )


@functools.lru_cache(maxsize=8)
def _data(task: str, per_class: int, size: int, seed: int):
    return getattr(synthetic, task)(per_class, size, seed)


def supervised_ceiling(
    task: str,
    size: int = 64,
    per_class: int = 200,
    test_per_class: int = 100,
    steps: int = 2000,
    seed: int = 0,
) -> CeilingResult:
    """Train and test accuracy of the demo architecture trained with all labels.

    Training images: `task(per_class, size, seed)`; test images: the same task
    at seed + TEST_SEED_OFFSET (disjoint random streams).
    """
    train = _data(task, per_class, size, seed)
    test = _data(task, test_per_class, size, seed + TEST_SEED_OFFSET)
    return train_and_test(
        train.images,
        train.labels,
        test.images,
        test.labels,
        len(train.class_names),
        steps=steps,
        seed=seed,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--tasks', default=','.join(TASKS))
    parser.add_argument('--size', type=int, default=64, help='generated image size (px)')
    parser.add_argument('--per_class', type=int, default=200, help='training images per class')
    parser.add_argument('--test_per_class', type=int, default=100)
    parser.add_argument('--steps', type=int, default=2000, help='Adam steps at batch 64')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--confusion', action='store_true', help='print the test confusion')
    args = parser.parse_args()
    for task in args.tasks.split(','):
        start = time.perf_counter()
        result = supervised_ceiling(
            task, args.size, args.per_class, args.test_per_class, args.steps, args.seed
        )
        print(
            f'{task:14s} {args.size}px | ResNet18 w16 from scratch, {args.per_class}/class, '
            f'{args.steps} Adam steps, seed {args.seed} | train acc {result.train_accuracy:.3f} | '
            f'test acc ({args.test_per_class}/class) {result.test_accuracy:.3f} | '
            f'{time.perf_counter() - start:.0f}s',
            flush=True,
        )
        if args.confusion:
            print('  test confusion (rows: true class):', result.confusion.tolist(), flush=True)


if __name__ == '__main__':
    main()
