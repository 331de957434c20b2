"""fewshot_jax: self-supervised pretraining, few-shot probes and U-Net segmentation for microscopy.

The public entry point for using a trained or published encoder::

    from fewshot_jax import load_encoder
    features = load_encoder('runs/demo/pretrain/simclr_tem').encode(images)

Attributes are imported on first use, so ``import fewshot_jax`` stays cheap
(no JAX import) for tools that only need a submodule.
"""

from __future__ import annotations

__all__ = ['Encoder', 'load_encoder']


def __getattr__(name: str):
    if name in __all__:
        from fewshot_jax import encoder

        return getattr(encoder, name)
    raise AttributeError(f'module {__name__!r} has no attribute {name!r}')


def __dir__():
    return sorted([*globals(), *__all__])
