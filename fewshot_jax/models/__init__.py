"""Model builders: the only place in ``models`` that reads a config."""

from __future__ import annotations

from collections.abc import Mapping

import jax.numpy as jnp
import ml_collections

from fewshot_jax.errors import ConfigError, is_count
from fewshot_jax.models.heads import PROJECTOR_BNS, PROJECTOR_ORDERS, LinearClassifier, Projector, SSLModel
from fewshot_jax.models.input_norm import BACKGROUND_SIGMA, INPUT_NORMS
from fewshot_jax.models.max_pool import MAX_POOL_GRADS
from fewshot_jax.models.resnet import (
    CHANNEL_ORDERS,
    IMAGENET_MEAN,
    IMAGENET_STD,
    LAYER_NAMES,
    STAGE_DEPTHS,
    STEMS,
    VARIANTS,
    ResNet,
    feature_dim,
)

_DTYPES = {'float32': jnp.float32, 'bfloat16': jnp.bfloat16, 'float16': jnp.float16}

__all__ = [
    'LAYER_NAMES',
    'LinearClassifier',
    'Projector',
    'ResNet',
    'SSLModel',
    'feature_dim',
    'compute_dtype',
    'make_encoder',
    'make_ssl_model',
]


def compute_dtype(name: str):
    """Maps ``model.dtype`` ('float32', 'bfloat16', 'float16') to a jnp dtype."""
    if name not in _DTYPES:
        raise ConfigError(f'model.dtype={name!r}: expected one of {sorted(_DTYPES)}')
    return _DTYPES[name]


def make_encoder(model_cfg: Mapping) -> ResNet:
    """Builds the ResNet encoder described by ``config.model`` (a ConfigDict or a plain dict,
    e.g. a workdir's saved ``encoder.json``), including its input normalisation and the
    channel order its stem expects (``input_channels``, default 'rgb').

    Raises:
        ConfigError: an unknown depth, variant, stem or channel order, or a width that is
            not a positive int.
    """
    checks = (
        ('depth', tuple(STAGE_DEPTHS), None),
        ('variant', VARIANTS, 'v1.5'),
        ('stem', STEMS, 'imagenet'),
        ('input_norm', INPUT_NORMS, 'channel'),
        ('max_pool_grad', MAX_POOL_GRADS, 'auto'),
        ('input_channels', CHANNEL_ORDERS, 'rgb'),
    )
    for key, allowed, default in checks:
        if model_cfg.get(key, default) not in allowed:
            raise ConfigError(f'model.{key}={model_cfg.get(key, default)!r}: expected one of {list(allowed)}')
    width = model_cfg.get('width')
    if not is_count(width):
        raise ConfigError(f'model.width={width!r}: expected a positive integer')
    background_sigma = model_cfg.get('background_sigma', BACKGROUND_SIGMA)
    if (
        isinstance(background_sigma, bool)
        or not isinstance(background_sigma, (int, float))
        or not 0 < background_sigma <= 1
    ):
        raise ConfigError(
            f'model.background_sigma={background_sigma!r}: expected a fraction of the image side in (0, 1]'
        )
    return ResNet(
        depth=int(model_cfg['depth']),
        width=int(model_cfg['width']),
        variant=model_cfg.get('variant', 'v1.5'),
        stem=model_cfg.get('stem', 'imagenet'),
        max_pool_grad=model_cfg.get('max_pool_grad', 'auto'),
        dtype=compute_dtype(model_cfg.get('dtype', 'float32')),
        input_mean=tuple(model_cfg.get('input_mean', IMAGENET_MEAN)),
        input_std=tuple(model_cfg.get('input_std', IMAGENET_STD)),
        input_norm=model_cfg.get('input_norm', 'channel'),
        background_sigma=float(background_sigma),
        zero_init_residual=model_cfg.get('zero_init_residual', False),
        input_channels=model_cfg.get('input_channels', 'rgb'),
    )


def make_ssl_model(model_cfg: ml_collections.ConfigDict) -> SSLModel:
    """Builds encoder + projector for self-supervised pretraining (``model.projector``,
    ``projector_order``, ``projector_bn``; see ``fewshot_jax.models.heads``)."""
    sizes = tuple(model_cfg.projector)
    if not sizes or any(not is_count(n) for n in sizes):
        raise ConfigError(f'model.projector={sizes!r}: expected one or more positive layer sizes')
    for key, allowed, default in (
        ('projector_order', PROJECTOR_ORDERS, 'standard'),
        ('projector_bn', PROJECTOR_BNS, 'batch'),
    ):
        if model_cfg.get(key, default) not in allowed:
            raise ConfigError(f'model.{key}={model_cfg.get(key, default)!r}: expected one of {list(allowed)}')
    projector = Projector(
        features=tuple(model_cfg.projector),
        dtype=compute_dtype(model_cfg.get('dtype', 'float32')),
        order=model_cfg.get('projector_order', 'standard'),
        bn=model_cfg.get('projector_bn', 'batch'),
    )
    return SSLModel(encoder=make_encoder(model_cfg), projector=projector)
