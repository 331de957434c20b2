"""ResNet: torchvision-compatible names and shapes, intermediates, variants, dtypes."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util

from fewshot_jax.models.resnet import LAYER_NAMES, ResNet, feature_dim


def torchvision_resnet50_shapes(width=64):
    """Every parameter/statistic of torchvision's resnet50 (minus fc), written out by hand.

    Returns {torchvision key: torch shape}; conv weights are (out, in, kh, kw).
    """
    shapes = {'conv1.weight': (width, 3, 7, 7)}
    for stat in ('weight', 'bias', 'running_mean', 'running_var'):
        shapes[f'bn1.{stat}'] = (width,)
    in_ch = width
    for stage, blocks in enumerate((3, 4, 6, 3), start=1):
        mid = width * 2 ** (stage - 1)
        out = mid * 4
        for b in range(blocks):
            pre = f'layer{stage}.{b}'
            shapes[f'{pre}.conv1.weight'] = (mid, in_ch, 1, 1)
            shapes[f'{pre}.conv2.weight'] = (mid, mid, 3, 3)
            shapes[f'{pre}.conv3.weight'] = (out, mid, 1, 1)
            for bn, ch in (('bn1', mid), ('bn2', mid), ('bn3', out)):
                for stat in ('weight', 'bias', 'running_mean', 'running_var'):
                    shapes[f'{pre}.{bn}.{stat}'] = (ch,)
            if b == 0:
                shapes[f'{pre}.downsample.0.weight'] = (out, in_ch, 1, 1)
                for stat in ('weight', 'bias', 'running_mean', 'running_var'):
                    shapes[f'{pre}.downsample.1.{stat}'] = (out,)
            in_ch = out
    return shapes


def flax_to_torch_key(path):
    """('layer1_0', 'downsample_bn', 'scale') → 'layer1.0.downsample.1.weight'."""
    module = '.'.join(path[:-1])
    module = module.replace('_0.', '.0.')
    for i in range(1, 30):
        module = module.replace(f'_{i}.', f'.{i}.')
    module = module.replace('downsample_conv', 'downsample.0').replace('downsample_bn', 'downsample.1')
    leaf = {
        'kernel': 'weight',
        'scale': 'weight',
        'bias': 'bias',
        'mean': 'running_mean',
        'var': 'running_var',
    }[path[-1]]
    return f'{module}.{leaf}'


def test_resnet50_matches_torchvision_layout_one_to_one():
    model = ResNet(depth=50)
    variables = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 64, 64, 3))))
    flat = {}
    for collection in ('params', 'batch_stats'):
        for path, leaf in traverse_util.flatten_dict(variables[collection]).items():
            shape = leaf.shape
            if len(shape) == 4:  # HWIO → OIHW
                shape = (shape[3], shape[2], shape[0], shape[1])
            flat[flax_to_torch_key(path)] = shape
    expected = torchvision_resnet50_shapes()
    assert set(flat) == set(expected)
    assert flat == expected
    n_params = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(variables['params']))
    assert n_params == 23_508_032  # torchvision resnet50 without fc (25,557,032 − 2,049,000)


@pytest.mark.parametrize(
    'depth,width,channels',
    [
        (18, 4, (4, 4, 8, 16, 32)),
        (50, 4, (4, 16, 32, 64, 128)),
    ],
)
def test_intermediates_names_strides_channels(depth, width, channels):
    model = ResNet(depth=depth, width=width)
    x = jnp.asarray(np.random.default_rng(0).uniform(size=(2, 64, 64, 3)), jnp.float32)
    variables = model.init(jax.random.key(0), x)
    pooled, inter = model.apply(variables, x)
    assert list(inter) == ['stem', 'stage1', 'stage2', 'stage3', 'stage4', 'pooled']
    sizes = (32, 16, 8, 4, 2)
    for name, size, ch in zip(('stem', 'stage1', 'stage2', 'stage3', 'stage4'), sizes, channels, strict=True):
        assert inter[name].shape == (2, size, size, ch), name
    assert pooled.shape == (2, feature_dim(depth, width))
    np.testing.assert_allclose(pooled, inter['stage4'].mean(axis=(1, 2)), rtol=1e-6, atol=1e-6)


def test_keras_variant_strides_first_conv_and_has_biases():
    x = jnp.zeros((1, 64, 64, 3))
    v15 = jax.eval_shape(lambda: ResNet(depth=50, width=4).init(jax.random.key(0), x))
    keras = jax.eval_shape(lambda: ResNet(depth=50, width=4, variant='keras').init(jax.random.key(0), x))
    assert 'bias' not in v15['params']['layer2_0']['conv1']
    assert keras['params']['layer2_0']['conv1']['bias'].shape == (8,)
    assert keras['params']['conv1']['bias'].shape == (4,)

    # Where the stride sits: probe the intermediate after conv1 of layer2_0.
    def conv1_out(variant):
        model = ResNet(depth=50, width=4, variant=variant)
        variables = model.init(jax.random.key(0), x)
        _, state = model.apply(variables, x, capture_intermediates=True, mutable=['intermediates'])
        return state['intermediates']['layer2_0']['conv1']['__call__'][0].shape

    assert conv1_out('v1.5') == (1, 16, 16, 8)
    assert conv1_out('keras') == (1, 8, 8, 8)


def test_batchnorm_modes_and_bf16():
    x = jnp.asarray(np.random.default_rng(1).uniform(size=(4, 32, 32, 3)), jnp.float32)
    model = ResNet(depth=18, width=4)
    variables = model.init(jax.random.key(0), x)
    eval_out, _ = model.apply(variables, x, train=False)
    (train_out, _), updates = model.apply(variables, x, train=True, mutable=['batch_stats'])
    assert not np.allclose(eval_out, train_out)
    changed = jax.tree.map(
        lambda a, b: bool(jnp.any(a != b)), variables['batch_stats'], updates['batch_stats']
    )
    assert all(jax.tree.leaves(changed))

    bf16 = ResNet(depth=18, width=4, dtype=jnp.bfloat16)
    pooled, inter = bf16.apply(variables, x)
    assert inter['stage4'].dtype == jnp.bfloat16
    assert pooled.dtype == jnp.float32
    np.testing.assert_allclose(pooled, eval_out, rtol=0.1, atol=0.05)


def test_bad_arguments_are_named():
    x = jnp.zeros((1, 32, 32, 3))
    with pytest.raises(ValueError, match='model.depth=42'):
        ResNet(depth=42).init(jax.random.key(0), x)
    with pytest.raises(ValueError, match="model.variant='v2'"):
        ResNet(variant='v2').init(jax.random.key(0), x)
    with pytest.raises(ValueError, match=r'\(N, H, W, 3\)'):
        ResNet(depth=18, width=4).init(jax.random.key(0), jnp.zeros((1, 32, 32)))
    with pytest.raises(ValueError, match="model.stem='cifar'"):
        ResNet(depth=18, width=4, stem='cifar').init(jax.random.key(0), x)


@pytest.mark.parametrize(
    'stem, strides',
    [
        ('imagenet', (2, 4, 8, 16, 32)),
        ('small', (1, 1, 2, 4, 8)),
    ],
)
def test_stem_strides_of_each_intermediate(stem, strides):
    x = jnp.asarray(np.random.default_rng(2).uniform(size=(2, 32, 32, 3)), jnp.float32)
    model = ResNet(depth=18, width=4, stem=stem)
    variables = model.init(jax.random.key(0), x)
    pooled, inter = model.apply(variables, x)
    assert list(inter) == list(LAYER_NAMES)
    channels = (4, 4, 8, 16, 32)
    for name, stride, ch in zip(LAYER_NAMES[:5], strides, channels, strict=True):
        assert inter[name].shape == (2, 32 // stride, 32 // stride, ch), name
    np.testing.assert_allclose(pooled, inter['stage4'].mean(axis=(1, 2)), rtol=1e-6, atol=1e-6)


def test_small_stem_has_a_3x3_first_conv_and_otherwise_the_same_parameters():
    x = jnp.zeros((1, 32, 32, 3))
    imagenet = jax.eval_shape(lambda: ResNet(depth=18, width=4).init(jax.random.key(0), x))
    small = jax.eval_shape(lambda: ResNet(depth=18, width=4, stem='small').init(jax.random.key(0), x))
    assert imagenet['params']['conv1']['kernel'].shape == (7, 7, 3, 4)
    assert small['params']['conv1']['kernel'].shape == (3, 3, 3, 4)
    shapes = lambda tree: {k: v.shape for k, v in traverse_util.flatten_dict(tree).items()}  # noqa: E731
    flat_imagenet, flat_small = shapes(imagenet['params']), shapes(small['params'])
    del flat_imagenet[('conv1', 'kernel')], flat_small[('conv1', 'kernel')]
    assert flat_imagenet == flat_small
    assert shapes(imagenet['batch_stats']) == shapes(small['batch_stats'])


def _pool_grad_inputs():
    # Post-ReLU values rounded to a coarse grid: many exact ties inside windows and
    # across overlapping windows, plus zeros (the case that decides the tie rule).
    rng = np.random.default_rng(3)
    for shape in [(2, 8, 8, 3), (1, 7, 9, 2), (3, 5, 6, 4)]:
        yield np.maximum(np.round(rng.normal(size=shape) * 2) / 2, 0).astype(np.float32)


@pytest.mark.parametrize('x', list(_pool_grad_inputs()), ids=lambda x: str(x.shape))
def test_dense_max_pool_gradient_equals_xla_to_the_bit(x):
    import flax.linen as nn

    from fewshot_jax.models.max_pool import dense_grad_max_pool

    def xla_pool(v):
        return nn.max_pool(v, (3, 3), (2, 2), padding=[(1, 1), (1, 1)])

    cotangent = np.random.default_rng(4).normal(size=xla_pool(x).shape).astype(np.float32)
    y_xla, vjp_xla = jax.vjp(xla_pool, jnp.asarray(x))
    y_dense, vjp_dense = jax.vjp(dense_grad_max_pool, jnp.asarray(x))
    np.testing.assert_array_equal(np.asarray(y_dense), np.asarray(y_xla))
    np.testing.assert_array_equal(np.asarray(vjp_dense(cotangent)[0]), np.asarray(vjp_xla(cotangent)[0]))
    # The forward pass against a plain loop over windows.
    n, h, w, c = x.shape
    ref = np.full(y_xla.shape, -np.inf, np.float32)
    for i in range(ref.shape[1]):
        for j in range(ref.shape[2]):
            for a in range(2 * i - 1, 2 * i + 2):
                for b in range(2 * j - 1, 2 * j + 2):
                    if 0 <= a < h and 0 <= b < w:
                        ref[:, i, j] = np.maximum(ref[:, i, j], x[:, a, b])
    np.testing.assert_array_equal(np.asarray(y_dense), ref)


def test_resnet_max_pool_grad_choices_give_the_same_gradients():
    images = jax.random.uniform(jax.random.PRNGKey(0), (2, 32, 32, 3))
    grads = {}
    for choice in ('xla', 'dense', 'auto'):
        model = ResNet(depth=18, width=4, max_pool_grad=choice)
        variables = model.init(jax.random.PRNGKey(1), images)

        def loss(params, model=model, variables=variables):
            pooled, _ = model.apply({**variables, 'params': params}, images)
            return jnp.sum(pooled**2)

        grads[choice] = jax.grad(loss)(variables['params'])
    for choice in ('dense', 'auto'):
        jax.tree.map(np.testing.assert_array_equal, grads[choice], grads['xla'])


def test_bad_max_pool_grad_is_a_config_error():
    from fewshot_jax.errors import ConfigError
    from fewshot_jax.models import make_encoder

    with pytest.raises(ConfigError, match="model.max_pool_grad='fast'"):
        make_encoder({'depth': 18, 'width': 4, 'max_pool_grad': 'fast'})
