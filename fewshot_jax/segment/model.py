"""The U-Net's pieces for training: model and variables, loss, train step.

Builders take plain values (an encoder's model dict, a decoder name, a class
count); the step is a pure ``(state, batch) -> (state, metrics)`` over the global
batch, jitted by ``sharding.jit_step`` like the pretraining step.

A batch is ``{'image': uint8 (B, R, R, 1 or 3), 'mask': uint8 (B, R, R)}`` with
mask values in {0, 1} (binary) or class ids in [0, C) (several classes).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np
import optax

from fewshot_jax.errors import ConfigError, is_count
from fewshot_jax.models import compute_dtype, make_encoder
from fewshot_jax.models.unet import (
    DOWNSAMPLING,
    SKIP_LAYERS,
    UNet,
    check_features,
    make_decoder,
)
from fewshot_jax.segment import metrics
from fewshot_jax.train_lib.state import TrainState

LOSSES = ('dice', 'dice_bce')
FROZEN = ('encoder',)


class SegmentConfigError(ConfigError):
    """A segmentation setting that cannot be used (names the config key and what is expected)."""


def check_positive_int(value, key: str, optional: bool = False) -> int | None:
    """``value`` as an int >= 1 (None allowed if ``optional``); else SegmentConfigError."""
    if value is None and optional:
        return None
    if not is_count(value):
        raise SegmentConfigError(
            f'{key}={value!r}: expected a positive integer' + (' or None' if optional else '')
        )
    return int(value)


def check_fraction(value, key: str, low_open: bool = False) -> float:
    """``value`` in [0, 1) (or (0, 1) with ``low_open``), else SegmentConfigError naming ``key``."""
    ok = (
        isinstance(value, (int, float))
        and not isinstance(value, bool)
        and (0 < value < 1 if low_open else 0 <= value < 1)
    )
    if not ok:
        raise SegmentConfigError(
            f'{key}={value!r}: expected a number in {"(0, 1)" if low_open else "[0, 1)"}'
        )
    return float(value)


def check_resolution(resolution, key: str = 'segment.resolutions') -> int:
    """Validates a training resolution: a positive multiple of 32."""
    if (
        isinstance(resolution, bool)
        or not isinstance(resolution, (int, np.integer))
        or resolution < DOWNSAMPLING
        or resolution % DOWNSAMPLING
    ):
        raise SegmentConfigError(
            f'{key}: resolution {resolution!r} must be a multiple of '
            f'{DOWNSAMPLING} (the encoder downsamples by {DOWNSAMPLING}), '
            f'e.g. 224, 256, 384, 512'
        )
    return int(resolution)


def build_unet(
    encoder_config: Mapping,
    decoder: str = 'paper',
    num_classes: int = 1,
    dtype: str | None = None,
    bn_momentum: float | None = None,
    decoder_width: int | None = None,
    encoder_features: bool = True,
) -> UNet:
    """The U-Net over the encoder described by ``encoder_config`` (a saved model dict).

    Args:
        encoder_config: the encoder's model dict (depth, width, variant, input_mean, …),
            e.g. ``Encoder.config``.
        decoder: 'paper' or 'unet' (see ``models.unet``).
        num_classes: 1 for a binary task (sigmoid), C >= 2 for several classes (softmax).
        dtype: compute dtype of encoder and decoder ('float32', 'bfloat16'); None keeps the
            encoder's.
        bn_momentum: the decoder's BatchNorm momentum (None: the decoder's default).
        decoder_width: scales the decoder's filters by ``decoder_width / 64``; None follows the
            encoder's width (a width-16 encoder gets a quarter-size decoder).
        encoder_features: False: the no-encoder control (the decoder sees zeros for the
            encoder's maps; ``models.unet.UNet``).
    """
    config = dict(encoder_config)
    if dtype is not None:
        config['dtype'] = dtype
    compute = compute_dtype(config.get('dtype', 'float32'))
    return UNet(
        encoder=make_encoder(config),
        decoder=make_decoder(
            decoder, int(decoder_width or config['width']), num_classes, compute, bn_momentum
        ),
        encoder_features=bool(encoder_features),
    )


def init_key(seed: int) -> jax.Array:
    """The initialisation key of ``seed``: XLA's RngBitGenerator ('rbg').

    Threefry initialisers of a whole ResNet compile for tens of seconds on a CPU;
    'rbg' takes a few. Its bits are reproducible on one backend, not across backends.
    """
    return jax.random.key(seed, impl='rbg')


def init_variables(model: UNet, encoder_variables: Mapping | None, seed: int) -> dict:
    """Random decoder variables beside the given encoder variables (numpy, host).

    Args:
        model: from :func:`build_unet`.
        encoder_variables: ``{'params', 'batch_stats'}`` of the encoder, or None to keep a
            random encoder (the random-init baseline).
        seed: seed of the random initialisation.

    Raises:
        SegmentConfigError: the encoder variables do not fit the encoder architecture.
    """
    dummy = jax.ShapeDtypeStruct((1, DOWNSAMPLING, DOWNSAMPLING, 3), jnp.float32)
    encoder_key, decoder_key = jax.random.split(init_key(seed))
    # Shapes only: the encoder's initialisers run (compile) only for a random encoder.
    expected = jax.eval_shape(lambda: model.encoder.lazy_init(encoder_key, dummy))
    if encoder_variables is None:
        encoder_vars = jax.device_get(jax.jit(lambda: model.encoder.lazy_init(encoder_key, dummy))())
    else:
        encoder_vars = {}
        for collection in ('params', 'batch_stats'):
            given = jax.device_get(encoder_variables[collection])
            want = jax.tree.map(lambda a: tuple(a.shape), expected[collection])
            got = jax.tree.map(np.shape, given)
            if jax.tree.structure(want) != jax.tree.structure(got) or want != got:
                raise SegmentConfigError(
                    f'the encoder weights do not fit a ResNet{model.encoder.depth} of width '
                    f'{model.encoder.width} ({collection} differ in names or shapes)'
                )
            encoder_vars[collection] = jax.tree.map(np.asarray, given)
    features = jax.eval_shape(lambda v: model.encoder.apply(v, jnp.zeros(dummy.shape))[1], encoder_vars)
    check_features(features)
    skips = {name: features[name] for name in SKIP_LAYERS}
    skips['image'] = dummy
    decoder_vars = jax.device_get(jax.jit(lambda: model.decoder.lazy_init(decoder_key, skips))())
    return {
        c: {'encoder': dict(encoder_vars[c]), 'decoder': dict(decoder_vars.get(c, {}))}
        for c in ('params', 'batch_stats')
    }


def model_input(images: jax.Array) -> jax.Array:
    """uint8 (or [0, 1] float) images (B, H, W, 1 or 3) → float32 (B, H, W, 3) in [0, 1]."""
    x = images.astype(jnp.float32)
    if images.dtype == jnp.uint8:
        x = x / 255.0
    return jnp.broadcast_to(x, (*x.shape[:3], 3))


def probabilities(logits: jax.Array) -> jax.Array:
    """Logits (…, C) → probabilities: sigmoid of the single channel (…,) or softmax (…, C)."""
    if logits.shape[-1] == 1:
        return jax.nn.sigmoid(logits[..., 0])
    return jax.nn.softmax(logits, axis=-1)


def make_loss(name: str, num_classes: int) -> Callable[[jax.Array, jax.Array], jax.Array]:
    """``loss(logits (B, H, W, C), masks (B, H, W)) -> scalar``.

    * 'dice': 1 − soft Dice, per image then averaged (the paper's loss); for several
      classes, averaged over the classes too.
    * 'dice_bce': that plus binary cross-entropy (softmax cross-entropy for classes).
    """
    if name not in LOSSES:
        raise SegmentConfigError(f'segment.loss={name!r}: expected one of {LOSSES}')
    with_ce = name == 'dice_bce'

    def loss(logits, masks):
        if num_classes == 1:
            value = metrics.dice_loss(jax.nn.sigmoid(logits[..., 0]), masks)
            return value + metrics.bce_loss(logits[..., 0], masks) if with_ce else value
        onehot = jax.nn.one_hot(masks, num_classes, dtype=jnp.float32)
        value = metrics.dice_loss(jax.nn.softmax(logits, axis=-1), onehot)
        if with_ce:
            value = value + jnp.mean(optax.softmax_cross_entropy(logits, onehot))
        return value

    return loss


def flip_rotate(key, images: jax.Array, masks: jax.Array):
    """The same random horizontal/vertical flip and quarter turn for each image and its mask.

    Args:
        key: PRNG key; each example draws its own transform from it.
        images: (B, R, R, C); square, so a quarter turn keeps the shape.
        masks: (B, R, R).
    """

    def one(key, image, mask):
        h_key, v_key, r_key = jax.random.split(key, 3)
        both = jnp.concatenate([image.astype(jnp.float32), mask[..., None].astype(jnp.float32)], axis=-1)
        both = jnp.where(jax.random.bernoulli(h_key), both[:, ::-1], both)
        both = jnp.where(jax.random.bernoulli(v_key), both[::-1], both)
        turns = jax.random.randint(r_key, (), 0, 4)
        both = jax.lax.switch(turns, [lambda x, k=k: jnp.rot90(x, k, axes=(0, 1)) for k in range(4)], both)
        return both[..., :-1].astype(image.dtype), both[..., -1].astype(mask.dtype)

    keys = jax.random.split(key, images.shape[0])
    return jax.vmap(one)(keys, images, masks)


def intensity_jitter(key, images: jax.Array) -> jax.Array:
    """Random contrast, brightness, gamma, illumination gradient and noise, per image.

    Micrographs of one kind differ in exposure, contrast and uneven illumination; a
    handful of labeled images cannot show them all. The mask is unchanged.

    Args:
        key: PRNG key; each example draws its own parameters.
        images: float32 (B, H, W, C) in [0, 1].

    Returns:
        float32 (B, H, W, C) in [0, 1].
    """

    def one(key, image):
        keys = jax.random.split(key, 7)
        uniform = lambda k, lo, hi: jax.random.uniform(k, (), jnp.float32, lo, hi)  # noqa: E731
        mean = jnp.mean(image)
        x = (image - mean) * uniform(keys[0], 0.6, 1.4) + mean + uniform(keys[1], -0.15, 0.15)
        x = jnp.clip(x, 0.0, 1.0) ** jnp.exp(uniform(keys[2], -0.5, 0.5))
        height, width = image.shape[:2]
        angle = uniform(keys[3], 0.0, 2 * jnp.pi)
        ys = jnp.linspace(-0.5, 0.5, height)[:, None, None]
        xs = jnp.linspace(-0.5, 0.5, width)[None, :, None]
        x = x + uniform(keys[4], 0.0, 0.3) * (jnp.cos(angle) * xs + jnp.sin(angle) * ys)
        noise = jax.random.normal(keys[5], image.shape) * uniform(keys[6], 0.0, 0.05)
        return jnp.clip(x + noise, 0.0, 1.0)

    return jax.vmap(one)(jax.random.split(key, images.shape[0]), images)


def invert_polarity(key, images: jax.Array, prob: float) -> jax.Array:
    """x -> 1 - x for each image with probability ``prob``; the mask is unchanged.

    Bright-field and dark-field (or positive and negative stain) micrographs show the
    same objects with opposite contrast; with a handful of labeled images one polarity
    may be missing from the training set altogether.

    Args:
        key: PRNG key; each example draws its own coin.
        images: float32 (B, H, W, C) in [0, 1].
        prob: probability of inverting an image.

    Returns:
        float32 (B, H, W, C) in [0, 1].
    """
    flip = jax.random.bernoulli(key, prob, (images.shape[0], 1, 1, 1))
    return jnp.where(flip, 1.0 - images, images)


def segment_step_fn(
    model: UNet,
    tx: optax.GradientTransformation,
    loss_fn: Callable,
    augment: bool = False,
    intensity: bool = False,
    invert_prob: float = 0.0,
):
    """The un-jitted U-Net train step (compile with ``sharding.jit_step``).

    The encoder cannot move: it runs with BatchNorm in inference mode behind
    ``stop_gradient`` (zero gradients) and the optimizer's freeze mask gives its
    params no update; the step also carries its params and statistics over
    unchanged, because adding a zero update turns a stored -0.0 into +0.0.

    Args:
        model: a :class:`UNet`.
        tx: the optimizer (with ``frozen=FROZEN``).
        loss_fn: from :func:`make_loss`.
        augment: draw a flip/quarter turn per example (``fold_in(rng, step)``).
        intensity: also jitter contrast, brightness, gamma, illumination and noise
            (:func:`intensity_jitter`).
        invert_prob: probability of inverting each example's intensities
            (:func:`invert_polarity`); 0 skips it.

    Returns:
        ``step(state, batch) -> (state, metrics)`` with metrics loss, dice, soft_dice.
    """

    def step(state: TrainState, batch):
        images, masks = batch['image'], batch['mask']
        step_key = jax.random.fold_in(state.rng, state.step)
        flip_key, intensity_key = jax.random.split(step_key)
        # Its own stream, so the flips and jitter draw what they drew before it existed.
        invert_key = jax.random.fold_in(step_key, 2)
        if augment:
            images, masks = flip_rotate(flip_key, images, masks)
        x = model_input(images)
        if invert_prob > 0:
            x = invert_polarity(invert_key, x, invert_prob)
        if intensity:
            x = intensity_jitter(intensity_key, x)

        def loss_of(params):
            logits, updates = model.apply(
                {'params': params, 'batch_stats': state.batch_stats}, x, train=True, mutable=['batch_stats']
            )
            return loss_fn(logits, masks), (updates['batch_stats'], logits)

        (loss, (batch_stats, logits)), grads = jax.value_and_grad(loss_of, has_aux=True)(state.params)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        params = {**params, 'encoder': state.params['encoder']}
        batch_stats = {**batch_stats, 'encoder': state.batch_stats['encoder']}
        prob = probabilities(logits)
        if prob.ndim == 4:  # several classes: score the foreground classes
            onehot = jax.nn.one_hot(masks, prob.shape[-1], dtype=jnp.float32)
            dice = jnp.mean(
                metrics.dice(jnp.moveaxis(prob, -1, 1)[:, 1:], jnp.moveaxis(onehot, -1, 1)[:, 1:])
            )
            soft = 1.0 - metrics.dice_loss(prob[..., 1:], onehot[..., 1:])
        else:
            dice = jnp.mean(metrics.dice(prob, masks))
            soft = jnp.mean(metrics.soft_dice(prob, masks))
        new_state = state.replace(
            step=state.step + 1, params=params, batch_stats=batch_stats, opt_state=opt_state
        )
        return new_state, {'loss': loss, 'dice': dice, 'soft_dice': soft, 'grad_norm': optax.tree.norm(grads)}

    return step
