"""U-Net decoders over a frozen ResNet encoder's named intermediate maps.

The encoder (``models.resnet.ResNet``) returns ``stem`` (H/2), ``stage1`` (H/4),
``stage2`` (H/8), ``stage3`` (H/16) and ``stage4`` (H/32). A decoder starts from
``stage4`` and climbs back to H, concatenating the skip of each level on the way.

* ``PaperDecoder`` (``decoder='paper'``) reproduces the original notebooks
  (paper Fig. 10): four upsample blocks — transposed conv 4×4, stride 2, no
  bias, then BatchNorm and ReLU — with 1024, 512, 256, 128 filters, each followed
  by concatenation with ``stage3``, ``stage2``, ``stage1``, ``stem``; then one
  transposed conv 4×4, stride 2 (with bias) to the class channels. Kernels of the
  blocks start from N(0, 0.02), the choice of the pix2pix ``upsample`` block this
  decoder follows; the output layer starts from Keras' default (Glorot uniform).
  At 224 px behind a ResNet50 it costs ≈ 23 GFLOP per image forward, against 4.1
  for the encoder: most of the work of training is here.
* ``ClassicDecoder`` (``decoder='unet'``): Ronneberger et al.'s decoder — at each
  level a 2×2 up-convolution, concatenation, two 3×3 conv + BN + ReLU; then a 1×1
  output convolution. Filters 512, 256, 128, 64, 32. A ResNet has no full-resolution
  stage, so the last level (H) concatenates the input image itself, as the first
  level of Ronneberger's contracting path would provide (``image_skip``; thin
  structures a few pixels wide need it).

Filters scale with the encoder's width (``width / 64``) so that the small test
encoders get proportionally small decoders.

``UNet`` puts encoder and decoder together with parameters under ``encoder`` and
``decoder``. The encoder always runs with BatchNorm in inference mode and every
map it hands over passes through ``jax.lax.stop_gradient``: the encoder's
params and batch statistics cannot change in training (the optimizer's freeze
mask additionally gives them no update at all). The model returns logits
(N, H, W, C) in float32: one channel (sigmoid) for a binary task, C ≥ 2
(softmax) for several classes.

``UNet(encoder_features=False)`` is the no-encoder control: the same decoder, fed
zeros where the encoder's maps would be, so its only input is the full-resolution
image skip (the classic decoder's last level: two 3×3 conv + BN + ReLU and the
1×1 output). It measures what a small convolutional network on the pixels alone
reaches with the same training; whatever an encoder adds is the gap over it. The
encoder still runs in the graph for its shapes, and XLA drops it as dead code.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from fewshot_jax.errors import is_count
from fewshot_jax.models.input_norm import normalise_input

SKIP_LAYERS = ('stem', 'stage1', 'stage2', 'stage3', 'stage4')
DECODERS = ('paper', 'unet')
DOWNSAMPLING = 32  # stage4 is at H/32: inputs must divide by it
PAPER_FILTERS = (1024, 512, 256, 128)
CLASSIC_FILTERS = (512, 256, 128, 64, 32)
REFERENCE_WIDTH = 64  # ResNet50's stem width, for which the filter counts above are given

_pix2pix_init = nn.initializers.normal(0.02)
_he_init = nn.initializers.variance_scaling(2.0, 'fan_in', 'normal')


class DecoderInputError(ValueError):
    """Inputs a U-Net cannot take: missing intermediates, or a size not divisible by 32."""


def scaled_filters(filters: tuple[int, ...], encoder_width: int) -> tuple[int, ...]:
    """Filter counts scaled by ``encoder_width / 64`` (at least 1 each)."""
    return tuple(max(1, round(f * encoder_width / REFERENCE_WIDTH)) for f in filters)


def check_features(features, needed=SKIP_LAYERS) -> None:
    missing = [name for name in needed if name not in features]
    if missing:
        raise DecoderInputError(
            f'the encoder gives intermediates {sorted(features)}; the U-Net decoder needs '
            f'{list(needed)} (missing {missing}): use a ResNet encoder from fewshot_jax.models'
        )


def _phase_taps(kernel: int, stride: int, padding: str):
    """For each output phase p (output index ``stride * m + p``), the kernel taps that reach it
    and the input offsets ``d`` (input index ``m + d``) they read, ordered by offset.

    This is ``lax.conv_transpose`` (no kernel flip) written out: the input dilated by
    ``stride``, padded by ``pad_a`` in front, convolved with the kernel, so output ``o``
    sums ``w[t] * x[(o + t - pad_a) / stride]`` over the taps t that make it an integer.
    """
    if padding == 'SAME':
        pad_a = kernel - 1 if stride > kernel - 1 else -(-(kernel + stride - 2) // 2)
    elif padding == 'VALID':
        pad_a = kernel - 1
    else:
        raise ValueError(f'padding={padding!r}: expected SAME or VALID')
    phases = []
    for p in range(stride):
        taps = sorted(((p + t - pad_a) // stride, t) for t in range(kernel) if (p + t - pad_a) % stride == 0)
        phases.append(([t for _, t in taps], [d for d, _ in taps]))
    return phases


class UpConv(nn.Module):
    """A stride-s transposed convolution computed as s² ordinary convolutions (one per output
    phase) interleaved into the larger map.

    Same parameters and outputs as ``nn.ConvTranspose(features, (k, k), (s, s), padding)``
    (tests compare them): the decoders' up-sampling layers. Written this way because XLA's
    CPU backend computes the gradient of a dilated (transposed) convolution 10-25x slower
    than the equivalent ordinary convolutions, and most of a U-Net's training work is there.

    Attributes:
        features: output channels.
        kernel: kernel side k.
        stride: up-sampling factor s.
        padding: 'SAME' (output s·H) or 'VALID' (output s·H + max(k − s, 0)), as in
            ``nn.ConvTranspose``; only k and s with a s·H output are supported.
        use_bias, kernel_init, dtype: as in ``nn.ConvTranspose``.
    """

    features: int
    kernel: int = 4
    stride: int = 2
    padding: str = 'SAME'
    use_bias: bool = True
    kernel_init: Any = nn.initializers.lecun_normal()
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x):
        k, s = self.kernel, self.stride
        w = self.param('kernel', self.kernel_init, (k, k, x.shape[-1], self.features), jnp.float32)
        phases = _phase_taps(k, s, self.padding)
        if any(len(taps) == 0 for taps, _ in phases):
            raise ValueError(f'UpConv kernel {k} stride {s}: some output phase has no taps')
        offsets = [d for _, ds in phases for d in ds]
        low, high = max(0, -min(offsets)), max(0, max(offsets))
        n, h, wd, _ = x.shape
        if self.padding == 'VALID' and k > s:
            raise ValueError(f'UpConv VALID with kernel {k} > stride {s} is not supported')
        x = x.astype(self.dtype)
        xp = jnp.pad(x, ((0, 0), (low, high), (low, high), (0, 0)))
        w = w.astype(self.dtype)
        rows = []
        for ty, dy in phases:
            row = []
            for tx, dx in phases:
                window = xp[
                    :,
                    low + dy[0] : low + dy[0] + h + len(dy) - 1,
                    low + dx[0] : low + dx[0] + wd + len(dx) - 1,
                ]
                row.append(
                    jax.lax.conv_general_dilated(
                        window,
                        w[jnp.asarray(ty)][:, jnp.asarray(tx)],
                        (1, 1),
                        'VALID',
                        dimension_numbers=('NHWC', 'HWIO', 'NHWC'),
                    )
                )
            rows.append(jnp.stack(row, axis=3))  # (N, H, W, phase x, C)
        y = jnp.stack(rows, axis=2).reshape(n, h * s, wd * s, self.features)
        if self.use_bias:
            y = y + self.param('bias', nn.initializers.zeros, (self.features,), jnp.float32).astype(
                self.dtype
            )
        return y


class PaperDecoder(nn.Module):
    """The original notebooks' transposed-convolution decoder.

    Attributes:
        num_classes: output channels (1 for a binary task).
        filters: channels of the four upsample blocks (already width-scaled).
        dtype: computation dtype; the output logits are float32.
        bn_momentum: BatchNorm running-average momentum (Keras' 0.99 in the notebooks; short
            runs want less, or the statistics used at test time lag the trained weights).
    """

    num_classes: int = 1
    filters: tuple[int, ...] = PAPER_FILTERS
    dtype: Any = jnp.float32
    bn_momentum: float = 0.99  # Keras' default, as in the notebooks

    @nn.compact
    def __call__(self, features, train: bool = False):
        check_features(features)
        x = features['stage4'].astype(self.dtype)
        skips = ('stage3', 'stage2', 'stage1', 'stem')
        for i, (feats, skip) in enumerate(zip(self.filters, skips, strict=True)):
            x = UpConv(
                feats,
                4,
                2,
                'SAME',
                use_bias=False,
                kernel_init=_pix2pix_init,
                dtype=self.dtype,
                name=f'up{i}',
            )(x)
            x = nn.BatchNorm(
                use_running_average=not train,
                momentum=self.bn_momentum,
                epsilon=1e-3,
                dtype=self.dtype,
                name=f'bn{i}',
            )(x)
            x = nn.relu(x)
            x = jnp.concatenate([x, features[skip].astype(self.dtype)], axis=-1)
        x = UpConv(
            self.num_classes,
            4,
            2,
            'SAME',
            kernel_init=nn.initializers.glorot_uniform(),
            dtype=self.dtype,
            name='out',
        )(x)
        return x.astype(jnp.float32)


class ClassicDecoder(nn.Module):
    """Ronneberger et al.'s U-Net decoder on the ResNet's skips.

    Attributes:
        num_classes: output channels (1 for a binary task).
        filters: channels of the five levels (H/16 … H), already width-scaled.
        dtype: computation dtype; the output logits are float32.
        bn_momentum: BatchNorm running-average momentum.
        image_skip: concatenate the input image (``features['image']``) at full resolution.
    """

    num_classes: int = 1
    filters: tuple[int, ...] = CLASSIC_FILTERS
    dtype: Any = jnp.float32
    bn_momentum: float = 0.9
    image_skip: bool = True

    @nn.compact
    def __call__(self, features, train: bool = False):
        check_features(features)
        x = features['stage4'].astype(self.dtype)
        skips = ('stage3', 'stage2', 'stage1', 'stem', 'image' if self.image_skip else None)
        if self.image_skip and 'image' not in features:
            raise DecoderInputError("image_skip needs the input image as features['image']")
        for i, (feats, skip) in enumerate(zip(self.filters, skips, strict=True)):
            x = UpConv(feats, 2, 2, 'VALID', kernel_init=_he_init, dtype=self.dtype, name=f'up{i}')(x)
            if skip is not None:
                x = jnp.concatenate([x, features[skip].astype(self.dtype)], axis=-1)
            for j in range(2):
                x = nn.Conv(
                    feats,
                    (3, 3),
                    padding='SAME',
                    use_bias=False,
                    dtype=self.dtype,
                    kernel_init=_he_init,
                    name=f'conv{i}_{j}',
                )(x)
                x = nn.BatchNorm(
                    use_running_average=not train,
                    momentum=self.bn_momentum,
                    epsilon=1e-5,
                    dtype=self.dtype,
                    name=f'bn{i}_{j}',
                )(x)
                x = nn.relu(x)
        x = nn.Conv(self.num_classes, (1, 1), dtype=self.dtype, name='out')(x)
        return x.astype(jnp.float32)


class UNet(nn.Module):
    """Frozen encoder + trainable decoder; ``apply(vars, images, train)`` → logits (N, H, W, C).

    Attributes:
        encoder: a ResNet returning ``(pooled, intermediates)``.
        decoder: ``PaperDecoder`` or ``ClassicDecoder``.
        encoder_features: False feeds the decoder zeros instead of the encoder's maps
            (the no-encoder control; only a decoder with the image skip learns anything).
    """

    encoder: nn.Module
    decoder: nn.Module
    encoder_features: bool = True

    def __call__(self, images, train: bool = False):
        height, width = images.shape[1:3]
        if height % DOWNSAMPLING or width % DOWNSAMPLING:
            raise DecoderInputError(
                f'U-Net input of {height}x{width} px: both sides must be multiples of '
                f'{DOWNSAMPLING} (the encoder downsamples by {DOWNSAMPLING})'
            )
        # BatchNorm in inference mode whatever `train` says: the encoder stays as pretrained.
        _, intermediates = self.encoder(images, train=False)
        check_features(intermediates)
        if self.encoder_features:
            skips = {name: jax.lax.stop_gradient(intermediates[name]) for name in SKIP_LAYERS}
        else:
            # Zeros of the maps' shapes: the encoder's output is unused, so XLA removes it.
            skips = {name: jnp.zeros_like(intermediates[name]) for name in SKIP_LAYERS}
        # The full-resolution input, for decoders that use it — as the encoder sees it when
        # the encoder normalises micrographs itself (background, contrast, polarity).
        input_norm = getattr(self.encoder, 'input_norm', 'channel')
        if input_norm != 'channel':
            skips['image'] = normalise_input(
                images, input_norm, self.encoder.background_sigma, None, self.encoder.input_std
            )
        else:
            skips['image'] = images
        return self.decoder(skips, train=train)


def make_decoder(
    name: str, encoder_width: int, num_classes: int, dtype=jnp.float32, bn_momentum: float | None = None
) -> nn.Module:
    """The decoder called ``name`` ('paper' or 'unet'), its filters scaled to the encoder width.

    Args:
        bn_momentum: None keeps the decoder's default (paper 0.99, unet 0.9).

    Raises:
        ValueError: an unknown decoder name, a class count below 1, a momentum outside [0, 1).
    """
    if not is_count(num_classes):
        raise ValueError(f'num_classes={num_classes!r}: expected 1 (binary) or the number of classes (>= 2)')
    extra = {}
    if bn_momentum is not None:
        if not 0 <= bn_momentum < 1:
            raise ValueError(f'segment.bn_momentum={bn_momentum!r}: expected a value in [0, 1)')
        extra['bn_momentum'] = float(bn_momentum)
    if name == 'paper':
        return PaperDecoder(num_classes, scaled_filters(PAPER_FILTERS, encoder_width), dtype, **extra)
    if name == 'unet':
        return ClassicDecoder(num_classes, scaled_filters(CLASSIC_FILTERS, encoder_width), dtype, **extra)
    raise ValueError(f'segment.decoder={name!r}: expected one of {DECODERS}')
