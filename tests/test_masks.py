"""Tests for fewshot_jax.analysis.percolation: the fast path must equal scikit-learn's DBSCAN."""

import numpy as np
import pytest

from fewshot_jax import masks as P


def assert_same_clusters(mask, eps=2.0, min_samples=2):
    fast = P.fast_clusters(mask, eps, min_samples)
    ref = P.dbscan_clusters(mask, eps, min_samples)
    np.testing.assert_array_equal(fast.core, ref.core, err_msg=f'core, eps={eps} ms={min_samples}')
    np.testing.assert_array_equal(fast.labels, ref.labels, err_msg=f'labels, eps={eps} ms={min_samples}')
    return fast


def reference_percolates(mask, eps=2.0, min_samples=2, margin=2):
    """Plain-loop DBSCAN core clusters (flood fill over core points) and the span test."""
    h, w = len(mask), len(mask[0])
    pts = [(y, x) for y in range(h) for x in range(w) if mask[y][x]]
    r = int(eps)

    def neighbours(y, x):
        out = []
        for dy in range(-r, r + 1):
            for dx in range(-r, r + 1):
                yy, xx = y + dy, x + dx
                if dy * dy + dx * dx <= eps * eps and 0 <= yy < h and 0 <= xx < w and mask[yy][xx]:
                    out.append((yy, xx))
        return out  # includes the point itself, as DBSCAN counts it

    core = {p for p in pts if len(neighbours(*p)) >= min_samples}
    seen = set()
    for start in sorted(core):
        if start in seen:
            continue
        stack, members = [start], []
        seen.add(start)
        while stack:
            p = stack.pop()
            members.append(p)
            for q in neighbours(*p):
                if q in core and q not in seen:
                    seen.add(q)
                    stack.append(q)
        ys = [p[0] for p in members]
        xs = [p[1] for p in members]
        if max(ys) - min(ys) >= h - margin and max(xs) - min(xs) >= w - margin:
            return True
    return False


@pytest.mark.parametrize('seed', range(4))
def test_fast_equals_dbscan_on_random_masks_paper_params(seed):
    rng = np.random.default_rng(seed)
    for _ in range(60):
        h, w = rng.integers(1, 30, 2)
        density = rng.uniform(0.02, 0.7)
        assert_same_clusters(rng.random((h, w)) < density)


@pytest.mark.parametrize('eps', [0.5, 1.0, 1.2, 1.5, 2.0, 2.2, 2.5, 3.0, 3.7])
@pytest.mark.parametrize('min_samples', [1, 2, 3, 5])
def test_fast_equals_dbscan_other_params(eps, min_samples):
    rng = np.random.default_rng(int(eps * 10) * 10 + min_samples)
    for _ in range(12):
        h, w = rng.integers(1, 22, 2)
        assert_same_clusters(rng.random((h, w)) < rng.uniform(0.05, 0.6), eps, min_samples)


def test_fast_equals_dbscan_on_wire_like_masks():
    # Sparse thin curves are where straight two-pixel gaps and diagonal steps matter most.
    rng = np.random.default_rng(7)
    for _ in range(20):
        m = np.zeros((48, 48), bool)
        for _ in range(rng.integers(1, 6)):
            y, x = rng.uniform(0, 48, 2)
            a = rng.uniform(0, 2 * np.pi)
            for _ in range(60):
                a += rng.normal(0, 0.3)
                y, x = y + 1.3 * np.sin(a), x + 1.3 * np.cos(a)
                if 0 <= y < 48 and 0 <= x < 48 and rng.random() < 0.7:
                    m[int(y), int(x)] = True
        assert_same_clusters(m)


@pytest.mark.parametrize(
    'mask',
    [
        np.zeros((9, 9), bool),
        np.ones((9, 9), bool),
        np.ones((1, 1), bool),
        np.zeros((1, 1), bool),
        np.ones((1, 7), bool),
        np.ones((7, 1), bool),
        np.eye(6, dtype=bool),
        np.eye(6, dtype=bool)[::-1],
    ],
    ids=['empty', 'full', 'one-by-one', 'one-by-one-empty', 'row', 'column', 'diag', 'antidiag'],
)
def test_edge_cases_equal_dbscan(mask):
    assert_same_clusters(mask)


def test_one_pixel_is_noise():
    m = np.zeros((5, 5), bool)
    m[2, 2] = True
    c = assert_same_clusters(m)
    assert c.n_clusters == 0 and not c.core.any()


@pytest.mark.parametrize(
    'offset, joined',
    [
        ((0, 2), True),
        ((2, 0), True),
        ((1, 1), True),
        ((0, 1), True),
        ((2, 2), False),
        ((1, 2), False),
        ((2, 1), False),
        ((0, 3), False),
        ((3, 0), False),
    ],
)
def test_pairs_at_the_radius(offset, joined):
    # Distance exactly 2 (straight) is inside eps=2; the diagonal gap (2, 2) and the
    # knight's move (sqrt 5) are outside.
    m = np.zeros((6, 6), bool)
    m[1, 1] = True
    m[1 + offset[0], 1 + offset[1]] = True
    c = assert_same_clusters(m)
    assert c.n_clusters == (1 if joined else 0)


def test_pixels_touching_all_borders():
    m = np.zeros((10, 12), bool)
    m[0, :] = m[-1, :] = m[:, 0] = m[:, -1] = True
    m[0, 5] = False  # a straight one-pixel gap on the border stays joined
    c = assert_same_clusters(m)
    assert c.n_clusters == 1
    assert P.percolates(m)


def test_bridge_does_not_join_distinct_clusters():
    # Two pixels two apart in a row, and a pair that is an 8-neighbour of the gap
    # pixel only: (0, 3) is sqrt 2 from (1, 2) -> joined; (3, 1) is 2 from (1, 1).
    m = np.zeros((6, 6), bool)
    m[2, 0] = m[2, 2] = True  # bridge at (2, 1)
    m[0, 1] = m[0, 2] = True  # 2 rows above the gap: distance 2 from (2, 2) -> joined
    m[4, 4] = m[5, 5] = True  # far away: own cluster
    c = assert_same_clusters(m)
    assert c.n_clusters == 2


def test_percolates_simple_geometries():
    n = 20
    cross = np.zeros((n, n), bool)
    cross[n // 2, :] = cross[:, n // 2] = True
    assert P.percolates(cross)
    row_only = np.zeros((n, n), bool)
    row_only[n // 2, :] = True
    assert not P.percolates(row_only)
    assert P.percolates(np.eye(n, dtype=bool))
    assert not P.percolates(np.zeros((n, n), bool))


def test_percolation_margin_is_last_minus_first():
    n = 20
    m = np.zeros((n, n), bool)
    m[5, 1 : n - 1] = True  # columns 1..n-2: span n - 3 < n - 2
    m[1 : n - 1, 5] = True
    assert not P.percolates(m)
    m[5, n - 1] = True  # columns 1..n-1: span n - 2
    m[n - 1, 5] = True
    assert P.percolates(m)
    assert not P.percolates(m, margin=1)
    assert P.percolates(m, margin=3)


def test_gap_width_decides_percolation():
    n = 16
    m = np.zeros((n, n), bool)
    m[:, 3] = True
    m[8, :] = True
    m[8, 9] = False  # one missing pixel: the two sides are 2 apart
    assert P.percolates(m)
    m[8, 10] = False  # two missing pixels: 3 apart, the right side no longer joins
    assert not P.percolates(m, margin=2)


def test_noise_points_do_not_extend_spans():
    n = 16
    m = np.zeros((n, n), bool)
    m[8, :] = True
    m[1 : n - 1, 8] = True  # rows 1..14: span 13 < 14
    m[n - 1, 0] = True  # isolated pixel in the last row: noise
    assert not P.percolates(m)
    assert not P.percolates(m, method='dbscan')


def test_only_core_points_count_for_min_samples_above_two():
    # With eps=1 and min_samples=3 a line's end pixel has only itself and one
    # neighbour: it is a border point, so the core span is one pixel short at each end.
    n = 10
    m = np.zeros((n, n), bool)
    m[4, :] = True
    m[:, 4] = True
    assert P.percolates(m, eps=1.0, min_samples=2)
    assert not P.percolates(m, eps=1.0, min_samples=3)
    assert not P.percolates(m, method='dbscan', eps=1.0, min_samples=3)


@pytest.mark.parametrize('seed', range(3))
def test_percolates_matches_loop_reference_and_dbscan(seed):
    rng = np.random.default_rng(100 + seed)
    hits = 0
    for _ in range(40):
        n = int(rng.integers(4, 20))
        mask = rng.random((n, n)) < rng.uniform(0.2, 0.55)
        expected = reference_percolates(mask.tolist())
        assert P.percolates(mask) == expected
        assert P.percolates(mask, method='dbscan') == expected
        hits += expected
    assert 0 < hits < 40  # the densities straddle the threshold, so both answers occur


@pytest.mark.parametrize('margin', [0, 1, 3, 6, 30])
def test_percolates_margin_variants_match_loop_reference(margin):
    # Large margins make many clusters candidates (the vectorised span path),
    # small ones only a few (the projection path).
    rng = np.random.default_rng(200 + margin)
    for _ in range(25):
        n = int(rng.integers(3, 18))
        mask = rng.random((n, n + int(rng.integers(0, 4)))) < rng.uniform(0.1, 0.5)
        expected = reference_percolates(mask.tolist(), margin=margin)
        assert P.percolates(mask, margin=margin) == expected


def test_cluster_spans_against_loops():
    rng = np.random.default_rng(3)
    mask = rng.random((25, 31)) < 0.3
    c = P.fast_clusters(mask)
    spans = P.cluster_spans(c)
    for k in range(1, c.n_clusters + 1):
        ys, xs = [], []
        for y in range(25):
            for x in range(31):
                if c.labels[y, x] == k and c.core[y, x]:
                    ys.append(y)
                    xs.append(x)
        assert tuple(spans[k - 1]) == (max(ys) - min(ys), max(xs) - min(xs))


def test_pixel_density_and_value_conventions():
    rng = np.random.default_rng(0)
    m = rng.random((13, 17)) < 0.3
    count = sum(1 for row in m for v in row if v)
    assert P.pixel_density(m) == pytest.approx(count / (13 * 17))
    assert P.pixel_density(m.astype(np.uint8) * 255) == pytest.approx(count / (13 * 17))
    assert P.pixel_density(m.astype(np.float32)) == pytest.approx(count / (13 * 17))
    assert P.percolates(np.full((8, 8), 255, np.uint8))


@pytest.mark.parametrize(
    'bad, match',
    [
        (np.array([[0, 2], [1, 0]]), r'binary.*\[2\]'),
        (np.array([[0.0, 0.5], [1, 0]]), r'binary.*0\.5'),
        (np.zeros((2, 2, 2)), '2-D'),
        (np.zeros((0, 3)), 'empty'),
        (np.array([['a', 'b']]), 'dtype'),
    ],
)
def test_bad_masks_raise(bad, match):
    with pytest.raises(P.MaskError, match=match):
        P.pixel_density(bad)
    with pytest.raises(P.MaskError, match=match):
        P.percolates(bad)


def test_bad_parameters_raise():
    m = np.ones((4, 4), bool)
    with pytest.raises(ValueError, match='method'):
        P.percolates(m, method='bfs')
    with pytest.raises(ValueError, match='eps'):
        P.fast_clusters(m, eps=0)
    with pytest.raises(ValueError, match='min_samples'):
        P.fast_clusters(m, min_samples=0)
    with pytest.raises(ValueError, match='margin'):
        P.percolates(m, margin=-1)


def test_large_mask_fast_path():
    n = 2048
    m = np.zeros((n, n), bool)
    m[::16, :] = True  # horizontal lines 16 apart, joined by one vertical line
    assert not P.percolates(m)
    m[:, 1000] = True
    assert P.percolates(m)
    c = P.fast_clusters(m)
    assert c.n_clusters == 1
