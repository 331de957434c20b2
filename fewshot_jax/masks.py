"""Mask geometry: percolation (the paper's DBSCAN criterion and an exact fast path) and pixel density.

The paper clusters the foreground ("nanowire") pixels of a mask with
scikit-learn's DBSCAN (eps = 2, min_samples = 2) on their (row, column)
coordinates, and calls the image percolated when some cluster spans both
dimensions: rightmost minus leftmost coordinate >= width - 2, and the same
vertically.

DBSCAN on pixels is a graph computation. With min_samples <= 2 every
foreground pixel that has another one within eps is a core point, the
clusters are the connected components of the "within eps" graph, and isolated
pixels are noise. For eps in [2, sqrt 5) that graph joins 8-neighbours and
pixels two apart in a row or column; the fast path turns those straight
two-pixel jumps into 8-adjacency by filling the gap pixel ("bridge") and
labels with `scipy.ndimage.label`. A bridge touches only pixels within eps of
its two ends, so it never joins clusters that DBSCAN keeps apart. Larger eps
uses a sparse graph of pixel pairs instead, and min_samples > 2 counts
neighbours explicitly; border points then join the lowest-numbered adjacent
cluster, which is exactly the cluster DBSCAN's depth-first expansion reaches
them from first. `tests/test_masks.py` checks label-for-label equality
with scikit-learn on many random masks.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from scipy import ndimage
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

PAPER_EPS = 2.0
PAPER_MIN_SAMPLES = 2
PAPER_MARGIN = 2


class MaskError(ValueError):
    """A mask that is not a 2-D binary array."""


@dataclasses.dataclass(frozen=True)
class PixelClusters:
    """DBSCAN clusters of the foreground pixels of a mask.

    Attributes:
      labels: int32 (H, W); 0 for background and noise pixels, 1..n_clusters
        for cluster members. Clusters are numbered in raster order of their
        first core pixel (the order DBSCAN finds them in).
      core: bool (H, W); True at core points.
    """

    labels: np.ndarray
    core: np.ndarray

    @property
    def n_clusters(self) -> int:
        return int(self.labels.max(initial=0))


def _as_binary(mask, name: str = 'mask') -> np.ndarray:
    """Validates a binary mask (values 0 and 1, or 0 and 255) and returns it as bool."""
    arr = np.asarray(mask)
    if arr.ndim != 2:
        raise MaskError(f'{name} must be a 2-D array (H, W), got shape {arr.shape}')
    if arr.size == 0:
        raise MaskError(f'{name} is empty (shape {arr.shape})')
    if arr.dtype == bool:
        return arr
    if not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
        raise MaskError(f'{name} must be bool or numeric, got dtype {arr.dtype}')
    bad = (arr != 0) & (arr != 1) & (arr != 255)
    if bad.any():
        values = np.unique(arr[bad])[:5]
        raise MaskError(
            f'{name} must be binary (values 0 and 1, or 0 and 255), found {values.tolist()}; '
            'threshold it first, e.g. mask > 0.5'
        )
    return arr != 0


def _check_params(eps: float, min_samples: int) -> None:
    if not np.isfinite(eps) or eps <= 0:
        raise ValueError(f'eps must be a positive finite distance in pixels, got {eps!r}')
    if isinstance(min_samples, bool) or int(min_samples) != min_samples or min_samples < 1:
        raise ValueError(f'min_samples must be an integer >= 1, got {min_samples!r}')


def pixel_density(mask) -> float:
    """Fraction of foreground pixels in a binary mask (the paper's nanowire pixel density).

    Args:
      mask: 2-D binary array (bool, {0, 1} or {0, 255}).

    Returns:
      Foreground fraction in [0, 1].
    """
    fg = _as_binary(mask)
    return float(np.count_nonzero(fg)) / fg.size


def dbscan_clusters(mask, eps: float = PAPER_EPS, min_samples: int = PAPER_MIN_SAMPLES):
    """The paper's reference: scikit-learn DBSCAN on foreground pixel coordinates.

    Slow for large dense masks (DBSCAN stores every neighbourhood); use
    `fast_clusters` for real work, this is the ground truth it is tested against.

    Args:
      mask: 2-D binary array.
      eps: neighbourhood radius in pixels (Euclidean, inclusive).
      min_samples: neighbours (the point itself included) that make a core point.

    Returns:
      PixelClusters.
    """
    from sklearn.cluster import DBSCAN

    fg = _as_binary(mask)
    _check_params(eps, min_samples)
    labels = np.zeros(fg.shape, dtype=np.int32)
    core = np.zeros(fg.shape, dtype=bool)
    coords = np.argwhere(fg)  # raster order, so cluster ids follow raster order
    if len(coords) == 0:
        return PixelClusters(labels, core)
    fit = DBSCAN(eps=eps, min_samples=int(min_samples)).fit(coords)
    labels[fg] = fit.labels_ + 1  # noise (-1) becomes 0
    core_idx = fit.core_sample_indices_
    core[coords[core_idx, 0], coords[core_idx, 1]] = True
    return PixelClusters(labels, core)


def _disk_offsets(eps: float) -> np.ndarray:
    """All (dy, dx) != (0, 0) with dy^2 + dx^2 <= eps^2."""
    r = int(np.floor(eps))
    dy, dx = np.mgrid[-r : r + 1, -r : r + 1]
    keep = (dy * dy + dx * dx <= eps * eps) & ((dy != 0) | (dx != 0))
    return np.stack([dy[keep], dx[keep]], axis=1)


def _shifted(arr: np.ndarray, dy: int, dx: int, fill) -> np.ndarray:
    """out[y, x] = arr[y + dy, x + dx], `fill` outside the array."""
    h, w = arr.shape
    out = np.full_like(arr, fill)
    if abs(dy) >= h or abs(dx) >= w:
        return out
    ys, yd = slice(max(dy, 0), h + min(dy, 0)), slice(max(-dy, 0), h + min(-dy, 0))
    xs, xd = slice(max(dx, 0), w + min(dx, 0)), slice(max(-dx, 0), w + min(-dx, 0))
    out[yd, xd] = arr[ys, xs]
    return out


def _components(points: np.ndarray, eps: float) -> np.ndarray:
    """Connected components of `points` (bool image) under the within-eps graph.

    Returns int32 labels (0 off the points) numbered in raster order of each
    component's first pixel.
    """
    eps_sq = eps * eps
    if eps_sq < 1:  # nothing is within eps: every point is its own component
        labels = np.zeros(points.shape, dtype=np.int32)
        labels[points] = np.arange(1, np.count_nonzero(points) + 1, dtype=np.int32)
        return labels
    if eps_sq < 5:  # 3x3 structuring elements, plus bridges for straight jumps of 2
        eight = eps_sq >= 2
        grid = points
        if eps_sq >= 4:
            grid = points.copy()
            grid[:, 1:-1] |= points[:, :-2] & points[:, 2:]
            grid[1:-1, :] |= points[:-2, :] & points[2:, :]
        structure = np.ones((3, 3), bool) if eight else ndimage.generate_binary_structure(2, 1)
        labels, _ = ndimage.label(grid, structure=structure)
        labels[~points] = 0
        # ndimage.label numbers components in raster order of their first
        # pixel, and a bridge always comes after its left or upper end, so
        # every component starts with a point: the numbering is already the
        # raster order of first points, with no gaps.
        return labels.astype(np.int32, copy=False)
    return _graph_components(points, eps)


def _graph_components(points: np.ndarray, eps: float) -> np.ndarray:
    """Sparse-graph fallback for eps >= sqrt(5)."""
    h, w = points.shape
    index = np.full(points.shape, -1, dtype=np.int64)
    n = int(np.count_nonzero(points))
    index[points] = np.arange(n)
    rows, cols = [], []
    for dy, dx in _disk_offsets(eps):
        if dy < 0 or (dy == 0 and dx < 0):
            continue  # each undirected pair once
        other = _shifted(index, dy, dx, -1)
        both = (index >= 0) & (other >= 0)
        rows.append(index[both])
        cols.append(other[both])
    rows = np.concatenate(rows) if rows else np.zeros(0, np.int64)
    cols = np.concatenate(cols) if cols else np.zeros(0, np.int64)
    graph = coo_matrix((np.ones(len(rows), np.int8), (rows, cols)), shape=(n, n))
    _, comp = connected_components(graph, directed=False)
    # Renumber components by their first point in raster order.
    _, first = np.unique(comp, return_index=True)
    order = np.argsort(first, kind='stable')
    rank = np.empty(len(first), dtype=np.int32)
    rank[order] = np.arange(1, len(first) + 1, dtype=np.int32)
    labels = np.zeros(points.shape, dtype=np.int32)
    labels[points] = rank[comp]
    return labels


def fast_clusters(mask, eps: float = PAPER_EPS, min_samples: int = PAPER_MIN_SAMPLES):
    """Exactly the clusters of `dbscan_clusters`, computed on the pixel grid.

    Args:
      mask: 2-D binary array.
      eps: neighbourhood radius in pixels (Euclidean, inclusive).
      min_samples: neighbours (the point itself included) that make a core point.

    Returns:
      PixelClusters, identical to `dbscan_clusters(mask, eps, min_samples)`.
    """
    fg = _as_binary(mask)
    _check_params(eps, min_samples)
    if min_samples <= 2:
        labels = _components(fg, eps)
        if min_samples == 2:  # a pixel alone in its component has no neighbour: noise
            sizes = np.bincount(labels.ravel())
            lonely = sizes[labels] == 1
            labels[lonely & fg] = 0
            labels = _renumber(labels)
        return PixelClusters(labels, labels > 0)
    offsets = _disk_offsets(eps)
    counts = np.ones(fg.shape, dtype=np.int32)
    for dy, dx in offsets:
        counts += _shifted(fg, dy, dx, False)
    core = fg & (counts >= min_samples)
    labels = _components(core, eps)
    # A border point joins the lowest-numbered core cluster within eps: DBSCAN
    # expands clusters one at a time in that order, so that one claims it first.
    border = fg & ~core
    big = np.iinfo(np.int32).max
    best = np.full(fg.shape, big, dtype=np.int32)
    core_labels = np.where(core, labels, big)
    for dy, dx in offsets:
        np.minimum(best, _shifted(core_labels, dy, dx, big), out=best)
    attach = border & (best < big)
    labels[attach] = best[attach]
    return PixelClusters(labels, core)


def _renumber(labels: np.ndarray) -> np.ndarray:
    """Closes gaps in label ids while keeping their order."""
    present = np.bincount(labels.ravel()) > 0
    present[0] = True
    new_id = np.cumsum(present, dtype=np.int32) - 1
    return new_id[labels]


def cluster_spans(clusters: PixelClusters) -> np.ndarray:
    """Extent of each cluster's core points.

    Args:
      clusters: output of `fast_clusters` or `dbscan_clusters`.

    Returns:
      int (n_clusters, 2) array of (bottom - top, right - left) row and column
      coordinate differences of each cluster's core points.
    """
    core_labels = np.where(clusters.core, clusters.labels, 0)
    return _spans_of(core_labels, np.arange(1, clusters.n_clusters + 1))


def _spans_of(core_labels: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """(row span, column span) of the pixels of each label in `ids` (sorted, >= 1)."""
    n = len(ids)
    if n == 0:
        return np.zeros((0, 2), dtype=np.int64)
    if n <= 4:  # a few candidates: bounding boxes from row/column projections
        spans = np.zeros((n, 2), dtype=np.int64)
        for i, k in enumerate(ids):
            hit = core_labels == k
            rows, cols = np.flatnonzero(hit.any(axis=1)), np.flatnonzero(hit.any(axis=0))
            if len(rows):
                spans[i] = (rows[-1] - rows[0], cols[-1] - cols[0])
        return spans
    if ids[-1] == n and core_labels.max() == n:  # all labels 1..n: index directly
        rows, cols = np.nonzero(core_labels)
        which = core_labels[rows, cols] - 1
    else:
        rows, cols = np.nonzero(np.isin(core_labels, ids))
        which = np.searchsorted(ids, core_labels[rows, cols])
    big = np.iinfo(np.int64).max
    lo = np.full((n, 2), big, dtype=np.int64)
    hi = np.full((n, 2), -1, dtype=np.int64)
    for axis, coord in enumerate((rows, cols)):
        np.minimum.at(lo[:, axis], which, coord)
        np.maximum.at(hi[:, axis], which, coord)
    return np.where(hi >= 0, hi - lo, 0)


def percolates(
    mask,
    method: str = 'fast',
    eps: float = PAPER_EPS,
    min_samples: int = PAPER_MIN_SAMPLES,
    margin: int = PAPER_MARGIN,
) -> bool:
    """The paper's two-dimensional percolation criterion.

    True when some cluster's core points span at least H - margin rows and
    W - margin columns (coordinate of the last minus the first).

    Args:
      mask: 2-D binary array (bool, {0, 1} or {0, 255}).
      method: 'fast' (exact, on the pixel grid) or 'dbscan' (scikit-learn).
      eps: DBSCAN neighbourhood radius in pixels.
      min_samples: DBSCAN core-point threshold.
      margin: how many pixels short of the full extent a span may fall.

    Returns:
      Whether the mask percolates.
    """
    if isinstance(margin, bool) or int(margin) != margin or margin < 0:
        raise ValueError(f'margin must be a non-negative integer, got {margin!r}')
    if method == 'fast':
        clusters = fast_clusters(mask, eps, min_samples)
    elif method == 'dbscan':
        clusters = dbscan_clusters(mask, eps, min_samples)
    else:
        raise ValueError(f"method must be 'fast' or 'dbscan', got {method!r}")
    h, w = clusters.labels.shape
    core_labels = np.where(clusters.core, clusters.labels, 0)
    # A span of at least size - margin needs a pixel within `margin` of both
    # opposite borders, so only clusters present in all four border strips
    # can qualify; measuring just those keeps big masks fast.
    low_y, low_x = max(h - margin, 0), max(w - margin, 0)
    candidates = np.unique(core_labels[:margin])
    for strip in (core_labels[low_y:], core_labels[:, :margin], core_labels[:, low_x:]):
        candidates = np.intersect1d(candidates, strip)
    spans = _spans_of(core_labels, candidates[candidates > 0])
    return bool(np.any((spans[:, 0] >= h - margin) & (spans[:, 1] >= w - margin)))
