"""Which pool images to label: selection strategies over frozen features.

Every strategy takes the features of an unlabeled pool (N images × D features)
and a budget B, and returns B distinct pool indices in the order to label them:

- ``'random'``: a seeded uniform draw without replacement (the baseline).
- ``'kmeans'``: k-means with B clusters, then per cluster the image nearest its
  centroid.
- ``'typical'``: the same k-means, then per cluster its most *typical* image
  (Hacohen et al. 2022, "Active learning on a budget"): typicality is
  1 / (mean distance to the K nearest neighbours), K = min(20, cluster size − 1).
  The neighbours are searched within the image's own cluster, as in the paper,
  so typicality measures density inside the region the pick stands for rather
  than in a neighbouring cluster. A cluster of one image picks that image.
- ``'coreset'``: greedy k-center (farthest-first traversal), starting from the
  pool's densest image (highest typicality over the whole pool, K = min(20,
  N − 1)); each next pick is the image farthest from all picks so far. It draws
  nothing at random, so its result does not depend on the seed.

Feature space: all distances are Euclidean in the standardised space (each
feature z-scored over the pool, population variance; a feature constant over the
pool becomes 0). Distances run in JAX in float32 (``‖a‖² + ‖b‖² − 2ab`` at
``Precision.HIGHEST``, clamped at 0), the pool-by-pool ones in chunks of rows so
memory stays O(chunk · N) and never O(N² D).

Duplicates: identical images give identical feature rows. Every strategy runs
on the *distinct* rows (the pool's statistics count each row once) and reports a
distinct row by its first pool index, so two members of one duplicate group are
never both picked; :func:`duplicate_groups` lists the groups for the caller to
report. Rows are compared as float32, the precision the strategies compute in.

k-means: k-means++ seeding, then Lloyd iterations until the assignments stop
changing or ``max_iter`` centroid updates. A cluster that loses all its images
takes over the image farthest from its own centroid (the r-th empty cluster the
r-th farthest), so Lloyd keeps B clusters. Clusters are then numbered by size
(largest first; equal sizes in seeding order) and picked in that order: a
scientist who labels only the first few picks covers the largest groups first.

Choosing within a cluster: ``'kmeans'`` ranks members by their squared distance
to the centroid from direct differences, and ``'typical'`` computes neighbour
distances on rows minus their cluster's centroid; the expanded form's rounding
error grows with the rows' norms and could otherwise outweigh the small gaps
between members of a tight cluster far from the pool's mean. Scores within a
relative 1e-4 of the cluster's best count as tied, and the lowest pool index
wins: the two members of a two-image cluster are exactly tied for both criteria,
and rounding should not be what decides between them.

Randomness (the contract the tests' reference implementations follow): for
``'random'``, ``np.random.default_rng(seed).random(N_distinct)`` gives every
distinct image a key and the B smallest keys are picked, smallest first; for
k-means, ``np.random.default_rng(seed).random(B, dtype=np.float32)`` gives one
uniform ``u_j`` per seeding step, and step j picks the first image whose
cumulative weight exceeds ``u_j`` times the total (weights: 1 for the first
centroid, then the squared distance to the nearest centroid so far, 0 for images
already chosen).
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import numbers

import jax
import jax.numpy as jnp
import numpy as np

from fewshot_jax.errors import ConfigError, is_count

log = logging.getLogger(__name__)

METHODS = ('random', 'kmeans', 'typical', 'coreset')
HIGHEST = jax.lax.Precision.HIGHEST
NEIGHBORS = 20  # typicality's K (the paper's value)
MAX_ITER = 100  # Lloyd's cap on centroid updates
TIE = 1e-4  # relative gap below which two members' scores count as tied
CHUNK_ROWS = 256  # rows per block of the pool-by-pool distances: 256 × N float32 at a time


@dataclasses.dataclass(frozen=True, eq=False)
class Selection:
    """The images chosen for labeling, in the order to label them.

    Attributes:
        indices: (B,) int64 pool indices, distinct, at most one per duplicate group
            (its first member).
        cluster: (B,) int64, the cluster pick i stands for: ``i`` for ``'kmeans'`` and
            ``'typical'`` (clusters numbered largest first) and for ``'coreset'`` (the
            images nearer to pick i than to any other pick); -1 for ``'random'``.
        distance_to_centroid: (B,) float64 Euclidean distance in the standardised
            feature space from each pick to its k-means centroid; NaN for ``'random'``
            and ``'coreset'``, whose picks are not chosen relative to a centroid.
        assignment: (N,) int64, the cluster of every pool image (duplicates share
            their first member's); all -1 for ``'random'``.
        method: the strategy's name.
        seed: the seed it ran with.
    """

    indices: np.ndarray
    cluster: np.ndarray
    distance_to_centroid: np.ndarray
    assignment: np.ndarray
    method: str
    seed: int


def select(features, budget: int, method: str, *, seed: int = 0, max_iter: int = MAX_ITER) -> Selection:
    """Chooses ``budget`` pool images to label from their frozen features.

    Args:
        features: (N, D) real array, one row of frozen features per pool image.
        budget: how many images to pick, 1 to the number of distinct rows.
        method: one of :data:`METHODS` (see the module docstring).
        seed: non-negative int; draws for ``'random'`` and the k-means seeding.
        max_iter: cap on Lloyd's centroid updates (``'kmeans'``, ``'typical'``).

    Returns:
        A :class:`Selection`; the same arguments give the same selection.

    Raises:
        ConfigError: unknown method, a budget outside 1..distinct images, features
            that are not a finite real 2-D array, a bad seed or ``max_iter``.
    """
    if method not in METHODS:
        raise ConfigError(f'method={method!r}: expected one of {METHODS}')
    rows = _validated_features(features)
    _check_int('seed', seed, 0)
    _check_int('max_iter', max_iter, 1)
    first, inverse = _distinct_rows(rows)
    n_pool, n_distinct = rows.shape[0], first.size
    if not isinstance(budget, numbers.Integral) or isinstance(budget, bool) or not 1 <= budget <= n_distinct:
        raise ConfigError(
            f'budget={budget!r}: expected an integer from 1 to {n_distinct}, the number of distinct '
            f'images ({n_pool} in the pool, {n_pool - n_distinct} of them duplicates of others)'
        )
    budget, seed = int(budget), int(seed)

    if method == 'random':
        keys = np.random.default_rng(seed).random(n_distinct)
        picks = np.argsort(keys, kind='stable')[:budget]
        cluster = np.full(budget, -1, np.int64)
        return _selection(first, inverse, picks, cluster, None, np.full(n_distinct, -1), method, seed)

    x = standardize(rows[first])
    if method == 'coreset':
        picks, labels = farthest_first(x, budget)
        return _selection(first, inverse, picks, np.arange(budget), None, labels, method, seed)

    u = np.random.default_rng(seed).random(budget, dtype=np.float32)
    picks, labels, distance = cluster_and_pick(x, u, method, max_iter=max_iter)
    return _selection(first, inverse, picks, np.arange(budget), distance, labels, method, seed)


def duplicate_groups(features) -> tuple[tuple[int, ...], ...]:
    """Groups of pool images whose feature rows are identical (as float32).

    Args:
        features: (N, D) real array.

    Returns:
        One tuple of pool indices (ascending) per group of two or more identical rows,
        groups ordered by their first member; ``()`` when every row is distinct. The
        strategies stand each group for by its first member.

    Raises:
        ConfigError: features that are not a finite real 2-D array.
    """
    rows = _validated_features(features)
    first, inverse = _distinct_rows(rows)
    members = [[] for _ in range(first.size)]
    for i, group in enumerate(inverse):
        members[group].append(i)
    return tuple(tuple(m) for m in members if len(m) > 1)


def cluster_and_pick(x: np.ndarray, u: np.ndarray, method: str, *, max_iter: int = MAX_ITER):
    """k-means with one cluster per uniform in ``u``, then one pick per cluster, largest first.

    Args:
        x: (n, d) float32 distinct standardised rows.
        u: (k,) float32 uniforms in [0, 1) for the k-means++ seeding (module docstring).
        method: ``'kmeans'`` (the member nearest the centroid) or ``'typical'`` (the most
            typical member).
        max_iter: cap on Lloyd's centroid updates.

    Returns:
        ``(picks (k,), labels (n,), distance (k,))``: row indices, each row's cluster
        numbered in pick order, and each pick's Euclidean distance to its centroid.
    """
    k = u.shape[0]
    centroids, labels, sq_dist, own, settled = kmeans(x, u, max_iter=max_iter)
    if not settled:
        log.warning('k-means stopped at max_iter=%d before its assignments settled', max_iter)
    if method == 'typical':
        sizes = np.bincount(labels, minlength=k)
        k_nearest = np.minimum(NEIGHBORS, sizes[labels] - 1)
        score = mean_neighbor_distance(x, labels, k_nearest, centres=centroids)
    else:
        score = own
    picks, order = _pick_per_cluster(labels, score, sq_dist)  # lowest score: nearest / most typical
    rank = np.empty(k, np.int64)
    rank[order] = np.arange(k)
    # Reported exactly (float64, direct differences): the float32 expanded form loses digits
    # to cancellation exactly where a pick sits close to its centroid.
    distance = np.linalg.norm(x[picks].astype(np.float64) - centroids[order].astype(np.float64), axis=1)
    return picks, rank[labels], distance


def standardize(rows: np.ndarray) -> np.ndarray:
    """Z-scores each feature over the rows (population variance), as float32.

    A feature constant over the rows becomes 0 (z-score undefined; it separates nothing).
    """
    rows = rows.astype(np.float64)
    centered = rows - rows.mean(axis=0)
    constant = np.ptp(rows, axis=0) == 0
    centered[:, constant] = 0.0
    scale = np.where(constant, 1.0, centered.std(axis=0))
    return (centered / scale).astype(np.float32)


def kmeans(x: np.ndarray, u: np.ndarray, *, max_iter: int = MAX_ITER):
    """k-means++ seeding from the uniforms ``u`` (one per cluster), then Lloyd.

    Args:
        x: (n, d) float32 distinct rows.
        u: (k,) float32 uniforms in [0, 1), one per seeding step (module docstring).
        max_iter: cap on centroid updates.

    Returns:
        ``(centroids (k, d), labels (n,) int64, squared distances (n, k), own (n,), settled)``:
        ``labels`` are the nearest centroids of ``centroids``; ``own`` is each row's squared
        distance to its own centroid from direct differences (the expanded form's rounding
        error scales with the rows' norms, so it cannot rank rows near one centroid);
        ``settled`` is False when ``max_iter`` stopped Lloyd while assignments still changed.
    """
    c, labels, sq_dist, own, changed = _kmeans(jnp.asarray(x), jnp.asarray(u), max_iter=max_iter)
    return (
        np.asarray(c),
        np.asarray(labels, np.int64),
        np.asarray(sq_dist),
        np.asarray(own),
        not bool(changed),
    )


def mean_neighbor_distance(x: np.ndarray, labels: np.ndarray, k: np.ndarray, centres=None) -> np.ndarray:
    """Each row's mean Euclidean distance to its ``k[i]`` nearest rows of the same label.

    Typicality is its inverse. Requires ``k[i] <= NEIGHBORS`` and at most the number of
    other rows with row i's label; ``k[i] = 0`` gives 0. ``centres`` (one row per label,
    e.g. the cluster centroids) are subtracted from their label's rows first: distances
    within a label do not change, and the expanded form's rounding error, which scales
    with the rows' squared norms, shrinks to the scale of the cluster.
    """
    labels = np.asarray(labels, np.int32)
    if centres is not None:
        x = x - np.asarray(centres, x.dtype)[labels]
    kmax = max(1, min(NEIGHBORS, x.shape[0] - 1))
    out = _mean_neighbor_distance(
        jnp.asarray(x), jnp.asarray(labels), jnp.asarray(k, jnp.int32), kmax=kmax, chunk=_chunk(x)
    )
    return np.asarray(out)


def farthest_first(x: np.ndarray, budget: int):
    """Greedy k-center from the densest row.

    Returns:
        ``(picks (budget,) int64, labels (n,) int64)``: picks in traversal order and,
        per row, the pick it is nearest to (each pick labelled with itself).
    """
    kmax = max(1, min(NEIGHBORS, x.shape[0] - 1))
    picks, labels = _farthest_first(jnp.asarray(x), budget=budget, kmax=kmax, chunk=_chunk(x))
    return np.asarray(picks, np.int64), np.asarray(labels, np.int64)


def _sq_dists(a, b):
    """(m, k) squared Euclidean distances between the rows of a (m, d) and b (k, d)."""
    cross = jnp.dot(a, b.T, precision=HIGHEST)
    sq = jnp.sum(a * a, axis=1)[:, None] + jnp.sum(b * b, axis=1)[None, :] - 2.0 * cross
    return jnp.maximum(sq, 0.0)  # rounding can take the difference of near-equal rows below 0


def _chunk(x: np.ndarray) -> int:
    return max(1, min(CHUNK_ROWS, x.shape[0]))


def _sample(weights, u, chosen):
    """The first index whose cumulative weight exceeds ``u`` times the total."""
    cum = jnp.cumsum(weights)
    total = cum[-1]
    index = jnp.searchsorted(cum, u * total, side='right')
    # Rounding (a float32 u near 1, the cumulative sum's order) can put the target at or
    # past the total: stay on the last image that has weight.
    last = weights.shape[0] - 1 - jnp.argmax(weights[::-1] > 0)
    # No weight left (the remaining rows' distances all rounded to 0): the first unchosen row.
    return jnp.where(total > 0, jnp.minimum(index, last), jnp.argmin(chosen))


@functools.partial(jax.jit, static_argnames='max_iter')
def _kmeans(x, u, *, max_iter):
    n, k = x.shape[0], u.shape[0]

    def seed_step(j, state):
        centers, chosen, nearest = state
        # Chosen rows get weight 0 explicitly: their computed distance to themselves is only
        # approximately 0.
        weights = jnp.where(chosen, 0.0, jnp.where(j == 0, 1.0, nearest))
        index = _sample(weights, u[j], chosen)
        nearest = jnp.minimum(nearest, _sq_dists(x, x[index][None])[:, 0])
        return centers.at[j].set(index), chosen.at[index].set(True), nearest

    start = (jnp.zeros(k, jnp.int32), jnp.zeros(n, bool), jnp.full(n, jnp.inf, x.dtype))
    centers, _, _ = jax.lax.fori_loop(0, k, seed_step, start)

    def assign(c):
        sq = _sq_dists(x, c)
        return jnp.argmin(sq, axis=1), sq

    def update(labels, sq):
        onehot = jax.nn.one_hot(labels, k, dtype=x.dtype)
        counts = jnp.sum(onehot, axis=0)
        means = jnp.dot(onehot.T, x, precision=HIGHEST) / jnp.maximum(counts, 1.0)[:, None]
        empty = counts == 0
        own = jnp.take_along_axis(sq, labels[:, None], axis=1)[:, 0]
        farthest = jnp.argsort(-own, stable=True)
        rank = jnp.clip(jnp.cumsum(empty) - 1, 0, n - 1)
        return jnp.where(empty[:, None], x[farthest[rank]], means)

    def body(state):
        iterations, _, labels, sq, _ = state
        c = update(labels, sq)
        new_labels, new_sq = assign(c)
        return iterations + 1, c, new_labels, new_sq, jnp.any(new_labels != labels)

    def running(state):
        iterations, _, _, _, changed = state
        return changed & (iterations < max_iter)

    c = x[centers]
    labels, sq = assign(c)
    _, c, labels, sq, changed = jax.lax.while_loop(
        running, body, (jnp.int32(0), c, labels, sq, jnp.bool_(True))
    )
    own = jnp.sum(jnp.square(x - c[labels]), axis=1)
    return c, labels, sq, own, changed


@functools.partial(jax.jit, static_argnames=('kmax', 'chunk'))
def _mean_neighbor_distance(x, labels, k, *, kmax, chunk):
    n, d = x.shape
    pad = -n % chunk
    row_blocks = jnp.pad(x, ((0, pad), (0, 0))).reshape(-1, chunk, d)
    label_blocks = jnp.pad(labels, (0, pad), constant_values=-1).reshape(-1, chunk)
    id_blocks = jnp.arange(n + pad).reshape(-1, chunk)
    columns = jnp.arange(n)

    def block(args):
        rows, row_labels, row_ids = args
        sq = _sq_dists(rows, x)
        neighbor = (row_labels[:, None] == labels[None, :]) & (row_ids[:, None] != columns[None, :])
        nearest, _ = jax.lax.top_k(-jnp.where(neighbor, sq, jnp.inf), kmax)
        return jnp.sqrt(-nearest)

    nearest = jax.lax.map(block, (row_blocks, label_blocks, id_blocks)).reshape(-1, kmax)[:n]
    used = jnp.arange(kmax)[None, :] < k[:, None]
    return jnp.sum(jnp.where(used, nearest, 0.0), axis=1) / jnp.maximum(k, 1)


@functools.partial(jax.jit, static_argnames=('budget', 'kmax', 'chunk'))
def _farthest_first(x, *, budget, kmax, chunk):
    n = x.shape[0]
    spread = _mean_neighbor_distance(
        x, jnp.zeros(n, jnp.int32), jnp.full(n, kmax, jnp.int32), kmax=kmax, chunk=chunk
    )

    def step(j, state):
        picks, chosen, nearest = state
        farthest = jnp.argmax(jnp.where(chosen, -1.0, nearest))
        index = jnp.where(j == 0, jnp.argmin(spread), farthest)
        nearest = jnp.minimum(nearest, _sq_dists(x, x[index][None])[:, 0])
        return picks.at[j].set(index), chosen.at[index].set(True), nearest

    start = (jnp.zeros(budget, jnp.int32), jnp.zeros(n, bool), jnp.full(n, jnp.inf, x.dtype))
    picks, _, _ = jax.lax.fori_loop(0, budget, step, start)
    labels = jnp.argmin(_sq_dists(x, x[picks]), axis=1)
    return picks, labels.at[picks].set(jnp.arange(budget))


def _pick_per_cluster(labels, score, sq_dist):
    """One pick per cluster, largest cluster first: its member of lowest ``score``.

    Scores within a factor ``1 + TIE`` of the lowest count as equal and the lowest row
    index wins (module docstring).

    Returns ``(picks, order)``: ``order[i]`` is the k-means cluster of pick i. A cluster
    left empty (Lloyd stopped by ``max_iter``) takes the unpicked row nearest its centroid.
    """
    k = sq_dist.shape[1]
    sizes = np.bincount(labels, minlength=k)
    order = np.argsort(-sizes, kind='stable')
    picks = np.empty(k, np.int64)
    taken = np.zeros(labels.size, bool)
    for i, c in enumerate(order):
        members = np.flatnonzero(labels == c)
        if members.size:
            scores = score[members]
            picks[i] = members[np.flatnonzero(scores <= scores.min() * (1 + TIE))[0]]
        else:  # sizes sort empty clusters last, so every member pick is already made
            picks[i] = np.argmin(np.where(taken, np.inf, sq_dist[:, c]))
        taken[picks[i]] = True
    return picks, order


def _selection(first, inverse, picks, cluster, distance, labels, method, seed) -> Selection:
    budget = picks.size
    fields = {
        'indices': first[picks],
        'cluster': np.asarray(cluster, np.int64),
        'distance_to_centroid': np.full(budget, np.nan) if distance is None else distance,
        'assignment': np.asarray(labels, np.int64)[inverse],
    }
    for value in fields.values():
        value.flags.writeable = False
    return Selection(**fields, method=method, seed=seed)


def _validated_features(features) -> np.ndarray:
    """The features as a float32 (N, D) array, or a ConfigError naming what is wrong."""
    try:
        array = np.asarray(features)
    except (TypeError, ValueError) as err:  # ragged nested lists
        raise ConfigError(f'features: {err}: expected an (images, features) array') from None
    if array.dtype.kind not in 'biuf':
        raise ConfigError(f'features of dtype {array.dtype}: expected real numbers')
    if array.ndim != 2 or 0 in array.shape:
        raise ConfigError(
            f'features of shape {array.shape}: expected a 2-D (images, features) array with at least '
            'one image and one feature'
        )
    with np.errstate(over='ignore'):  # values beyond float32 become inf, reported below
        rows = array.astype(np.float32)
    bad = ~np.isfinite(rows)
    if bad.any():
        row, col = np.argwhere(bad)[0]
        raise ConfigError(
            f'features[{row}, {col}]={array[row, col].item()!r}: expected finite float32 values '
            f'({int(bad.sum())} entries are not)'
        )
    return rows


def _distinct_rows(rows: np.ndarray):
    """``(first, inverse)``: each distinct row's first index (ascending) and each row's group."""
    groups: dict[bytes, int] = {}
    first = []
    inverse = np.empty(rows.shape[0], np.int64)
    # + 0.0 turns -0.0 into 0.0, so the byte comparison equals float comparison.
    for i, row in enumerate(np.ascontiguousarray(rows + np.float32(0.0))):
        key = row.tobytes()
        if key not in groups:
            groups[key] = len(first)
            first.append(i)
        inverse[i] = groups[key]
    return np.asarray(first, np.int64), inverse


def _check_int(name: str, value, minimum: int) -> None:
    if not is_count(value, minimum):
        raise ConfigError(f'{name}={value!r}: expected an integer >= {minimum}')
