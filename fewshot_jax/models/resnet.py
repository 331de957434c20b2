"""ResNet encoders (18/34/50/101) whose parameters map one-to-one onto torchvision's.

Naming follows torchvision's state dict so that weight import is a rename plus a
transpose: ``conv1``/``bn1`` are the stem, ``layer{s}_{b}`` is block ``b`` of
stage ``s`` (torchvision ``layer{s}.{b}``) with children ``conv1..conv3``,
``bn1..bn3`` and ``downsample_conv``/``downsample_bn`` (torchvision
``downsample.0``/``downsample.1``).

Two architectures share that layout:

* ``variant='v1.5'`` (default, torchvision): the stride of a bottleneck block
  sits in its 3x3 convolution; convolutions have no bias; BatchNorm eps 1e-5.
* ``variant='keras'`` (``keras.applications.ResNet50``, v1): the stride sits in
  the first 1x1 convolution; every convolution has a bias; BatchNorm eps
  1.001e-5. The paper's published encoders use this architecture.

The model takes float images in [0, 1], shape (N, H, W, 3), normalises them with
fixed per-channel statistics (ImageNet by default, as the imported weights
expect) and returns ``(pooled, intermediates)`` where ``intermediates`` holds
``stem``, ``stage1`` … ``stage4`` and ``pooled`` (global average pool). Their
strides (input pixels per feature-map pixel) depend on the stem:

=========  ==========================================  ====  ======  ======  ======  ======
stem       first layers                                stem  stage1  stage2  stage3  stage4
=========  ==========================================  ====  ======  ======  ======  ======
imagenet   7x7 conv stride 2, BN, ReLU, 3x3 max-pool    2     4       8       16      32
small      3x3 conv stride 1, BN, ReLU (no max-pool)    1     1       2       4       8
=========  ==========================================  ====  ======  ======  ======  ======

(``stem`` is taken before the max-pool.) The 'small' stem (as in CIFAR-style
ResNets) keeps 32-96 px images from shrinking to 1-3 px maps at stage4; it
costs about 16x the compute of the 'imagenet' stem at the same input size.
Its ``conv1`` kernel is 3x3, so ImageNet weights do not fit it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from fewshot_jax.models.input_norm import BACKGROUND_SIGMA, INPUT_NORMS, normalise_input
from fewshot_jax.models.max_pool import stem_max_pool

STAGE_DEPTHS = {
    18: (2, 2, 2, 2),
    34: (3, 4, 6, 3),
    50: (3, 4, 6, 3),
    101: (3, 4, 23, 3),
}
BOTTLENECK_DEPTHS = frozenset({50, 101})
VARIANTS = ('v1.5', 'keras')
STEMS = ('imagenet', 'small')
# The channel order the stem's kernel was trained on: Keras applications weights
# were trained on BGR ('caffe') inputs, everything else here on RGB.
CHANNEL_ORDERS = ('rgb', 'bgr')
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
LAYER_NAMES = ('stem', 'stage1', 'stage2', 'stage3', 'stage4', 'pooled')

# He-normal fan-out, torchvision's choice for ResNet convolutions.
_conv_init = nn.initializers.variance_scaling(2.0, 'fan_out', 'normal')


class _Block(nn.Module):
    """One residual block (basic for ResNet18/34, bottleneck for 50/101)."""

    width: int
    stride: int
    bottleneck: bool
    variant: str
    dtype: Any
    zero_init_residual: bool

    @nn.compact
    def __call__(self, x, train: bool):
        keras = self.variant == 'keras'
        eps = 1.001e-5 if keras else 1e-5
        conv = lambda feats, k, s, name: nn.Conv(  # noqa: E731
            feats,
            (k, k),
            (s, s),
            padding=[(k // 2, k // 2)] * 2,
            use_bias=keras,
            dtype=self.dtype,
            kernel_init=_conv_init,
            name=name,
        )
        norm = lambda name, zero=False: nn.BatchNorm(  # noqa: E731
            use_running_average=not train,
            momentum=0.9,
            epsilon=eps,
            dtype=self.dtype,
            scale_init=nn.initializers.zeros if zero else nn.initializers.ones,
            name=name,
        )

        residual = x
        if self.bottleneck:
            out_feats = self.width * 4
            first_stride, mid_stride = (self.stride, 1) if keras else (1, self.stride)
            y = nn.relu(norm('bn1')(conv(self.width, 1, first_stride, 'conv1')(x)))
            y = nn.relu(norm('bn2')(conv(self.width, 3, mid_stride, 'conv2')(y)))
            y = norm('bn3', self.zero_init_residual)(conv(out_feats, 1, 1, 'conv3')(y))
        else:
            out_feats = self.width
            y = nn.relu(norm('bn1')(conv(self.width, 3, self.stride, 'conv1')(x)))
            y = norm('bn2', self.zero_init_residual)(conv(self.width, 3, 1, 'conv2')(y))

        if self.stride != 1 or x.shape[-1] != out_feats:
            residual = norm('downsample_bn')(conv(out_feats, 1, self.stride, 'downsample_conv')(x))
        return nn.relu(y + residual)


class ResNet(nn.Module):
    """ResNet encoder returning ``(pooled, intermediates)``.

    Attributes:
        depth: 18, 34, 50 or 101.
        width: channels of the stem; stage ``s`` has ``width * 2**(s-1)`` (times 4
            for bottleneck outputs). 64 is the standard network; tests use 8.
        variant: 'v1.5' (torchvision) or 'keras' (Keras applications, v1).
        dtype: computation dtype (e.g. jnp.bfloat16); parameters stay float32.
        input_mean, input_std: per-channel normalisation of [0, 1] inputs.
        input_norm: 'channel' (``(x - input_mean) / input_std``), 'micrograph'
            (background-flattened, unit-contrast, one-polarity) or 'background' (background
            subtracted, one polarity, divided by ``input_std``; models/input_norm.py).
        background_sigma: for 'micrograph' and 'background', the background blur's sigma as a fraction of
            the image side (objects much smaller than it keep their interiors).
        zero_init_residual: start each block's last BatchNorm scale at zero.
        stem: 'imagenet' (7x7 stride-2 convolution and max-pool) or 'small'
            (3x3 stride-1 convolution, no max-pool; for 32-96 px images).
        max_pool_grad: the stem max-pool's gradient: 'auto', 'xla' or 'dense'
            (models/max_pool.py; the same values, dense is faster on the CPU).
        input_channels: the channel order the stem expects: 'rgb', or 'bgr'
            (the normalised RGB input is reversed before the first convolution;
            Keras applications weights). Images always come in as RGB.
    """

    depth: int = 50
    width: int = 64
    variant: str = 'v1.5'
    dtype: Any = jnp.float32
    input_mean: Sequence[float] = IMAGENET_MEAN
    input_std: Sequence[float] = IMAGENET_STD
    input_norm: str = 'channel'
    background_sigma: float = BACKGROUND_SIGMA
    zero_init_residual: bool = False
    stem: str = 'imagenet'
    max_pool_grad: str = 'auto'
    input_channels: str = 'rgb'

    def setup_check(self):
        if self.depth not in STAGE_DEPTHS:
            raise ValueError(f'model.depth={self.depth!r}: expected one of {sorted(STAGE_DEPTHS)}')
        if self.variant not in VARIANTS:
            raise ValueError(f'model.variant={self.variant!r}: expected one of {VARIANTS}')
        if self.input_norm not in INPUT_NORMS:
            raise ValueError(f'model.input_norm={self.input_norm!r}: expected one of {INPUT_NORMS}')
        if not 0 < self.background_sigma <= 1:
            raise ValueError(
                f'model.background_sigma={self.background_sigma!r}: expected a fraction of the side in (0, 1]'
            )
        if self.stem not in STEMS:
            raise ValueError(f'model.stem={self.stem!r}: expected one of {STEMS}')
        if self.input_channels not in CHANNEL_ORDERS:
            raise ValueError(
                f'model.input_channels={self.input_channels!r}: expected one of {CHANNEL_ORDERS}'
            )
        if self.width < 1:
            raise ValueError(f'model.width={self.width!r}: expected a positive integer')

    @nn.compact
    def __call__(self, images, train: bool = False):
        self.setup_check()
        if images.ndim != 4 or images.shape[-1] != 3:
            raise ValueError(f'ResNet expects images of shape (N, H, W, 3); got {images.shape}')
        keras = self.variant == 'keras'
        x = normalise_input(
            images, self.input_norm, self.background_sigma, self.input_mean, self.input_std
        ).astype(self.dtype)
        if self.input_channels == 'bgr':
            x = x[..., ::-1]

        small = self.stem == 'small'
        kernel, stride = (3, 1) if small else (7, 2)
        x = nn.Conv(
            self.width,
            (kernel, kernel),
            (stride, stride),
            padding=[(kernel // 2, kernel // 2)] * 2,
            use_bias=keras,
            dtype=self.dtype,
            kernel_init=_conv_init,
            name='conv1',
        )(x)
        x = nn.BatchNorm(
            use_running_average=not train,
            momentum=0.9,
            epsilon=1.001e-5 if keras else 1e-5,
            dtype=self.dtype,
            name='bn1',
        )(x)
        x = nn.relu(x)
        intermediates = {'stem': x}
        if not small:
            x = stem_max_pool(x, self.max_pool_grad)

        bottleneck = self.depth in BOTTLENECK_DEPTHS
        for stage, n_blocks in enumerate(STAGE_DEPTHS[self.depth], start=1):
            for block in range(n_blocks):
                stride = 2 if stage > 1 and block == 0 else 1
                x = _Block(
                    self.width * 2 ** (stage - 1),
                    stride,
                    bottleneck,
                    self.variant,
                    self.dtype,
                    self.zero_init_residual,
                    name=f'layer{stage}_{block}',
                )(x, train)
            intermediates[f'stage{stage}'] = x

        pooled = jnp.mean(x.astype(jnp.float32), axis=(1, 2))
        intermediates['pooled'] = pooled
        return pooled, intermediates


def feature_dim(depth: int, width: int) -> int:
    """Channels of the pooled feature of a ResNet (2048 for ResNet50 at width 64)."""
    if depth not in STAGE_DEPTHS:
        raise ValueError(f'model.depth={depth!r}: expected one of {sorted(STAGE_DEPTHS)}')
    return width * 8 * (4 if depth in BOTTLENECK_DEPTHS else 1)
