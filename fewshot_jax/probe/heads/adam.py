"""The paper's linear classifier: a softmax layer trained with Adam, one run per batch row.

The original notebooks trained a Keras ``Dense(K, softmax)`` on the frozen
features with Adam (learning rate 1e-3), Keras' default batch of 32, and an
early stop once the monitored accuracy had not improved for 10 epochs — but
they monitored the *test* split. Here early stopping (``early_stopping='holdout'``)
watches a validation set drawn from the training pool outside the k-shot set
(the caller draws it and checks it is disjoint from the k-shot set and the test
part), and the weights of the best validation epoch are kept; with
``early_stopping='none'`` the layer trains for a fixed ``max_epochs`` (the
honest few-shot setting: no extra labels at all).

Details kept from Keras: Glorot-uniform kernel, zero bias, Adam with
epsilon 1e-7, mean cross-entropy over each mini-batch (the last, partial batch
averages over its own rows), a fresh shuffle every epoch. Features are
standardised with the k-shot set's statistics, as for every other head.
Under ``vmap`` each run keeps its own batches, epochs and stopping point.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from fewshot_jax.probe.heads.closed_form import HIGHEST, standardize

EARLY_STOPPING = ('holdout', 'none')


def _shuffled_rows(epoch_key, valid, length: int):
    """One epoch's row order, padded with row 0 to ``length``: valid rows first, in a fresh
    random order, padding rows last. One draw per row index, so padding a run with more rows
    leaves its order unchanged."""
    n = valid.shape[0]
    noise = jax.vmap(lambda i: jax.random.uniform(jax.random.fold_in(epoch_key, i)))(jnp.arange(n))
    order = jnp.argsort(jnp.where(valid, noise, 2.0))
    return jnp.concatenate([order, jnp.zeros((length - n,), order.dtype)])


def adam_classifier(
    x,
    y,
    valid,
    holdout_x,
    holdout_y,
    holdout_valid,
    key,
    *,
    num_classes: int,
    lr: float = 1e-3,
    batch_size: int = 32,
    max_epochs: int = 300,
    patience: int = 10,
    early_stopping: str = 'holdout',
):
    """Trains a softmax layer with Adam on one run's features.

    Args:
        x: (n, d) training features; y: (n,) labels; valid: (n,) bool.
        holdout_x: (h, d) early-stopping features; holdout_y: (h,);
            holdout_valid: (h,) bool (ignored with ``early_stopping='none'``).
        key: PRNG key of this run (initialisation and shuffles).
        num_classes: K (static).
        lr: Adam learning rate.
        batch_size: mini-batch size (static).
        max_epochs: epoch cap ('holdout') or the fixed number of epochs ('none').
        patience: epochs without a strictly better validation accuracy before stopping.
        early_stopping: 'holdout' or 'none' (static).

    Returns:
        dict with ``coef`` (d, K), ``intercept`` (K,), ``mean``, ``scale``,
        ``epochs`` (epochs trained) and ``best_epoch`` (1-based epoch kept).
    """
    if early_stopping not in EARLY_STOPPING:
        raise ValueError(f'early_stopping={early_stopping!r}: expected one of {EARLY_STOPPING}')
    n, d = x.shape
    x_std, mean, scale = standardize(x, valid)
    holdout_std = jnp.where(holdout_valid[:, None], (holdout_x - mean) / scale, 0.0)
    init_key, shuffle_key = jax.random.split(key)
    limit = jnp.sqrt(6.0 / (d + num_classes))
    params = {
        'coef': jax.random.uniform(init_key, (d, num_classes), jnp.float32, -limit, limit),
        'intercept': jnp.zeros((num_classes,), jnp.float32),
    }
    optimizer = optax.adam(lr, eps=1e-7)
    batch = min(batch_size, n)
    steps_per_epoch = -(-n // batch)
    n_valid = jnp.sum(valid)

    def loss_fn(p, index, mask):
        logits = jnp.dot(x_std[index], p['coef'], precision=HIGHEST) + p['intercept']
        ce = -jnp.sum(jax.nn.log_softmax(logits) * jax.nn.one_hot(y[index], num_classes), -1)
        return jnp.sum(jnp.where(mask, ce, 0.0)) / jnp.maximum(jnp.sum(mask), 1)

    def train_epoch(p, opt_state, epoch):
        padded = _shuffled_rows(jax.random.fold_in(shuffle_key, epoch), valid, steps_per_epoch * batch)
        positions = jnp.arange(steps_per_epoch * batch)

        def one_step(carry, i):
            p, opt_state = carry
            index = jax.lax.dynamic_slice(padded, (i * batch,), (batch,))
            mask = jax.lax.dynamic_slice(positions, (i * batch,), (batch,)) < n_valid
            grads = jax.grad(loss_fn)(p, index, mask)
            updates, new_state = optimizer.update(grads, opt_state, p)
            new_p = optax.apply_updates(p, updates)
            # A batch with no real rows (a short run padded to a longer one) is no step at all.
            live = jnp.any(mask)
            p = jax.tree.map(lambda new, old: jnp.where(live, new, old), new_p, p)
            opt_state = jax.tree.map(lambda new, old: jnp.where(live, new, old), new_state, opt_state)
            return (p, opt_state), None

        (p, opt_state), _ = jax.lax.scan(one_step, (p, opt_state), jnp.arange(steps_per_epoch))
        return p, opt_state

    def holdout_accuracy(p):
        logits = jnp.dot(holdout_std, p['coef'], precision=HIGHEST) + p['intercept']
        right = (jnp.argmax(logits, -1) == holdout_y) & holdout_valid
        return jnp.sum(right) / jnp.maximum(jnp.sum(holdout_valid), 1)

    state = {
        'params': params,
        'opt_state': optimizer.init(params),
        'best': params,
        'best_accuracy': jnp.asarray(-1.0),
        'best_epoch': jnp.asarray(0),
        'wait': jnp.asarray(0),
        'epoch': jnp.asarray(0),
    }

    def keep_going(s):
        running = s['epoch'] < max_epochs
        if early_stopping == 'holdout':
            running &= s['wait'] < patience
        return running

    def epoch_step(s):
        p, opt_state = train_epoch(s['params'], s['opt_state'], s['epoch'])
        epoch = s['epoch'] + 1
        if early_stopping == 'none':
            return {**s, 'params': p, 'opt_state': opt_state, 'best': p, 'best_epoch': epoch, 'epoch': epoch}
        accuracy = holdout_accuracy(p)
        better = accuracy > s['best_accuracy']
        best = jax.tree.map(lambda new, old: jnp.where(better, new, old), p, s['best'])
        return {
            'params': p,
            'opt_state': opt_state,
            'best': best,
            'best_accuracy': jnp.where(better, accuracy, s['best_accuracy']),
            'best_epoch': jnp.where(better, epoch, s['best_epoch']),
            'wait': jnp.where(better, 0, s['wait'] + 1),
            'epoch': epoch,
        }

    s = jax.lax.while_loop(keep_going, epoch_step, state)
    return {
        'coef': s['best']['coef'],
        'intercept': s['best']['intercept'],
        'mean': mean,
        'scale': scale,
        'epochs': s['epoch'],
        'best_epoch': s['best_epoch'],
    }
