"""Tests for fewshot_jax.pretrain.losses against plain-loop float64 references."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from fewshot_jax.pretrain import losses

# ---------------------------------------------------------------------------
# Loop references: written from the definitions, float64, no vectorisation.
# ---------------------------------------------------------------------------


def _normalized_rows(z):
    rows = []
    for row in z:
        norm = math.sqrt(sum(float(x) * float(x) for x in row))
        rows.append([float(x) / norm for x in row])
    return rows


def _dot(a, b):
    return sum(x * y for x, y in zip(a, b, strict=True))


def reference_nt_xent_standard(z1, z2, temperature):
    n = len(z1)
    views = _normalized_rows(z1) + _normalized_rows(z2)
    total = 0.0
    for anchor in range(2 * n):
        positive = anchor + n if anchor < n else anchor - n
        denominator = 0.0
        for other in range(2 * n):
            if other != anchor:
                denominator += math.exp(_dot(views[anchor], views[other]) / temperature)
        numerator = math.exp(_dot(views[anchor], views[positive]) / temperature)
        total += -math.log(numerator / denominator)
    return total / (2 * n)


def reference_nt_xent_paper(z1, z2, temperature):
    n = len(z1)
    u1, u2 = _normalized_rows(z1), _normalized_rows(z2)
    total = 0.0
    # First half of the logits: anchor z1[i] against every z2[j].
    for i in range(n):
        denominator = sum(math.exp(_dot(u1[i], u2[j]) / temperature) for j in range(n))
        total += -math.log(math.exp(_dot(u1[i], u2[i]) / temperature) / denominator)
    # Second half (the transpose): anchor z2[i] against every z1[j].
    for i in range(n):
        denominator = sum(math.exp(_dot(u2[i], u1[j]) / temperature) for j in range(n))
        total += -math.log(math.exp(_dot(u2[i], u1[i]) / temperature) / denominator)
    return total / (2 * n)


def _standardized_columns(z, eps):
    n, d = len(z), len(z[0])
    out = [[0.0] * d for _ in range(n)]
    for k in range(d):
        mean = sum(float(z[b][k]) for b in range(n)) / n
        variance = sum((float(z[b][k]) - mean) ** 2 for b in range(n)) / n
        scale = math.sqrt(variance + eps)
        for b in range(n):
            out[b][k] = (float(z[b][k]) - mean) / scale
    return out


def _cross_correlation(z1, z2, eps):
    n, d = len(z1), len(z1[0])
    s1, s2 = _standardized_columns(z1, eps), _standardized_columns(z2, eps)
    c = [[0.0] * d for _ in range(d)]
    for i in range(d):
        for j in range(d):
            c[i][j] = sum(s1[b][i] * s2[b][j] for b in range(n)) / n
    return c


def _barlow_terms(c):
    d = len(c)
    on_diag = sum((1.0 - c[i][i]) ** 2 for i in range(d))
    off_diag = sum(c[i][j] ** 2 for i in range(d) for j in range(d) if i != j)
    return on_diag, off_diag


def reference_barlow_standard(z1, z2, lambd, eps=1e-5):
    on_diag, off_diag = _barlow_terms(_cross_correlation(z1, z2, eps))
    return on_diag + lambd * off_diag


def reference_barlow_paper(z1, z2, lambd):
    d = len(z1[0])
    on_diag, off_diag = _barlow_terms(_cross_correlation(z1, z2, 0.0))
    return on_diag / d + lambd * off_diag / (d * (d - 1))


def _random_pair(seed, n, d, scale=1.0, offset=0.0):
    rng = np.random.default_rng(seed)
    z1 = (rng.normal(size=(n, d)) * scale + offset).astype(np.float32)
    z2 = (z1 + 0.7 * rng.normal(size=(n, d)) * scale).astype(np.float32)
    return z1, z2


# ---------------------------------------------------------------------------
# Agreement with the references.
# ---------------------------------------------------------------------------

NT_XENT_CASES = [(2, 3, 0.1), (5, 4, 0.1), (8, 16, 0.5), (12, 7, 0.2), (6, 32, 1.0)]


@pytest.mark.parametrize('n,d,temperature', NT_XENT_CASES)
def test_nt_xent_standard_matches_loop_reference(n, d, temperature):
    z1, z2 = _random_pair(n * 100 + d, n, d)
    got = losses.nt_xent(z1, z2, temperature=temperature, variant='standard')
    want = reference_nt_xent_standard(z1, z2, temperature)
    assert got.dtype == jnp.float32 and got.shape == ()
    np.testing.assert_allclose(float(got), want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize('n,d,temperature', NT_XENT_CASES)
def test_nt_xent_paper_matches_loop_reference(n, d, temperature):
    z1, z2 = _random_pair(n * 100 + d + 1, n, d)
    got = losses.nt_xent(z1, z2, temperature=temperature, variant='paper')
    want = reference_nt_xent_paper(z1, z2, temperature)
    assert got.dtype == jnp.float32 and got.shape == ()
    np.testing.assert_allclose(float(got), want, rtol=1e-5, atol=1e-5)


def test_nt_xent_variants_differ():
    # Guards against one variant silently calling the other.
    z1, z2 = _random_pair(3, 6, 5)
    standard = float(losses.nt_xent(z1, z2, variant='standard'))
    paper = float(losses.nt_xent(z1, z2, variant='paper'))
    assert abs(standard - paper) > 1e-3


BARLOW_CASES = [(2, 2, 0.005), (4, 3, 0.005), (9, 8, 0.05), (16, 5, 1.0), (7, 12, 0.0)]


@pytest.mark.parametrize('n,d,lambd', BARLOW_CASES)
def test_barlow_twins_standard_matches_loop_reference(n, d, lambd):
    z1, z2 = _random_pair(n * 31 + d, n, d, scale=2.0, offset=1.5)
    got = losses.barlow_twins(z1, z2, lambd=lambd, variant='standard')
    want = reference_barlow_standard(z1, z2, lambd)
    assert got.dtype == jnp.float32 and got.shape == ()
    np.testing.assert_allclose(float(got), want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize('n,d,lambd', BARLOW_CASES)
def test_barlow_twins_paper_matches_loop_reference(n, d, lambd):
    z1, z2 = _random_pair(n * 31 + d + 1, n, d, scale=0.5, offset=-2.0)
    got = losses.barlow_twins(z1, z2, lambd=lambd, variant='paper')
    want = reference_barlow_paper(z1, z2, lambd)
    assert got.dtype == jnp.float32 and got.shape == ()
    np.testing.assert_allclose(float(got), want, rtol=1e-5, atol=1e-5)


def test_barlow_twins_eps_is_used_by_standard_only():
    # A tiny-variance dimension makes eps matter: the standard loss must
    # follow the eps passed in, the paper loss must ignore it.
    z1, z2 = _random_pair(11, 8, 4, scale=1e-3)
    for eps in (1e-5, 1e-7):
        got = float(losses.barlow_twins(z1, z2, variant='standard', eps=eps))
        want = reference_barlow_standard(z1, z2, 0.005, eps=eps)
        np.testing.assert_allclose(got, want, rtol=1e-4)
    paper_a = float(losses.barlow_twins(z1, z2, variant='paper', eps=1e-5))
    paper_b = float(losses.barlow_twins(z1, z2, variant='paper', eps=1.0))
    assert paper_a == paper_b


def test_barlow_twins_paper_single_dimension_has_no_off_diagonal_term():
    z1, z2 = _random_pair(5, 6, 1)
    c = _cross_correlation(z1, z2, 0.0)
    want = (1.0 - c[0][0]) ** 2
    got = float(losses.barlow_twins(z1, z2, lambd=0.5, variant='paper'))
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------------------
# Invariances and sanity.
# ---------------------------------------------------------------------------

ALL_LOSSES = [
    pytest.param(lambda a, b: losses.nt_xent(a, b, variant='standard'), id='nt_xent-standard'),
    pytest.param(lambda a, b: losses.nt_xent(a, b, variant='paper'), id='nt_xent-paper'),
    pytest.param(lambda a, b: losses.barlow_twins(a, b, variant='standard'), id='barlow-standard'),
    pytest.param(lambda a, b: losses.barlow_twins(a, b, variant='paper'), id='barlow-paper'),
]


@pytest.mark.parametrize('loss_fn', ALL_LOSSES)
def test_batch_permutation_leaves_loss_unchanged(loss_fn):
    z1, z2 = _random_pair(21, 10, 6)
    perm = np.random.default_rng(0).permutation(10)
    assert not np.array_equal(perm, np.arange(10))
    np.testing.assert_allclose(
        float(loss_fn(z1[perm], z2[perm])), float(loss_fn(z1, z2)), rtol=1e-5, atol=1e-6
    )


@pytest.mark.parametrize('loss_fn', ALL_LOSSES)
def test_swapping_views_leaves_loss_unchanged(loss_fn):
    z1, z2 = _random_pair(22, 9, 5)
    np.testing.assert_allclose(float(loss_fn(z2, z1)), float(loss_fn(z1, z2)), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize('variant', losses.NT_XENT_VARIANTS)
@pytest.mark.parametrize('scale', [0.01, 3.0, 250.0])
def test_nt_xent_is_scale_invariant(variant, scale):
    z1, z2 = _random_pair(23, 8, 6)
    base = float(losses.nt_xent(z1, z2, variant=variant))
    scaled = float(losses.nt_xent(z1 * scale, z2 * scale, variant=variant))
    np.testing.assert_allclose(scaled, base, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize('variant', losses.BARLOW_TWINS_VARIANTS)
def test_barlow_twins_is_invariant_to_per_dimension_affine_maps(variant):
    n, d = 12, 5
    z1, z2 = _random_pair(24, n, d)
    rng = np.random.default_rng(1)
    a1, a2 = rng.uniform(0.5, 2.0, size=(2, d)).astype(np.float32)
    b1, b2 = rng.uniform(-3.0, 3.0, size=(2, d)).astype(np.float32)
    base = float(losses.barlow_twins(z1, z2, variant=variant))
    moved = float(losses.barlow_twins(a1 * z1 + b1, a2 * z2 + b2, variant=variant))
    # 'standard' differs by eps / a² inside the square root only.
    np.testing.assert_allclose(moved, base, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize('variant', losses.NT_XENT_VARIANTS)
def test_nt_xent_identical_well_separated_views_beat_random_views(variant):
    n = 8
    z1 = np.eye(n, 16, dtype=np.float32) * 3.0  # orthogonal rows
    z2_random = np.random.default_rng(2).normal(size=(n, 16)).astype(np.float32)
    aligned = float(losses.nt_xent(z1, z1, variant=variant))
    random = float(losses.nt_xent(z1, z2_random, variant=variant))
    assert aligned < random
    # With τ = 0.1 a positive at cosine 1 against negatives at cosine 0 wins
    # by e^10, so the loss is close to zero.
    assert aligned < 0.01


def _decorrelated_projections():
    # Columns 1..4 of an 8x8 Sylvester-Hadamard matrix: zero mean, unit
    # variance, mutually orthogonal over the batch.
    h = np.array([[1.0]])
    for _ in range(3):
        h = np.block([[h, h], [h, -h]])
    return h[:, 1:5].astype(np.float32)


@pytest.mark.parametrize('variant', losses.BARLOW_TWINS_VARIANTS)
def test_barlow_twins_identical_decorrelated_views_give_near_zero_loss(variant):
    z = _decorrelated_projections()
    got = float(losses.barlow_twins(z, z, lambd=0.005, variant=variant))
    # C = I · 1/(1+eps): the diagonal term is ~D·eps², the off-diagonal 0.
    assert 0.0 <= got < 1e-8
    random = np.random.default_rng(4).normal(size=z.shape).astype(np.float32)
    assert float(losses.barlow_twins(z, random, variant=variant)) > 0.1


def test_nt_xent_zero_row_stays_finite():
    z1, z2 = _random_pair(25, 4, 3)
    z1[2] = 0.0
    value, grads = jax.value_and_grad(losses.nt_xent, argnums=(0, 1))(z1, z2)
    assert np.isfinite(float(value))
    assert all(np.all(np.isfinite(g)) for g in grads)


# ---------------------------------------------------------------------------
# jit, gradients, dtypes.
# ---------------------------------------------------------------------------


@pytest.mark.parametrize('loss_fn', ALL_LOSSES)
def test_jit_matches_eager_and_gradients_are_finite(loss_fn):
    z1, z2 = _random_pair(26, 8, 6)
    eager = float(loss_fn(z1, z2))
    value, grads = jax.jit(jax.value_and_grad(loss_fn, argnums=(0, 1)))(z1, z2)
    np.testing.assert_allclose(float(value), eager, rtol=1e-6, atol=1e-7)
    for g in grads:
        assert g.shape == z1.shape and g.dtype == jnp.float32
        assert np.all(np.isfinite(g))
        assert np.any(g != 0.0)


def test_hyperparameters_may_be_traced_under_jit():
    z1, z2 = _random_pair(27, 6, 4)
    nt = jax.jit(losses.nt_xent)(z1, z2, 0.5)
    bt = jax.jit(losses.barlow_twins)(z1, z2, 0.05)
    np.testing.assert_allclose(float(nt), reference_nt_xent_standard(z1, z2, 0.5), rtol=1e-5)
    np.testing.assert_allclose(float(bt), reference_barlow_standard(z1, z2, 0.05), rtol=1e-5)


@pytest.mark.parametrize('loss_fn', ALL_LOSSES)
def test_bfloat16_inputs_are_computed_in_float32(loss_fn):
    z1, z2 = _random_pair(28, 8, 6)
    z1_bf16, z2_bf16 = jnp.asarray(z1, jnp.bfloat16), jnp.asarray(z2, jnp.bfloat16)
    got = loss_fn(z1_bf16, z2_bf16)
    assert got.dtype == jnp.float32
    # Same value as the float32 loss of the bf16-rounded inputs: the upcast
    # happens before any arithmetic.
    want = loss_fn(np.asarray(z1_bf16, np.float32), np.asarray(z2_bf16, np.float32))
    np.testing.assert_allclose(float(got), float(want), rtol=1e-6, atol=1e-7)


# ---------------------------------------------------------------------------
# Errors.
# ---------------------------------------------------------------------------

LOSS_FNS = [
    pytest.param(losses.nt_xent, id='nt_xent'),
    pytest.param(losses.barlow_twins, id='barlow_twins'),
]


@pytest.mark.parametrize('loss_fn', LOSS_FNS)
def test_unknown_variant_is_rejected_with_allowed_values(loss_fn):
    z1, z2 = _random_pair(29, 4, 3)
    with pytest.raises(ValueError, match=r"'simclr'.*'standard'.*'paper'"):
        loss_fn(z1, z2, variant='simclr')


@pytest.mark.parametrize('loss_fn', LOSS_FNS)
def test_mismatched_shapes_are_rejected_naming_both(loss_fn):
    z1 = np.zeros((4, 3), np.float32)
    z2 = np.zeros((4, 5), np.float32)
    with pytest.raises(ValueError, match=r'\(4, 3\).*\(4, 5\)'):
        loss_fn(z1, z2)
    with pytest.raises(ValueError, match=r'\(4, 3\).*\(4, 5\)'):
        jax.jit(loss_fn)(z1, z2)


@pytest.mark.parametrize('loss_fn', LOSS_FNS)
def test_batch_of_one_is_rejected(loss_fn):
    z = np.ones((1, 3), np.float32)
    with pytest.raises(ValueError, match=r'N=1'):
        loss_fn(z, z)


@pytest.mark.parametrize('loss_fn', LOSS_FNS)
@pytest.mark.parametrize('shape', [(8,), (2, 3, 4)])
def test_non_matrix_projections_are_rejected(loss_fn, shape):
    z = np.ones(shape, np.float32)
    with pytest.raises(ValueError, match=r'2-D'):
        loss_fn(z, z)


@pytest.mark.parametrize('loss_fn', LOSS_FNS)
def test_integer_projections_are_rejected(loss_fn):
    z = np.ones((4, 3), np.int32)
    with pytest.raises(ValueError, match=r'int32'):
        loss_fn(z, z)


def test_bad_hyperparameters_are_rejected():
    z1, z2 = _random_pair(30, 4, 3)
    with pytest.raises(ValueError, match=r'temperature.*0'):
        losses.nt_xent(z1, z2, temperature=0.0)
    with pytest.raises(ValueError, match=r'lambd.*-0.1'):
        losses.barlow_twins(z1, z2, lambd=-0.1)
    with pytest.raises(ValueError, match=r'eps.*-1e-05'):
        losses.barlow_twins(z1, z2, eps=-1e-5)


def test_errors_are_value_error_subclasses():
    assert issubclass(losses.LossInputError, ValueError)


# ---------------------------------------------------------------------------
# Global batch sharded over 8 fake CPU devices.
# ---------------------------------------------------------------------------


def test_losses_over_a_batch_sharded_on_eight_devices():
    # tests/conftest.py gives this process 8 fake CPU devices.
    assert jax.device_count() == 8, jax.devices()
    mesh = jax.make_mesh((8,), ('data',), axis_types=(jax.sharding.AxisType.Auto,))
    rng = np.random.default_rng(0)
    z1 = rng.normal(size=(32, 12)).astype(np.float32)
    z2 = (z1 + 0.5 * rng.normal(size=(32, 12))).astype(np.float32)
    sharding = NamedSharding(mesh, P('data'))
    z1_sharded, z2_sharded = jax.device_put(z1, sharding), jax.device_put(z2, sharding)
    assert len(z1_sharded.addressable_shards) == 8
    assert z1_sharded.addressable_shards[0].data.shape == (4, 12)

    cases = [
        ('nt_xent', 'standard', losses.nt_xent),
        ('nt_xent', 'paper', losses.nt_xent),
        ('barlow_twins', 'standard', losses.barlow_twins),
        ('barlow_twins', 'paper', losses.barlow_twins),
    ]
    for name, variant, fn in cases:
        jitted = jax.jit(lambda a, b, fn=fn, variant=variant: fn(a, b, variant=variant))
        sharded = float(jitted(z1_sharded, z2_sharded))
        unsharded = float(fn(z1, z2, variant=variant))
        key = name + '/' + variant
        assert math.isfinite(unsharded), key
        np.testing.assert_allclose(sharded, unsharded, rtol=1e-5, atol=1e-5, err_msg=key)
