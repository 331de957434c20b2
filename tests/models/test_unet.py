"""U-Net decoders: shapes at 224 and 1024 px, layer layout, frozen encoder, bad inputs."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fewshot_jax.models.unet import (
    ClassicDecoder,
    DecoderInputError,
    PaperDecoder,
    UNet,
    make_decoder,
    scaled_filters,
)
from fewshot_jax.segment.model import (
    FROZEN,
    build_unet,
    init_variables,
    make_loss,
    model_input,
    segment_step_fn,
)
from fewshot_jax.train_lib import sharding
from fewshot_jax.train_lib.optim import make_optimizer
from fewshot_jax.train_lib.state import TrainState

TINY = {'depth': 18, 'width': 4}


@pytest.fixture(scope='module')
def paper_unet():
    model = build_unet(TINY, 'paper', 1)
    return model, init_variables(model, None, seed=0)


@pytest.mark.parametrize('decoder', ['paper', 'unet'])
@pytest.mark.parametrize('size', [224, 1024])
def test_output_is_at_input_resolution(decoder, size):
    model = build_unet(TINY, decoder, num_classes=3)
    variables = init_variables(model, None, seed=0)
    out = jax.eval_shape(
        lambda v, x: model.apply(v, x), variables, jax.ShapeDtypeStruct((2, size, size, 3), jnp.float32)
    )
    assert out.shape == (2, size, size, 3) and out.dtype == jnp.float32


def test_paper_decoder_layout_follows_the_notebooks(paper_unet):
    _, variables = paper_unet
    decoder = variables['params']['decoder']
    # 1024, 512, 256, 128 filters scaled by width 4 / 64.
    assert scaled_filters((1024, 512, 256, 128), 4) == (64, 32, 16, 8)
    # stage4 of a width-4 ResNet18 has 32 channels; each block's input is the previous block's
    # output concatenated with the skip (stage3: 16, stage2: 8, stage1: 4, stem: 4 channels).
    expected_in = {'up0': 32, 'up1': 64 + 16, 'up2': 32 + 8, 'up3': 16 + 4}
    for i, feats in enumerate((64, 32, 16, 8)):
        layer = decoder[f'up{i}']
        assert set(layer) == {'kernel'}, 'upsample blocks have no bias'
        assert layer['kernel'].shape == (4, 4, expected_in[f'up{i}'], feats)
        assert decoder[f'bn{i}']['scale'].shape == (feats,)
    assert decoder['out']['kernel'].shape == (4, 4, 8 + 4, 1) and 'bias' in decoder['out']


def test_full_size_decoders_have_the_paper_filters():
    paper = make_decoder('paper', 64, 1)
    classic = make_decoder('unet', 64, 2)
    assert isinstance(paper, PaperDecoder) and paper.filters == (1024, 512, 256, 128)
    assert isinstance(classic, ClassicDecoder) and classic.filters == (512, 256, 128, 64, 32)
    with pytest.raises(ValueError, match="segment.decoder='fcn'"):
        make_decoder('fcn', 64, 1)


def test_sizes_not_divisible_by_32_are_refused(paper_unet):
    model, variables = paper_unet
    with pytest.raises(DecoderInputError, match='100x96 px.*multiples of 32'):
        model.apply(variables, jnp.zeros((1, 100, 96, 3)))


class _PooledOnly(nn.Module):
    """An encoder that exposes no intermediate maps."""

    @nn.compact
    def __call__(self, x, train=False):
        pooled = nn.Dense(4)(jnp.mean(x, axis=(1, 2)))
        return pooled, {'pooled': pooled}


def test_encoder_without_intermediates_is_refused():
    model = UNet(encoder=_PooledOnly(), decoder=make_decoder('paper', 4, 1))
    with pytest.raises(DecoderInputError, match=r"missing \['stem', 'stage1'"):
        model.init(jax.random.PRNGKey(0), jnp.zeros((1, 64, 64, 3)))


def test_no_gradient_reaches_the_encoder(paper_unet):
    model, variables = paper_unet
    x = jax.random.uniform(jax.random.PRNGKey(1), (2, 64, 64, 3))

    def loss(params):
        logits, _ = model.apply(
            {'params': params, 'batch_stats': variables['batch_stats']},
            x,
            train=True,
            mutable=['batch_stats'],
        )
        return jnp.mean(logits**2)

    grads = jax.grad(loss)(variables['params'])
    assert all(np.all(np.asarray(g) == 0) for g in jax.tree.leaves(grads['encoder']))
    assert any(np.any(np.asarray(g) != 0) for g in jax.tree.leaves(grads['decoder']))


def test_training_steps_leave_the_encoder_bit_identical():
    mesh = sharding.make_mesh(4)
    model = build_unet(TINY, 'paper', 1)
    variables = init_variables(model, None, seed=0)
    # A stored -0.0 must survive too (adding a zero update would turn it into +0.0).
    kernel = np.array(variables['params']['encoder']['conv1']['kernel'])
    kernel.flat[0] = -0.0
    variables['params']['encoder']['conv1']['kernel'] = kernel
    before = jax.tree.map(np.array, variables)
    tx = make_optimizer(_adam(), total_steps=3, frozen=FROZEN)
    state = sharding.replicate(TrainState.create(variables, tx, jax.random.PRNGKey(0)), mesh)
    step = sharding.jit_step(segment_step_fn(model, tx, make_loss('dice_bce', 1), augment=True), mesh)
    rng = np.random.default_rng(0)
    batch = {
        'image': rng.integers(0, 256, (4, 64, 64, 1), dtype=np.uint8),
        'mask': (rng.random((4, 64, 64)) < 0.3).astype(np.uint8),
    }
    for _ in range(3):
        state, metrics = step(state, sharding.to_global(batch, mesh))
    after = jax.device_get(state)
    assert np.isfinite(float(metrics['loss'])) and int(after.step) == 3
    for collection in ('params', 'batch_stats'):
        for (path, a), b in zip(
            jax.tree_util.tree_leaves_with_path(before[collection]['encoder']),
            jax.tree.leaves(getattr(after, collection)['encoder']),
            strict=True,
        ):
            assert a.dtype == b.dtype and a.tobytes() == b.tobytes(), jax.tree_util.keystr(path)
    moved = [
        np.max(np.abs(a - b))
        for a, b in zip(
            jax.tree.leaves(before['params']['decoder']),
            jax.tree.leaves(after.params['decoder']),
            strict=True,
        )
    ]
    assert min(moved) > 0, 'every decoder parameter is trained'
    stats_moved = [
        np.max(np.abs(a - b))
        for a, b in zip(
            jax.tree.leaves(before['batch_stats']['decoder']),
            jax.tree.leaves(after.batch_stats['decoder']),
            strict=True,
        )
    ]
    assert min(stats_moved) > 0, "the decoder's BatchNorm statistics update in training"


def test_bfloat16_compute_keeps_float32_params_and_logits():
    model = build_unet(TINY, 'unet', 1, dtype='bfloat16')
    variables = init_variables(model, None, seed=0)
    assert all(p.dtype == np.float32 for p in jax.tree.leaves(variables['params']))
    logits = model.apply(variables, model_input(jnp.zeros((1, 64, 64, 1), jnp.uint8)))
    assert logits.dtype == jnp.float32 and logits.shape == (1, 64, 64, 1)


def test_encoder_weights_must_fit_the_architecture():
    from fewshot_jax.segment.model import SegmentConfigError

    small = init_variables(build_unet(TINY, 'paper', 1), None, seed=0)
    wider = build_unet({'depth': 18, 'width': 8}, 'paper', 1)
    encoder = {c: small[c]['encoder'] for c in ('params', 'batch_stats')}
    with pytest.raises(SegmentConfigError, match='do not fit a ResNet18 of width 8'):
        init_variables(wider, encoder, seed=0)


def _adam():
    import ml_collections

    return ml_collections.ConfigDict({'name': 'adam', 'lr': 1e-2, 'warmup_steps': 0, 'end_lr': 1e-2})


def test_flips_and_turns_move_image_and_mask_together():
    from fewshot_jax.segment.model import flip_rotate, intensity_jitter

    rng = np.random.default_rng(3)
    masks = (rng.random((16, 32, 32)) < 0.3).astype(np.uint8)
    images = (masks * 255)[..., None].astype(np.uint8)
    out_images, out_masks = flip_rotate(jax.random.PRNGKey(0), images, masks)
    out_images, out_masks = np.asarray(out_images), np.asarray(out_masks)
    np.testing.assert_array_equal(out_images[..., 0] // 255, out_masks)
    # Each output is one of the 8 flips/turns of its input, and not all are the identity.
    for before, after in zip(masks, out_masks, strict=True):
        variants = [np.rot90(m, k) for m in (before, before[:, ::-1]) for k in range(4)]
        assert any(np.array_equal(after, v) for v in variants)
    assert any(not np.array_equal(a, b) for a, b in zip(masks, out_masks, strict=True))
    x = jnp.asarray(rng.random((4, 32, 32, 3)), jnp.float32)
    jittered = np.asarray(intensity_jitter(jax.random.PRNGKey(1), x))
    assert jittered.shape == x.shape and jittered.min() >= 0 and jittered.max() <= 1
    assert np.abs(jittered - np.asarray(x)).mean() > 0.01
    np.testing.assert_array_equal(jittered, np.asarray(intensity_jitter(jax.random.PRNGKey(1), x)))


def test_invert_polarity_inverts_whole_images_at_random():
    from fewshot_jax.segment.model import invert_polarity

    x = jnp.asarray(np.random.default_rng(4).random((64, 8, 8, 3)), jnp.float32)
    out = np.asarray(invert_polarity(jax.random.PRNGKey(0), x, 0.5))
    kept = [np.array_equal(o, np.asarray(i)) for o, i in zip(out, x, strict=True)]
    flipped = [np.allclose(o, 1.0 - np.asarray(i)) for o, i in zip(out, x, strict=True)]
    assert all(k != f for k, f in zip(kept, flipped, strict=True))  # each image: one or the other
    assert 16 < sum(flipped) < 48
    np.testing.assert_array_equal(np.asarray(invert_polarity(jax.random.PRNGKey(0), x, 0.0)), np.asarray(x))


@pytest.mark.parametrize(
    ('kernel', 'padding', 'bias'), [(4, 'SAME', False), (4, 'SAME', True), (2, 'VALID', True)]
)
def test_upconv_equals_flax_conv_transpose(kernel, padding, bias):
    from fewshot_jax.models.unet import UpConv

    x = jax.random.normal(jax.random.PRNGKey(0), (2, 5, 7, 6))
    ours = UpConv(4, kernel, 2, padding, use_bias=bias)
    theirs = nn.ConvTranspose(4, (kernel, kernel), (2, 2), padding=padding, use_bias=bias)
    params = theirs.init(jax.random.PRNGKey(1), x)
    if bias:  # a non-zero bias, so that it is compared too
        params = jax.tree.map(lambda p: p + 0.1, params)
    assert jax.tree.map(np.shape, ours.init(jax.random.PRNGKey(1), x)) == jax.tree.map(np.shape, params)
    expected = theirs.apply(params, x)
    got = ours.apply(params, x)
    assert got.shape == expected.shape == (2, 10, 14, 4)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
    # Gradients agree too (the reason UpConv exists is a faster backward pass on CPU).
    grad = lambda m: jax.grad(lambda p, x: jnp.sum(jnp.sin(m.apply(p, x))), (0, 1))  # noqa: E731
    for a, b in zip(
        jax.tree.leaves(grad(ours)(params, x)), jax.tree.leaves(grad(theirs)(params, x)), strict=True
    ):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
