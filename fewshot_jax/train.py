"""The self-supervised pretraining loop (SimCLR or Barlow Twins).

config → builders (mesh, source, pipeline, model, optimizer, step) → loop of
jitted steps → metrics, checkpoints and, at the end, ``workdir/encoder``.
A run in a workdir that holds checkpoints continues from the newest readable
one: same step counter, same data order, same randomness.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import jax
import ml_collections
import numpy as np
from tqdm import tqdm

from fewshot_jax import augment, checkpoint, sharding, steps
from fewshot_jax.data import pipeline
from fewshot_jax.models import make_ssl_model
from fewshot_jax.optim import make_optimizer, make_schedule
from fewshot_jax.run_log import MetricsLog, fetch_and_check
from fewshot_jax.state import init_state

log = logging.getLogger(__name__)


def total_steps_of(train_cfg: ml_collections.ConfigDict, num_images: int, batch: int) -> int:
    """``train.num_steps`` if set, else ``train.epochs`` × (images // batch)."""
    if train_cfg.get('num_steps'):
        return int(train_cfg.num_steps)
    return int(train_cfg.epochs) * max(1, num_images // batch)


def _flat(tree, prefix=''):
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(_flat(value, f'{prefix}{key}.'))
        else:
            out[f'{prefix}{key}'] = list(value) if isinstance(value, tuple) else value
    return out


def warn_config_changes(saved: dict, current: dict) -> list[str]:
    """Logs a warning for every config field that differs from the checkpoint's.

    Resuming with a changed config is allowed (e.g. more steps), but it is no
    longer the run that was checkpointed: a new ``train.num_steps`` reshapes the
    learning-rate schedule, a new batch size or seed changes the data order.

    Returns:
        The dotted names of the fields that differ.
    """
    old, new = _flat(saved), _flat(current)
    changed = sorted(k for k in old.keys() | new.keys() if old.get(k) != new.get(k))
    if changed:
        log.warning('resuming with a config that differs from the checkpoint in %s: %s',
                    len(changed), ', '.join(f'{k}: {old.get(k)!r} -> {new.get(k)!r}'
                                            for k in changed))
    return changed


def _mean_metrics(host_metrics: list[tuple[int, dict]]) -> dict:
    keys = host_metrics[-1][1].keys()
    return {k: float(np.mean([np.asarray(m[k]) for _, m in host_metrics])) for k in keys}


def train_ssl(config: ml_collections.ConfigDict, workdir: str | os.PathLike) -> dict:
    """Runs (or resumes) self-supervised pretraining described by ``config``.

    Returns:
        A summary: ``{'step', 'total_steps', 'resumed_from', 'final_loss'}``.
    """
    workdir = Path(workdir)
    # Refuse at once if a live run holds the workdir, before any compilation.
    with checkpoint.WorkdirLock(workdir):
        return _train_ssl_locked(config, workdir)


def _train_ssl_locked(config: ml_collections.ConfigDict, workdir: Path) -> dict:
    mesh = sharding.make_mesh(config.get('num_devices'))
    sharding.check_global_batch(config.data.batch_size, mesh)
    source = pipeline.make_source(config.data)
    spec = pipeline.PipelineSpec(image_size=config.data.image_size,
                                 global_batch=config.data.batch_size, seed=config.seed,
                                 channels=pipeline.source_channels(source),
                                 num_threads=config.data.get('num_threads', 8),
                                 prefetch=config.data.get('num_threads', 8),
                                 num_workers=config.data.get('num_workers', 0),
                                 cache_bytes=int(config.data.get('cache_gb', 4.0) * 2**30))
    dataset = pipeline.ssl_dataset(source, spec)
    total = total_steps_of(config.train, len(source), config.data.batch_size)

    model = make_ssl_model(config.model)
    tx = make_optimizer(config.optim, total)
    # Views come out at the pipeline's size, as in the paper (crop, then resize back).
    aug_cfg = augment.augment_config_from(config.augment, config.data.image_size)
    state = init_state(model, tx, config.seed, config.data.image_size, mesh,
                       config.model.get('init', 'random'), config.model)
    step_fn = steps.jit_step(steps.ssl_step_fn(model, tx, steps.make_ssl_loss(config.loss),
                                               aug_cfg, make_schedule(config.optim, total)),
                             mesh)

    ckpt = checkpoint.RunCheckpointer(workdir / 'checkpoints',
                                      max_to_keep=config.train.get('keep_checkpoints', 3))
    start, data_state = 0, None
    restored = ckpt.restore_latest(state)
    if restored is not None:
        start, state, data_state, saved_config = restored
        log.info('resuming %s from step %d', workdir, start)
        warn_config_changes(saved_config, config.to_dict())
    iterator = pipeline.batch_iterator(dataset, spec, data_state)
    metrics_log = MetricsLog(workdir, resume_step=start)
    log_every = config.train.get('log_every', 10)
    ckpt_every = config.train.get('checkpoint_every', 100)
    pending, last_loss = [], float('nan')
    try:
        bar = tqdm(range(start, total), initial=start, total=total, desc='pretrain',
                   disable=jax.process_index() != 0 or not config.train.get('progress', True))
        for step in bar:
            batch = sharding.to_global(next(iterator), mesh)
            state, metrics = step_fn(state, batch)
            done = step + 1
            pending.append((done, metrics))
            must_save = done % ckpt_every == 0 or done == total
            if done % log_every == 0 or must_save:
                # Checked before any save: a NaN state never reaches a checkpoint.
                host = fetch_and_check(pending)
                pending = []
                summary = _mean_metrics(host)
                last_loss = summary['loss']
                metrics_log.write(done, summary)
                bar.set_postfix(loss=f'{last_loss:.4f}')
            if must_save:
                ckpt.save(done, state, iterator.get_state(), config.to_dict())
    finally:
        ckpt.close()
        metrics_log.close()

    encoder_vars = {'params': state.params['encoder'], 'batch_stats': state.batch_stats['encoder']}
    checkpoint.save_encoder(workdir, encoder_vars, config.model.to_dict(), total)
    return {'step': total, 'total_steps': total, 'resumed_from': start, 'final_loss': last_loss}
