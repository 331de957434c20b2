"""Throughput and memory of the U-Net train step: images/s, peak memory, FLOPs.

Measures the jitted segmentation step (frozen ResNet encoder + decoder, loss
1 − soft Dice, Adam) on the current backend, with the same builders the
segmentation stage uses; the input pipeline is excluded (batches are already on
the devices). Also prints the forward FLOPs of encoder and decoder apart (the
paper's decoder dominates) as XLA counts them.

    python benchmarks/segment_train.py --sizes=512,1024 --dtypes=float32,bfloat16   # GPU
    python benchmarks/segment_train.py --sizes=128,256 --steps=3                    # CPU

Peak memory: the device's ``peak_bytes_in_use`` where the backend reports it
(GPU/TPU); on CPU, XLA's compiled estimate (arguments + outputs + temporaries)
and the process's peak RSS. Prints one human-readable line and one JSON line
per (size, dtype).
"""

from __future__ import annotations

import json
import resource
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import app, flags

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fewshot_jax.pretrain import steps  # noqa: E402
from fewshot_jax.segment.model import FROZEN, build_unet, init_variables, make_loss, segment_step_fn
from fewshot_jax.train_lib import sharding
from fewshot_jax.train_lib.optim import make_optimizer  # noqa: E402
from fewshot_jax.train_lib.state import TrainState  # noqa: E402

_SIZES = flags.DEFINE_list('sizes', ['512', '1024'], 'Image sides in px (multiples of 32).')
_DTYPES = flags.DEFINE_list('dtypes', ['float32', 'bfloat16'], 'Compute dtypes.')
_DEPTH = flags.DEFINE_integer('depth', 50, 'ResNet depth.')
_WIDTH = flags.DEFINE_integer('width', 64, 'ResNet width (64 = standard).')
_DECODER = flags.DEFINE_enum('decoder', 'paper', ['paper', 'unet'], 'Decoder.')
_BATCH = flags.DEFINE_integer('batch', 4, 'Global batch (paper: 4).')
_STEPS = flags.DEFINE_integer('steps', 10, 'Timed steps after one warm-up step.')
_DEVICES = flags.DEFINE_integer('num_devices', 1, 'Devices to shard the batch over.')


def forward_gflop(fn, *args) -> float | None:
    """XLA's FLOP count of ``fn(*args)`` in GFLOP (None when the backend gives none)."""
    cost = jax.jit(fn).lower(*args).compile().cost_analysis()
    if isinstance(cost, list):
        cost = cost[0] if cost else {}
    flops = (cost or {}).get('flops')
    return None if flops is None else flops / 1e9


def bench(size: int, dtype: str) -> dict:
    config = {'depth': _DEPTH.value, 'width': _WIDTH.value}
    model = build_unet(config, _DECODER.value, 1, dtype)
    variables = init_variables(model, None, seed=0)
    optim = ml_collections.ConfigDict({'name': 'adam', 'lr': 1e-3, 'warmup_steps': 0, 'end_lr': 1e-3})
    tx = make_optimizer(optim, total_steps=10_000, frozen=FROZEN)
    mesh = sharding.make_mesh(_DEVICES.value)
    sharding.check_global_batch(_BATCH.value, mesh)
    state = sharding.replicate(TrainState.create(variables, tx, jax.random.PRNGKey(0)), mesh)
    step = steps.jit_step(segment_step_fn(model, tx, make_loss('dice', 1)), mesh)
    rng = np.random.default_rng(0)
    batch = sharding.to_global(
        {
            'image': rng.integers(0, 256, (_BATCH.value, size, size, 1), dtype=np.uint8),
            'mask': (rng.random((_BATCH.value, size, size)) < 0.2).astype(np.uint8),
        },
        mesh,
    )

    t0 = time.perf_counter()
    compiled = step.lower(state, batch).compile()
    compile_s = time.perf_counter() - t0
    memory = compiled.memory_analysis()
    xla_gib = None
    if memory is not None:
        xla_gib = round(
            (
                memory.argument_size_in_bytes
                + memory.output_size_in_bytes
                + memory.temp_size_in_bytes
                - memory.alias_size_in_bytes
            )
            / 2**30,
            3,
        )
    step_gflop = forward_gflop(lambda s, b: step(s, b)[1]['loss'], state, batch)

    x = jax.ShapeDtypeStruct((1, size, size, 3), jnp.float32)
    encoder_vars = {c: variables[c]['encoder'] for c in ('params', 'batch_stats')}
    enc_gflop = forward_gflop(lambda v, im: model.encoder.apply(v, im)[1]['stage4'], encoder_vars, x)
    full_gflop = forward_gflop(lambda v, im: model.apply(v, im), variables, x)

    state, metrics = compiled(state, batch)
    jax.block_until_ready(metrics)
    t0 = time.perf_counter()
    for _ in range(_STEPS.value):
        state, metrics = compiled(state, batch)
    jax.block_until_ready((state, metrics))
    elapsed = time.perf_counter() - t0
    stats = jax.devices()[0].memory_stats() or {}
    peak = stats.get('peak_bytes_in_use')
    return {
        'backend': jax.default_backend(),
        'device': jax.devices()[0].device_kind,
        'n_devices': mesh.devices.size,
        'depth': _DEPTH.value,
        'width': _WIDTH.value,
        'decoder': _DECODER.value,
        'image_size': size,
        'batch': _BATCH.value,
        'dtype': dtype,
        'compile_s': round(compile_s, 1),
        'step_ms': round(1e3 * elapsed / _STEPS.value, 1),
        'images_per_s': round(_BATCH.value * _STEPS.value / elapsed, 2),
        'peak_gib_device0': None if peak is None else round(peak / 2**30, 2),
        'xla_estimate_gib': xla_gib,
        'peak_rss_gib': round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2),
        'step_gflop': None if step_gflop is None else round(step_gflop, 3),
        'forward_gflop_per_image': None if full_gflop is None else round(full_gflop, 3),
        'encoder_forward_gflop_per_image': None if enc_gflop is None else round(enc_gflop, 3),
        'final_loss': round(float(metrics['loss']), 4),
    }


def main(argv):
    del argv
    for size in (int(s) for s in _SIZES.value):
        for dtype in _DTYPES.value:
            r = bench(size, dtype)
            memory = (
                f'peak {r["peak_gib_device0"]} GiB'
                if r['peak_gib_device0'] is not None
                else f'XLA estimate {r["xla_estimate_gib"]} GiB, process RSS peak {r["peak_rss_gib"]} GiB'
            )
            print(
                f'{r["device"]} x{r["n_devices"]} ResNet{r["depth"]}w{r["width"]} + '
                f'{r["decoder"]} decoder {size}px batch {r["batch"]} {dtype}: compile '
                f'{r["compile_s"]} s, {r["step_ms"]} ms/step, {r["images_per_s"]} images/s, '
                f'{memory}; forward {r["forward_gflop_per_image"]} GFLOP/image of which '
                f'encoder {r["encoder_forward_gflop_per_image"]}',
                flush=True,
            )
            print(json.dumps(r), flush=True)


if __name__ == '__main__':
    app.run(main)
