"""fewshot_jax.select against plain-Python references of each strategy, and its contract.

The references loop over points in float64 with directly computed distances; the
strategies compute in float32 JAX. On tie-free random pools the two make the same
choices, so indices and assignments must be equal and distances close.
"""

import math
import subprocess
import sys

import numpy as np
import pytest

from fewshot_jax.errors import ConfigError
from fewshot_jax.select import METHODS, Selection, duplicate_groups, select, strategies

NEIGHBORS = 20


def sq_distance(a, b):
    return sum((float(a[t]) - float(b[t])) ** 2 for t in range(len(a)))


def ref_distinct(rows):
    """First index of each distinct row, and each row's group (pairwise float32 comparison)."""
    first, inverse = [], []
    for i in range(len(rows)):
        for g, j in enumerate(first):
            if all(rows[i][t] == rows[j][t] for t in range(len(rows[i]))):
                inverse.append(g)
                break
        else:
            inverse.append(len(first))
            first.append(i)
    return first, inverse


def ref_standardize(rows):
    n, d = len(rows), len(rows[0])
    out = [[0.0] * d for _ in range(n)]
    for t in range(d):
        column = [float(rows[i][t]) for i in range(n)]
        if min(column) == max(column):
            continue
        mean = sum(column) / n
        std = math.sqrt(sum((v - mean) ** 2 for v in column) / n)
        for i in range(n):
            out[i][t] = (column[i] - mean) / std
    return out


def ref_sample(weights, u, chosen):
    total = sum(weights)
    if total == 0:
        return chosen.index(False)
    target, acc = float(u) * total, 0.0
    for i, w in enumerate(weights):
        acc += w
        if acc > target:
            return i
    return max(i for i, w in enumerate(weights) if w > 0)


def ref_assign(x, centroids):
    sq = [[sq_distance(p, c) for c in centroids] for p in x]
    labels = [min(range(len(centroids)), key=lambda j, row=row: row[j]) for row in sq]
    return labels, sq


def ref_kmeans(x, u, max_iter=100):
    """Centroids, labels, squared distances, and how many times a cluster was found empty."""
    n, k = len(x), len(u)
    chosen, nearest, centers = [False] * n, [math.inf] * n, []
    for j in range(k):
        weights = [0.0 if chosen[i] else (1.0 if j == 0 else nearest[i]) for i in range(n)]
        index = ref_sample(weights, u[j], chosen)
        centers.append(index)
        chosen[index] = True
        nearest = [min(nearest[i], sq_distance(x[i], x[index])) for i in range(n)]
    centroids = [list(x[i]) for i in centers]
    labels, sq = ref_assign(x, centroids)
    emptied = 0
    for _ in range(max_iter):
        members = [[i for i in range(n) if labels[i] == c] for c in range(k)]
        emptied += sum(not m for m in members)
        farthest = sorted(range(n), key=lambda i: -sq[i][labels[i]])
        empties = 0
        for c in range(k):
            if members[c]:
                centroids[c] = [sum(x[i][t] for i in members[c]) / len(members[c]) for t in range(len(x[0]))]
            else:
                centroids[c] = list(x[farthest[empties]])
                empties += 1
        new_labels, sq = ref_assign(x, centroids)
        if new_labels == labels:
            break
        labels = new_labels
    emptied += len(set(labels)) < k  # left empty by the cap
    return centroids, labels, sq, emptied


def ref_mean_neighbor_distance(x, i, candidates, k):
    distances = sorted(math.sqrt(sq_distance(x[i], x[j])) for j in candidates if j != i)
    return sum(distances[:k]) / k if k else 0.0


def ref_select(features, budget, method, seed, max_iter=100):
    rows = np.asarray(features, np.float32)
    first, inverse = ref_distinct(rows)
    n = len(first)
    if method == 'random':
        keys = np.random.default_rng(seed).random(n)
        picks = []
        for _ in range(budget):
            picks.append(min((i for i in range(n) if i not in picks), key=lambda i: keys[i]))
        return [first[p] for p in picks], [-1] * budget, [math.nan] * budget, [-1] * len(rows)
    x = ref_standardize([rows[i] for i in first])
    if method == 'coreset':
        k = min(NEIGHBORS, n - 1)
        spread = [ref_mean_neighbor_distance(x, i, range(n), k) for i in range(n)]
        picks = [min(range(n), key=lambda i: spread[i])]
        while len(picks) < budget:
            gap = [min(sq_distance(x[i], x[p]) for p in picks) for i in range(n)]
            picks.append(max((i for i in range(n) if i not in picks), key=lambda i: gap[i]))
        labels = [min(range(budget), key=lambda j, i=i: sq_distance(x[i], x[picks[j]])) for i in range(n)]
        for j, p in enumerate(picks):
            labels[p] = j
        cells = [labels[g] for g in inverse]
        return [first[p] for p in picks], list(range(budget)), [math.nan] * budget, cells
    u = np.random.default_rng(seed).random(budget, dtype=np.float32)
    picks, labels, distance = ref_cluster_and_pick(x, u, method, max_iter)
    return [first[p] for p in picks], list(range(budget)), distance, [labels[g] for g in inverse]


def ref_cluster_and_pick(x, u, method, max_iter=100):
    """Picks (rows of x), each row's cluster numbered in pick order, distances to centroids."""
    n, k = len(x), len(u)
    centroids, labels, sq, _ = ref_kmeans(x, u, max_iter)
    sizes = [labels.count(c) for c in range(k)]
    order = sorted(range(k), key=lambda c: -sizes[c])
    picks = []
    for c in order:
        members = [i for i in range(n) if labels[i] == c]
        if not members:
            picks.append(min((i for i in range(n) if i not in picks), key=lambda i: sq[i][c]))
        else:
            if method == 'kmeans':
                scores = [sq[i][c] for i in members]
            else:
                neighbors = min(NEIGHBORS, len(members) - 1)
                scores = [ref_mean_neighbor_distance(x, i, members, neighbors) for i in members]
            # Scores within 1e-4 of the best are ties, won by the lowest index.
            picks.append(
                next(i for i, v in zip(members, scores, strict=True) if v <= min(scores) * (1 + 1e-4))
            )
    distance = [math.sqrt(sq_distance(x[p], centroids[c])) for p, c in zip(picks, order, strict=True)]
    return picks, [order.index(c) for c in labels], distance


def assert_matches_reference(features, budget, method, seed):
    got = select(features, budget, method, seed=seed)
    indices, cluster, distance, assignment = ref_select(features, budget, method, seed)
    np.testing.assert_array_equal(got.indices, indices)
    np.testing.assert_array_equal(got.cluster, cluster)
    np.testing.assert_array_equal(got.assignment, assignment)
    np.testing.assert_allclose(got.distance_to_centroid, distance, rtol=1e-5, atol=1e-5)


def pool(seed, n=40, d=6):
    return np.random.default_rng(seed).standard_normal((n, d))


def blobs(seed, n=40, d=6, centers=4):
    rng = np.random.default_rng(seed)
    means = rng.normal(0, 4, (centers, d))
    return means[rng.integers(centers, size=n)] + rng.standard_normal((n, d))


def with_duplicates(features):
    """Copies of rows 3, 3, 7 and 0 inserted among the others."""
    rows = list(features)
    for position, source in ((5, 3), (11, 3), (20, 7), (33, 0)):
        rows.insert(position, features[source])
    return np.asarray(rows)


@pytest.mark.parametrize('method', METHODS)
@pytest.mark.parametrize('seed', [0, 1, 2, 3, 4])
def test_matches_reference_on_random_pools(method, seed):
    for budget in (1, 5, 12):
        assert_matches_reference(pool(100 + seed), budget, method, seed)


@pytest.mark.parametrize('method', METHODS)
def test_matches_reference_on_clustered_pools_with_duplicates(method):
    for seed in range(3):
        assert_matches_reference(with_duplicates(blobs(200 + seed)), 5, method, seed)


def uniforms_choosing(x, centers):
    """Seeding uniforms under which k-means++ starts from the rows ``centers``, in order."""
    n, chosen, nearest, u = len(x), [False] * len(x), [math.inf] * len(x), []
    for j, index in enumerate(centers):
        weights = [0.0 if chosen[i] else (1.0 if j == 0 else nearest[i]) for i in range(n)]
        u.append((sum(weights[:index]) + weights[index] / 2) / sum(weights))  # mid-interval
        chosen[index] = True
        nearest = [min(nearest[i], sq_distance(x[i], x[index])) for i in range(n)]
    return np.asarray(u, np.float32)


# Eight 2-D points on which Lloyd, seeded at rows 0, 4, 5 and 7, empties a cluster in its
# first update (k-means++ rarely seeds like this, so the uniforms are chosen by hand).
EMPTYING = [[-0.85, 0.32], [1.79, 0.88], [0.37, 1.49], [0.73, 2.08]]
EMPTYING += [[-1.34, 0.13], [0.54, -0.67], [0.02, -1.06], [-1.35, 1.22]]


@pytest.mark.parametrize('method', ['kmeans', 'typical'])
@pytest.mark.parametrize('max_iter', [1, 100])
def test_emptied_clusters_match_reference(method, max_iter):
    # max_iter=1 stops with the cluster empty (the pick falls back to the nearest unpicked
    # row); 100 lets Lloyd move the emptied centroid to the farthest row and go on.
    x = ref_standardize(np.asarray(EMPTYING, np.float32))
    u = uniforms_choosing(x, [0, 4, 5, 7])
    assert ref_kmeans(x, u, max_iter)[3] > 0
    picks, labels, distance = strategies.cluster_and_pick(
        np.asarray(x, np.float32), u, method, max_iter=max_iter
    )
    ref_picks, ref_labels, ref_distance = ref_cluster_and_pick(x, u, method, max_iter)
    np.testing.assert_array_equal(picks, ref_picks)
    np.testing.assert_array_equal(labels, ref_labels)
    np.testing.assert_allclose(distance, ref_distance, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize('method', ['kmeans', 'typical'])
def test_a_two_image_cluster_picks_its_lower_index(method):
    # Rows 2 and 5 lie symmetrically about their centroid: tied for both criteria.
    # Row 5 is nearer in float32 by rounding alone when the distances come from the expanded
    # form ‖a‖² + ‖b‖² − 2ab of these far-off rows (0.000463 against 0.000465).
    rng = np.random.default_rng(1)
    features = rng.normal(0, 0.3, (8, 3))
    middle, offset = rng.normal(30, 1, 3), rng.normal(0, 0.5, 3)
    features[2], features[5] = middle + offset, middle - offset
    for seed in range(5):
        got = select(features, 2, method, seed=seed)
        np.testing.assert_array_equal(got.assignment == got.assignment[2], np.isin(np.arange(8), [2, 5]))
        assert 2 in got.indices and 5 not in got.indices


@pytest.mark.parametrize('method', METHODS)
def test_deterministic_for_a_seed(method):
    features = pool(7)
    a, b = select(features, 5, method, seed=3), select(features, 5, method, seed=3)
    for field in ('indices', 'cluster', 'distance_to_centroid', 'assignment'):
        np.testing.assert_array_equal(getattr(a, field), getattr(b, field))
    assert (a.method, a.seed) == (method, 3)


@pytest.mark.parametrize('method', ['random', 'kmeans'])
def test_seeds_differ(method):
    features = pool(8)
    picks = {tuple(select(features, 5, method, seed=s).indices) for s in range(4)}
    assert len(picks) > 1


def test_coreset_ignores_the_seed():
    features = pool(9)
    np.testing.assert_array_equal(
        select(features, 5, 'coreset', seed=0).indices, select(features, 5, 'coreset', seed=5).indices
    )


def test_random_is_uniform():
    counts = np.zeros(8)
    for seed in range(400):
        counts[select(np.eye(8), 2, 'random', seed=seed).indices] += 1
    # 800 picks over 8 images: 100 expected each, standard deviation about 8.7.
    assert counts.min() > 65 and counts.max() < 135


@pytest.mark.parametrize('method', METHODS)
def test_picks_are_distinct_and_shaped(method):
    features = pool(10)
    for budget in (1, 12, 40):
        got = select(features, budget, method, seed=1)
        assert isinstance(got, Selection)
        assert got.indices.shape == got.cluster.shape == got.distance_to_centroid.shape == (budget,)
        assert got.assignment.shape == (40,)
        assert len(set(got.indices.tolist())) == budget
        assert got.indices.min() >= 0 and got.indices.max() < 40
        assert not got.indices.flags.writeable
    np.testing.assert_array_equal(np.sort(got.indices), np.arange(40))


@pytest.mark.parametrize('method', METHODS)
def test_duplicates_never_picked_twice(method):
    features = with_duplicates(pool(11))  # 44 rows, 40 distinct
    groups = duplicate_groups(features)
    for budget in (12, 40):
        picks = set(select(features, budget, method, seed=2).indices.tolist())
        for group in groups:
            assert len(picks & set(group)) <= 1
            assert not picks & set(group[1:])  # a group stands by its first member
    assert len(picks) == 40  # every distinct image once


def test_duplicate_groups():
    features = with_duplicates(pool(12))
    assert duplicate_groups(features) == ((0, 33), (3, 5, 11), (8, 20))
    assert duplicate_groups(pool(12)) == ()
    # -0.0 and 0.0 are the same value; float64 rows equal as float32 are the same row.
    signed_zero = np.array([[0.0, 1.0], [-0.0, 1.0], [1.0, 1.0], [1.0 + 1e-12, 1.0]])
    assert duplicate_groups(signed_zero) == ((0, 1), (2, 3))


def test_duplicates_share_the_cluster_of_their_first_member():
    features = with_duplicates(blobs(13))
    for method in ('kmeans', 'typical', 'coreset'):
        got = select(features, 5, method, seed=0)
        for group in duplicate_groups(features):
            assert len({got.assignment[i] for i in group}) == 1
        assert np.all(got.assignment[got.indices] == got.cluster)


@pytest.mark.parametrize('budget', [0, -1, 41])
def test_budget_out_of_range(budget):
    features = with_duplicates(pool(14, n=37))  # 41 rows, 37 distinct
    with pytest.raises(ConfigError, match=rf'budget={budget}: .* 1 to 37, .* \(41 in the pool, 4 of them'):
        select(features, budget, 'random')


@pytest.mark.parametrize('budget', [2.0, True, '3', None])
def test_budget_not_an_integer(budget):
    with pytest.raises(ConfigError, match='budget='):
        select(pool(15), budget, 'kmeans')


def test_unknown_method_lists_the_known_ones():
    with pytest.raises(ConfigError, match=r"method='kcenter': expected one of \('random', 'kmeans', 'typi"):
        select(pool(16), 3, 'kcenter')


@pytest.mark.parametrize(
    ('features', 'message'),
    [
        (np.zeros(5), r'shape \(5,\): expected a 2-D'),
        (np.zeros((2, 3, 4)), r'shape \(2, 3, 4\): expected a 2-D'),
        (np.zeros((4, 0)), r'shape \(4, 0\): expected a 2-D'),
        (np.zeros((0, 3)), r'shape \(0, 3\): expected a 2-D .* at least one image'),
        (np.array([['a', 'b']]), 'dtype <U1: expected real numbers'),
        (np.array([[1.0, np.nan], [np.inf, 2.0]]), r'features\[0, 1\]=.*nan.*expected finite.*\(2 entries'),
        (np.array([[1.0, 1e300]]), r'features\[0, 1\]=.*1e\+300.*expected finite float32'),
        ([[1.0, 2.0], [3.0]], 'expected an \\(images, features\\) array'),
    ],
)
def test_bad_features(features, message):
    with pytest.raises(ConfigError, match=message):
        select(features, 1, 'typical')
    with pytest.raises(ConfigError, match=message):
        duplicate_groups(features)


@pytest.mark.parametrize(('name', 'value'), [('seed', -1), ('seed', 1.5), ('max_iter', 0)])
def test_bad_seed_or_max_iter(name, value):
    with pytest.raises(ConfigError, match=rf'{name}={value}: expected an integer >= '):
        select(pool(17), 3, 'kmeans', **{name: value})


def test_errors_are_one_line():
    for call in (lambda: select(pool(18), 99, 'coreset'), lambda: select(pool(18), 3, 'x')):
        with pytest.raises(ConfigError) as info:
            call()
        assert '\n' not in str(info.value)


def test_single_image_pool():
    for method in METHODS:
        assert select(np.ones((3, 4)), 1, method).indices.tolist() == [0]


def test_import_is_cheap():
    code = 'import sys, fewshot_jax.select as s; print("jax" in sys.modules, "select" in dir(s))'
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ['False', 'True']
