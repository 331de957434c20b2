"""Heads on top of the encoder: the SSL projector and the linear classifier.

The projector follows the paper: Dense → BN → ReLU for every hidden layer and
Dense → BN for the last (sizes from ``model.projector``, 128-64-1024 in the
paper's selected setting).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax.numpy as jnp


class Projector(nn.Module):
    """MLP projector: (Dense → BN → ReLU) × (k−1), then Dense → BN.

    Attributes:
        features: output size of each Dense layer, e.g. (128, 64, 1024).
        dtype: computation dtype.
    """

    features: Sequence[int] = (128, 64, 1024)
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, train: bool = False):
        if not self.features:
            raise ValueError('model.projector must list at least one layer size')
        for i, feats in enumerate(self.features):
            x = nn.Dense(feats, dtype=self.dtype, name=f'dense{i}')(x)
            x = nn.BatchNorm(
                use_running_average=not train, momentum=0.9, epsilon=1e-5, dtype=self.dtype, name=f'bn{i}'
            )(x)
            if i < len(self.features) - 1:
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
