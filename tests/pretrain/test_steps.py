"""The SSL step: global-batch semantics across device counts, donation, metrics."""

import jax
import numpy as np
import pytest

from fewshot_jax.pretrain import steps
from fewshot_jax.pretrain.task import build_ssl
from fewshot_jax.train_lib import sharding
from tests.conftest import tiny_ssl_config


def run_one_step(config, num_devices, images):
    mesh = sharding.make_mesh(num_devices)
    build = build_ssl(config, mesh, total_steps=10)
    state, metrics = build.step_fn(build.state, sharding.to_global(images, mesh))
    return jax.device_get((state, metrics))


@pytest.mark.parametrize('method', ['barlow_twins', 'simclr'])
def test_step_on_8_devices_equals_step_on_1(method):
    assert jax.device_count() == 8, 'conftest sets 8 fake CPU devices'
    config = tiny_ssl_config(method)
    config.optim.warmup_steps = 0
    # Small lr: the comparison is of the computation, and Barlow Twins' gradients are
    # large (~1e3), so at lr 0.1 float32 reduction order alone moves params by ~1e-5.
    config.optim.lr = 0.01
    images = np.random.default_rng(0).integers(0, 256, (16, 32, 32, 3), dtype=np.uint8)
    one_state, one_metrics = run_one_step(config, 1, images)
    eight_state, eight_metrics = run_one_step(config, 8, images)
    assert np.isfinite(one_metrics['loss'])
    np.testing.assert_allclose(eight_metrics['loss'], one_metrics['loss'], rtol=1e-5, atol=1e-5)
    for name in ('params', 'batch_stats'):
        one, eight = getattr(one_state, name), getattr(eight_state, name)
        for path_leaf_a, leaf_b in zip(
            jax.tree_util.tree_leaves_with_path(one), jax.tree.leaves(eight), strict=True
        ):
            path, leaf_a = path_leaf_a
            np.testing.assert_allclose(
                leaf_b, leaf_a, rtol=1e-5, atol=1e-5, err_msg=f'{name} {jax.tree_util.keystr(path)}'
            )
    # The step really moved the params (the comparison above is not vacuous).
    init = jax.device_get(build_ssl(config, sharding.make_mesh(1), total_steps=10).state)
    moved = jax.tree.map(lambda a, b: float(np.max(np.abs(a - b))), one_state.params, init.params)
    assert max(jax.tree.leaves(moved)) > 1e-3
    assert int(one_state.step) == 1


def test_global_batch_must_split_over_devices():
    mesh = sharding.make_mesh(8)
    with pytest.raises(ValueError, match=r'data.batch_size=12 .*\(8 devices'):
        sharding.check_global_batch(12, mesh)
    assert sharding.check_global_batch(16, mesh) == 16


def test_unknown_loss_is_named():
    config = tiny_ssl_config()
    config.loss.name = 'byol'
    with pytest.raises(ValueError, match="loss.name='byol'"):
        steps.make_ssl_loss(config.loss)
