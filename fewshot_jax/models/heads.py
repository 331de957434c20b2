"""Heads on top of the encoder: the SSL projector and the linear classifier.

The projector has the paper's three Dense layers, each followed by BatchNorm, the
first two with a ReLU (sizes from ``model.projector``, 128-64-1024 in the paper's
selected setting). Two orders (``model.projector_order``):

* 'standard' (default): Dense → BN → ReLU, as SimCLR and Barlow Twins have it;
* 'paper': Dense → ReLU → BN, as the paper's notebook built it (Keras BN: epsilon
  1e-3, momentum 0.99).

The notebook also ran its projector BatchNorms in inference mode during training
(its training step called the model without ``training=True``), so their
statistics stayed at 0 and 1 and each acted as a learned per-feature affine map;
``model.projector_bn='frozen'`` reproduces that, 'batch' (default) normalises with
batch statistics. docs/paper.md lists both beside the other settings.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

PROJECTOR_ORDERS = ('standard', 'paper')
PROJECTOR_BNS = ('batch', 'frozen')


class Projector(nn.Module):
    """MLP projector: k Dense layers, each with BatchNorm, ReLU on all but the last.

    Attributes:
        features: output size of each Dense layer, e.g. (128, 64, 1024).
        dtype: computation dtype.
        order: 'standard' (Dense → BN → ReLU) or 'paper' (Dense → ReLU → BN, Keras'
            BN epsilon 1e-3 and momentum 0.99); the last layer is Dense → BN in both.
        bn: 'batch' (batch statistics while training) or 'frozen' (running
            statistics always, which then never change: the notebook's behaviour).
    """

    features: Sequence[int] = (128, 64, 1024)
    dtype: Any = jnp.float32
    order: str = 'standard'
    bn: str = 'batch'

    @nn.compact
    def __call__(self, x, train: bool = False):
        if not self.features:
            raise ValueError('model.projector must list at least one layer size')
        if self.order not in PROJECTOR_ORDERS:
            raise ValueError(f'model.projector_order={self.order!r}: expected one of {PROJECTOR_ORDERS}')
        if self.bn not in PROJECTOR_BNS:
            raise ValueError(f'model.projector_bn={self.bn!r}: expected one of {PROJECTOR_BNS}')
        paper = self.order == 'paper'
        for i, feats in enumerate(self.features):
            last = i == len(self.features) - 1
            x = nn.Dense(feats, dtype=self.dtype, name=f'dense{i}')(x)
            if paper and not last:
                x = nn.relu(x)
            x = nn.BatchNorm(
                use_running_average=not train or self.bn == 'frozen',
                momentum=0.99 if paper else 0.9,
                epsilon=1e-3 if paper else 1e-5,
                dtype=self.dtype,
                name=f'bn{i}',
            )(x)
            if not paper and not last:
                x = nn.relu(x)
        return x.astype(jnp.float32)


class SSLModel(nn.Module):
    """Encoder followed by a projector; returns ``(z, pooled)``.

    Parameters live under ``encoder`` and ``projector`` so that the encoder's
    variables can be cut out of a pretraining checkpoint unchanged.
    """

    encoder: nn.Module
    projector: nn.Module

    def __call__(self, images, train: bool = False):
        pooled, _ = self.encoder(images, train=train)
        return self.projector(pooled, train=train), pooled


class LinearClassifier(nn.Module):
    """A single Dense layer on frozen features (the paper's probe)."""

    num_classes: int

    @nn.compact
    def __call__(self, features):
        return nn.Dense(self.num_classes, name='dense')(features)
