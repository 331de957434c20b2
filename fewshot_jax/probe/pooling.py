"""How the probe turns an encoder's feature map into one vector per image.

``'average'`` is the network's own global average pool (what ``layer='pooled'``
returns, and the paper's). ``'gem'`` is generalised-mean pooling with a fixed power
of 3, ``(mean_xy max(x, eps)^3)^(1/3)`` per channel: between the average (power 1)
and the maximum (power → ∞), it weights the locations where a filter answers most.
The physical reason to try it: in a micrograph the objects whose shape is the class
cover a fraction of the field, and an average also counts the empty support film
around them. The power 3 is the value generalised-mean pooling is usually started
at and ends near when it is learned for image retrieval; it is fixed here, not fitted
to any of our data. Which pooling the probe presets use is measured
(benchmarks/RESULTS.md).
"""

from __future__ import annotations

import numpy as np

POOLINGS = ('average', 'gem')
GEM_POWER = 3.0
# Feature maps after a ReLU are >= 0; the floor keeps the cube root real where a
# network without a final ReLU leaves negative values.
_GEM_FLOOR = 1e-6


class PoolingError(ValueError):
    """An unknown pooling name."""


def check_pooling(pooling: str) -> str:
    """``pooling`` if it is one of :data:`POOLINGS`; otherwise a one-line error."""
    if pooling not in POOLINGS:
        raise PoolingError(f'probe.pooling={pooling!r}: expected one of {POOLINGS}')
    return pooling


def pool_map(feature_map: np.ndarray, pooling: str) -> np.ndarray:
    """One vector per image from a feature map (N, h, w, C) → (N, C), float32."""
    check_pooling(pooling)
    x = np.asarray(feature_map, np.float32)
    if x.ndim != 4:
        raise PoolingError(f'pool_map: expected a feature map (N, h, w, C); got shape {x.shape}')
    if pooling == 'average':
        return x.mean(axis=(1, 2))
    powered = np.maximum(x, _GEM_FLOOR).astype(np.float64) ** GEM_POWER
    return (powered.mean(axis=(1, 2)) ** (1.0 / GEM_POWER)).astype(np.float32)
