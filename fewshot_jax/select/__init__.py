"""Which images should a scientist label? Label selection from frozen features.

Given the features of an unlabeled pool (one row per image, e.g. from
``fewshot_jax.load_encoder(...).encode(images)``) and a labeling budget::

    from fewshot_jax.select import select, duplicate_groups
    picks = select(features, 16, 'typical', seed=0)
    picks.indices          # the 16 images to label, in the order to label them
    duplicate_groups(features)   # identical images, of which at most one is picked

``METHODS`` lists the strategies (``'random'``, ``'kmeans'``, ``'typical'``,
``'coreset'``); ``strategies`` describes each. Attributes are imported on first
use, so ``import fewshot_jax.select`` stays cheap (no JAX import).

The ``select`` task (``task.py``, ``configs/select.py``) runs this on a folder of
unlabeled images and writes ``to_label.csv`` and its contact sheet ``to_label.png``;
``probe.draw`` (``fewshot_jax/probe/draws.py``) measures the strategies against random
k-shot draws in the probe protocol.
"""

from __future__ import annotations

__all__ = ['METHODS', 'Selection', 'duplicate_groups', 'select']


def __getattr__(name: str):
    if name in __all__:
        from fewshot_jax.select import strategies

        return getattr(strategies, name)
    raise AttributeError(f'module {__name__!r} has no attribute {name!r}')


def __dir__():
    return sorted([*globals(), *__all__])
