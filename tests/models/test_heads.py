"""The projector's two layer orders, checked against a plain NumPy forward of each."""

import jax
import numpy as np
import pytest

from fewshot_jax.models.heads import Projector


def reference(variables, x, order, bn, train):
    """Dense → BN → ReLU ('standard') or Dense → ReLU → BN ('paper'), last layer Dense → BN."""
    params, stats = variables['params'], variables['batch_stats']
    eps = 1e-3 if order == 'paper' else 1e-5
    n = len(params) // 2
    for i in range(n):
        dense, norm = params[f'dense{i}'], params[f'bn{i}']
        x = x @ np.asarray(dense['kernel']) + np.asarray(dense['bias'])
        if order == 'paper' and i < n - 1:
            x = np.maximum(x, 0)
        if train and bn == 'batch':
            mean, var = x.mean(axis=0), x.var(axis=0)
        else:
            mean, var = np.asarray(stats[f'bn{i}']['mean']), np.asarray(stats[f'bn{i}']['var'])
        x = (x - mean) / np.sqrt(var + eps) * np.asarray(norm['scale']) + np.asarray(norm['bias'])
        if order == 'standard' and i < n - 1:
            x = np.maximum(x, 0)
    return x


@pytest.mark.parametrize(('order', 'bn'), [('standard', 'batch'), ('paper', 'batch'), ('paper', 'frozen')])
@pytest.mark.parametrize('train', [False, True])
def test_projector_layer_order(order, bn, train):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(16, 12)).astype(np.float32)
    module = Projector(features=(8, 6, 10), order=order, bn=bn)
    variables = module.init(jax.random.key(0), x)
    # Non-trivial BN parameters and statistics, so every ordering gives different numbers.
    variables = jax.tree.map(lambda a: a + rng.uniform(0.2, 0.5, a.shape).astype(a.dtype), variables)
    out, updates = module.apply(variables, x, train=train, mutable=['batch_stats'])
    np.testing.assert_allclose(out, reference(variables, x, order, bn, train), rtol=1e-4, atol=1e-5)
    # 'frozen' BN never moves its statistics (the notebook's projector kept 0 and 1 all run).
    moved = any(
        not np.array_equal(a, b)
        for a, b in zip(jax.tree.leaves(updates), jax.tree.leaves(variables['batch_stats']), strict=True)
    )
    assert moved == (train and bn == 'batch')


def test_orders_differ():
    """The two orders are different functions (else the test above proves nothing about order)."""
    x = np.random.default_rng(1).normal(size=(16, 12)).astype(np.float32)
    variables = Projector(features=(8, 6, 10)).init(jax.random.key(0), x)
    variables = jax.tree.map(lambda a: a + 0.3, variables)
    a = Projector(features=(8, 6, 10), order='standard').apply(variables, x)
    b = Projector(features=(8, 6, 10), order='paper').apply(variables, x)
    assert np.abs(a - b).max() > 1e-2
