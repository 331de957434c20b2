"""Throughput of the SSL train step: compile time and steady-state image pairs/s.

Measures the jitted step alone (augmentation on device included, input
pipeline excluded: images are already on the devices), on every visible device
of the current backend, with the same builders the training loop uses.

    python benchmarks/pretrain_step.py --depth=50 --image_size=224 --batch=256 \
        --loss=barlow_twins --dtype=bfloat16 --steps=20

Prints one human-readable line and one JSON line per run. On the CPU it appends the
project's Eigen-convolution flag to XLA_FLAGS (fewshot_jax/train_lib/xla_setup.py) unless XLA_FLAGS
already names --xla_cpu_experimental_ynn_fusion_type; benchmarks/step_vs_torch.py times
XLA's default convolutions next to it (variant jax_default).
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo's configs/

from fewshot_jax.train_lib.xla_setup import prefer_eigen_convolutions_on_cpu  # noqa: E402

# Before jax starts (XLA reads XLA_FLAGS once): Eigen convolutions on XLA:CPU, as launch.py
# uses; a user's own --xla_cpu_experimental_ynn_fusion_type in XLA_FLAGS wins.
prefer_eigen_convolutions_on_cpu()

import jax  # noqa: E402
import numpy as np  # noqa: E402
from absl import app, flags  # noqa: E402

from configs.ssl_base import ssl_config  # noqa: E402
from fewshot_jax.pretrain.task import build_ssl  # noqa: E402
from fewshot_jax.train_lib import sharding  # noqa: E402

_DEPTH = flags.DEFINE_integer('depth', 50, 'ResNet depth.')
_WIDTH = flags.DEFINE_integer('width', 64, 'ResNet width (64 = standard).')
_SIZE = flags.DEFINE_integer('image_size', 224, 'Image side in pixels.')
_BATCH = flags.DEFINE_integer('batch', 64, 'Global batch (image pairs).')
_LOSS = flags.DEFINE_list('loss', ['barlow_twins'], 'barlow_twins and/or simclr.')
_DTYPE = flags.DEFINE_list('dtype', ['float32'], 'float32 and/or bfloat16.')
_STEPS = flags.DEFINE_integer('steps', 20, 'Timed steps after two warm-up steps.')


def bench(loss: str, dtype: str) -> dict:
    config = ssl_config(loss, 'tem', '')
    # The step these timings were first measured with (benchmarks/RESULTS.md): torchvision's
    # ResNet, standard projector, SGD with momentum, from random weights.
    config.model.init, config.model.variant, config.optim.momentum = 'random', 'v1.5', 0.9
    config.model.projector_order, config.model.projector_bn = 'standard', 'batch'
    config.model.depth, config.model.width, config.model.dtype = _DEPTH.value, _WIDTH.value, dtype
    config.data.image_size, config.data.batch_size = _SIZE.value, _BATCH.value
    mesh = sharding.make_mesh()
    build = build_ssl(config, mesh, total_steps=10_000)
    state, step = build.state, build.step_fn
    rng = np.random.default_rng(0)
    images = sharding.to_global(
        rng.integers(0, 256, (_BATCH.value, _SIZE.value, _SIZE.value, 3), dtype=np.uint8), mesh
    )

    t0 = time.perf_counter()
    compiled = step.lower(state, images).compile()
    compile_s = time.perf_counter() - t0
    for _ in range(2):
        state, metrics = compiled(state, images)
    jax.block_until_ready(metrics)
    t0 = time.perf_counter()
    for _ in range(_STEPS.value):
        state, metrics = compiled(state, images)
    jax.block_until_ready((state, metrics))
    elapsed = time.perf_counter() - t0
    memory = None
    stats = jax.devices()[0].memory_stats() or {}
    if 'peak_bytes_in_use' in stats:
        memory = round(stats['peak_bytes_in_use'] / 2**30, 2)
    return {
        'backend': jax.default_backend(),
        'device': jax.devices()[0].device_kind,
        'n_devices': jax.device_count(),
        'depth': _DEPTH.value,
        'width': _WIDTH.value,
        'image_size': _SIZE.value,
        'batch_pairs': _BATCH.value,
        'loss': loss,
        'dtype': dtype,
        'compile_s': round(compile_s, 2),
        'step_ms': round(1e3 * elapsed / _STEPS.value, 2),
        'pairs_per_s': round(_BATCH.value * _STEPS.value / elapsed, 1),
        'peak_gib_device0': memory,
        'final_loss': float(metrics['loss']),
        'xla_flags': os.environ.get('XLA_FLAGS', ''),
    }


def main(argv):
    del argv
    for loss in _LOSS.value:
        for dtype in _DTYPE.value:
            r = bench(loss, dtype)
            print(
                f'{r["device"]} x{r["n_devices"]} ResNet{r["depth"]}w{r["width"]} '
                f'{r["image_size"]}px batch {r["batch_pairs"]} {loss} {dtype}: '
                f'compile {r["compile_s"]} s, {r["step_ms"]} ms/step, '
                f'{r["pairs_per_s"]} pairs/s, peak {r["peak_gib_device0"]} GiB',
                flush=True,
            )
            print(json.dumps(r), flush=True)


if __name__ == '__main__':
    app.run(main)
