"""Model builders: the only place in ``models`` that reads a config."""

from __future__ import annotations

from collections.abc import Mapping

import jax.numpy as jnp
import ml_collections

from fewshot_jax.models.heads import LinearClassifier, Projector, SSLModel
from fewshot_jax.models.resnet import IMAGENET_MEAN, IMAGENET_STD, LAYER_NAMES, ResNet, feature_dim

_DTYPES = {'float32': jnp.float32, 'bfloat16': jnp.bfloat16, 'float16': jnp.float16}

__all__ = ['LAYER_NAMES', 'LinearClassifier', 'Projector', 'ResNet', 'SSLModel', 'feature_dim',
           'compute_dtype', 'make_encoder', 'make_ssl_model']


def compute_dtype(name: str):
    """Maps ``model.dtype`` ('float32', 'bfloat16', 'float16') to a jnp dtype."""
    if name not in _DTYPES:
        raise ValueError(f'model.dtype={name!r}: expected one of {sorted(_DTYPES)}')
    return _DTYPES[name]


def make_encoder(model_cfg: Mapping) -> ResNet:
    """Builds the ResNet encoder described by ``config.model`` (a ConfigDict or a plain dict,
    e.g. a workdir's saved ``encoder.json``), including its input normalisation."""
    return ResNet(depth=int(model_cfg['depth']), width=int(model_cfg['width']),
                  variant=model_cfg.get('variant', 'v1.5'),
                  stem=model_cfg.get('stem', 'imagenet'),
                  dtype=compute_dtype(model_cfg.get('dtype', 'float32')),
                  input_mean=tuple(model_cfg.get('input_mean', IMAGENET_MEAN)),
                  input_std=tuple(model_cfg.get('input_std', IMAGENET_STD)),
                  zero_init_residual=model_cfg.get('zero_init_residual', False))


def make_ssl_model(model_cfg: ml_collections.ConfigDict) -> SSLModel:
    """Builds encoder + projector for self-supervised pretraining."""
    projector = Projector(features=tuple(model_cfg.projector),
                          dtype=compute_dtype(model_cfg.get('dtype', 'float32')))
    return SSLModel(encoder=make_encoder(model_cfg), projector=projector)
