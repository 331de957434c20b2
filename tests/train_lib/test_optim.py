"""Schedules span the whole run; LARS/weight-decay masks; freezing leaves params bit-identical."""

import math

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from fewshot_jax.train_lib.optim import make_optimizer, make_schedule, trainable_labels


def cfg(**kw):
    base = dict(name='sgd', lr=0.2, momentum=0.9, weight_decay=0.0, warmup_steps=10, end_lr=0.0)
    base.update(kw)
    return ml_collections.ConfigDict(base)


def reference_lr(step, lr, warmup, total, end):
    if step < warmup:
        return lr * step / warmup
    t = (step - warmup) / (total - warmup)
    return end + (lr - end) * 0.5 * (1 + math.cos(math.pi * t))


@pytest.mark.parametrize('warmup', [0, 10, 0.1])
def test_schedule_is_warmup_then_cosine_over_whole_run(warmup):
    total = 200
    schedule = make_schedule(cfg(warmup_steps=warmup, end_lr=0.001), total)
    w = int(round(warmup * total)) if isinstance(warmup, float) else warmup
    for step in (0, 1, 5, 10, 11, 50, 100, 150, 199, 200):
        if w == 0 and step == 0:
            assert float(schedule(0)) == pytest.approx(0.2)
            continue
        assert float(schedule(step)) == pytest.approx(
            reference_lr(step, 0.2, w, total, 0.001), rel=1e-5, abs=1e-7
        ), step
    # Still learning late in the run (the notebooks had lr 0 from 40% of the run on).
    assert float(schedule(int(0.75 * total))) > 0.01


def test_bad_schedule_values():
    with pytest.raises(ValueError, match='warmup_steps=1.5'):
        make_schedule(cfg(warmup_steps=1.5), 100)
    with pytest.raises(ValueError, match='optim.lr'):
        make_schedule(cfg(lr=0.0), 100)
    with pytest.raises(ValueError, match="optim.name='rmsprop'"):
        make_optimizer(cfg(name='rmsprop'), 100)


def _params():
    rng = np.random.default_rng(0)
    return {
        'encoder': {
            'conv': {'kernel': jnp.asarray(rng.normal(size=(3, 3, 2, 4)), jnp.float32)},
            'bn': {'scale': jnp.ones(4), 'bias': jnp.zeros(4)},
        },
        'projector': {
            'dense0': {'kernel': jnp.asarray(rng.normal(size=(4, 3)), jnp.float32), 'bias': jnp.zeros(3)}
        },
    }


def test_sgd_momentum_matches_hand_computation():
    params = _params()
    tx = make_optimizer(cfg(warmup_steps=0, lr=0.1), total_steps=1000)
    state = tx.init(params)
    grads = jax.tree.map(jnp.ones_like, params)
    p = params
    kernel = np.asarray(params['encoder']['conv']['kernel'], np.float64)
    velocity = 0.0
    for step in range(3):
        updates, state = tx.update(grads, state, p)
        p = optax.apply_updates(p, updates)
        velocity = 0.9 * velocity + 1.0  # heavy-ball momentum on a gradient of ones
        kernel = kernel - reference_lr(step, 0.1, 0, 1000, 0.0) * velocity
        np.testing.assert_allclose(p['encoder']['conv']['kernel'], kernel, rtol=1e-5, atol=1e-6)


def test_lars_and_weight_decay_skip_biases_and_batchnorm():
    params = _params()
    grads = jax.tree.map(jnp.zeros_like, params)  # pure weight decay
    for name in ('lars', 'sgd'):
        tx = make_optimizer(cfg(name=name, warmup_steps=0, weight_decay=0.5), 100)
        updates, _ = tx.update(grads, tx.init(params), params)
        assert np.all(np.asarray(updates['encoder']['bn']['scale']) == 0), name
        assert np.all(np.asarray(updates['projector']['dense0']['bias']) == 0), name
        assert np.any(np.asarray(updates['encoder']['conv']['kernel']) != 0), name


def test_frozen_params_are_bit_identical_after_steps():
    params = _params()
    tx = make_optimizer(cfg(warmup_steps=0, weight_decay=0.1), 100, frozen=('encoder',))
    state = tx.init(params)
    grads = jax.tree.map(lambda x: jnp.full_like(x, 0.3), params)
    p = params
    for _ in range(3):
        updates, state = tx.update(grads, state, p)
        p = optax.apply_updates(p, updates)
    for a, b in zip(jax.tree.leaves(p['encoder']), jax.tree.leaves(params['encoder']), strict=True):
        assert np.array_equal(np.asarray(a), np.asarray(b))
    assert not np.array_equal(
        np.asarray(p['projector']['dense0']['kernel']), np.asarray(params['projector']['dense0']['kernel'])
    )


def test_trainable_labels_unknown_prefix_is_an_error():
    labels = trainable_labels(_params(), ('encoder/conv',))
    assert labels['encoder']['conv']['kernel'] == 'frozen'
    assert labels['encoder']['bn']['scale'] == 'train'
    with pytest.raises(ValueError, match='decoder'):
        trainable_labels(_params(), ('decoder',))


def test_paper_schedule_is_the_notebooks_cosine_decay():
    """Keras' CosineDecay(0.2, decay_steps=1000): no warm-up, 0 from step 1000 on, whatever the run length."""
    schedule = make_schedule(cfg(schedule='paper', decay_steps=1000, warmup_steps=0.05), total_steps=2600)
    for step in (0, 500, 1000, 1500):
        expected = 0.2 * 0.5 * (1 + math.cos(math.pi * min(step, 1000) / 1000))
        assert float(schedule(step)) == pytest.approx(expected, abs=1e-7)
    assert float(schedule(0)) == pytest.approx(0.2) and float(schedule(500)) == pytest.approx(0.1)
    assert float(schedule(1500)) == 0.0


@pytest.mark.parametrize(
    ('override', 'message'),
    [
        ({'schedule': 'step'}, "optim.schedule='step'"),
        ({'schedule': 'paper', 'decay_steps': 0}, 'decay_steps=0'),
    ],
)
def test_bad_schedule_settings_are_named(override, message):
    from fewshot_jax.errors import ConfigError

    with pytest.raises(ConfigError, match=message):
        make_schedule(cfg(**override), total_steps=100)
