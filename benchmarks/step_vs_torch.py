"""One Barlow Twins train step, ours (JAX) against the same step in PyTorch, on the CPU.

The step: ResNet50 (v1.5, ImageNet stem) + projector 128-64-1024 (Dense-BN-ReLU,
Dense-BN-ReLU, Dense-BN), float32, a batch of 8 image pairs, the Barlow Twins loss,
one SGD-momentum update.

- ours: built with ``fewshot_jax.pretrain.task.build_ssl`` from ``configs/ssl_base.ssl_config``
  exactly as pretraining builds it, with augmentation off (the views are the images)
  and on (the config's two-view augmentation, run inside the step), under XLA's
  default convolutions and under the project's Eigen-convolution flag
  (``fewshot_jax.train_lib.xla_setup``).
- PyTorch (the optional ``torch`` extra): torchvision's ResNet50 architecture, written
  out below with torch.nn (torchvision is not a project dependency, and its wheels
  must match the torch build exactly), + the same projector + a Barlow Twins loss,
  2 threads, denormals flushed, with the passive OpenMP wait policy and, opt-in
  (``--variants=...,torch_active``), the spinning one. The spinning worker keeps both
  cores busy even while it waits for its turn, which slows every other variant; on a
  shared machine the passive policy is the fair one.

Each variant runs in its own warm process (XLA reads XLA_FLAGS and OpenMP its wait
policy once per process). The parent interleaves them: every round, each variant runs
``--steps_per_round`` steps, so a change in the machine's load hits all variants alike.
Reported: the median step over all rounds, and the 1-minute load average while the
variant ran. On a machine shared with other work the figures are contended: compare
the ratios, which interleaving keeps fair, more than the absolute times.

    python benchmarks/step_vs_torch.py --sizes=96,160 --rounds=3 --steps_per_round=2

Prints one line per variant and resolution, the ratio ours / PyTorch per resolution,
and a final JSON line.
"""

from __future__ import annotations

import json
import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
EIGEN_FLAG = '--xla_cpu_experimental_ynn_fusion_type=-individual_convolution'
BATCH_PAIRS = 8
PROJECTOR = (128, 64, 1024)
LAMBD = 0.005
# name -> (kind, extra environment)
# jax_default: XLA's own choices (YNNPACK convolutions, select-and-scatter max-pool gradient);
# jax_eigen: + Eigen convolutions; jax_project: + the dense max-pool gradient, the project's CPU
# defaults (fewshot_jax/train_lib/xla_setup.py, model.max_pool_grad='auto').
VARIANTS = {
    'jax_default': ('jax', {'XLA_FLAGS': '', 'MAX_POOL_GRAD': 'xla'}),
    'jax_eigen': ('jax', {'XLA_FLAGS': EIGEN_FLAG, 'MAX_POOL_GRAD': 'xla'}),
    'jax_project': ('jax', {'XLA_FLAGS': EIGEN_FLAG, 'MAX_POOL_GRAD': 'auto'}),
    'torch_passive': ('torch', {'OMP_WAIT_POLICY': 'PASSIVE'}),
    'torch_active': ('torch', {'OMP_WAIT_POLICY': 'ACTIVE'}),
}


# ----------------------------------------------------------------------------- workers
# A worker reads one JSON request per line, {"size": S, "augment": bool, "steps": k},
# runs k steps of that step (building and warming it up on first use) and answers
# {"times": [seconds, ...]} on one line.


def _serve(run_steps) -> None:
    for line in sys.stdin:
        request = json.loads(line)
        times = run_steps(request['size'], request['augment'], request['steps'])
        print(json.dumps({'times': times}), flush=True)


def jax_worker() -> None:
    import jax
    import numpy as np

    sys.path.insert(0, str(REPO))
    from configs.ssl_base import ssl_config
    from fewshot_jax.pretrain.task import build_ssl
    from fewshot_jax.train_lib import sharding

    built = {}

    def get(size, augment):
        if (size, augment) not in built:
            config = ssl_config('barlow_twins', 'tem', '')
            # torchvision's ResNet and the standard projector, as the torch side builds them.
            config.model.init, config.model.variant, config.optim.momentum = 'random', 'v1.5', 0.9
            config.model.projector_order, config.model.projector_bn = 'standard', 'batch'
            config.model.depth, config.model.width = 50, 64
            config.model.dtype, config.model.projector = 'float32', PROJECTOR
            config.data.image_size, config.data.batch_size = size, BATCH_PAIRS
            config.loss.lambd = LAMBD
            with config.unlocked():
                config.model.max_pool_grad = os.environ.get('MAX_POOL_GRAD', 'auto')
            if not augment:
                config.augment.crop, config.augment.flip_prob = 'none', 0.0
                config.augment.jitter_prob = 0.0
            mesh = sharding.make_mesh(1)
            build = build_ssl(config, mesh, total_steps=1000)
            images = sharding.to_global(
                np.random.default_rng(0).integers(0, 256, (BATCH_PAIRS, size, size, 3), dtype=np.uint8), mesh
            )
            compiled = build.step_fn.lower(build.state, images).compile()
            state = build.state
            for _ in range(2):  # warm-up
                state, metrics = compiled(state, images)
            jax.block_until_ready(metrics)
            built[size, augment] = [compiled, state, images]
        return built[size, augment]

    def run_steps(size, augment, steps):
        entry = get(size, augment)
        compiled, state, images = entry
        times = []
        for _ in range(steps):
            t0 = time.perf_counter()
            state, metrics = compiled(state, images)
            jax.block_until_ready((state, metrics))
            times.append(time.perf_counter() - t0)
        entry[1] = state
        return times

    _serve(run_steps)


def torch_worker() -> None:
    import numpy as np
    import torch
    from torch import nn

    torch.set_num_threads(2)
    torch.set_flush_denormal(True)

    def projector():
        layers, width = [], 2048
        for i, feats in enumerate(PROJECTOR):
            layers += [torch.nn.Linear(width, feats), torch.nn.BatchNorm1d(feats, eps=1e-5)]
            if i < len(PROJECTOR) - 1:
                layers.append(torch.nn.ReLU())
            width = feats
        return torch.nn.Sequential(*layers)

    def barlow_twins(z1, z2, eps=1e-5):
        # The 'standard' Barlow Twins loss: standardise each dimension over the batch,
        # then sum (1 - C_ii)^2 + lambda * sum_{i != j} C_ij^2.
        s1 = (z1 - z1.mean(0)) / torch.sqrt(z1.var(0, unbiased=False) + eps)
        s2 = (z2 - z2.mean(0)) / torch.sqrt(z2.var(0, unbiased=False) + eps)
        c = s1.T @ s2 / z1.shape[0]
        diag = torch.diagonal(c)
        off = c - torch.diag(diag)
        return ((1 - diag) ** 2).sum() + LAMBD * (off**2).sum()

    def conv_bn(cin, cout, kernel, stride=1):
        return [nn.Conv2d(cin, cout, kernel, stride, kernel // 2, bias=False), nn.BatchNorm2d(cout)]

    class Bottleneck(nn.Module):
        # ResNet v1.5 (torchvision's layout): the stride sits on the 3x3 convolution.
        def __init__(self, cin, planes, stride):
            super().__init__()
            self.body = nn.Sequential(
                *conv_bn(cin, planes, 1),
                nn.ReLU(inplace=True),
                *conv_bn(planes, planes, 3, stride),
                nn.ReLU(inplace=True),
                *conv_bn(planes, 4 * planes, 1),
            )
            self.shortcut = (
                nn.Sequential(*conv_bn(cin, 4 * planes, 1, stride))
                if stride != 1 or cin != 4 * planes
                else nn.Identity()
            )

        def forward(self, x):
            return torch.relu(self.body(x) + self.shortcut(x))

    def resnet50():
        layers, cin = [*conv_bn(3, 64, 7, 2), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2, 1)], 64
        stages = zip((64, 128, 256, 512), (3, 4, 6, 3), strict=True)
        for stage, (planes, blocks) in enumerate(stages):
            for b in range(blocks):
                layers.append(Bottleneck(cin, planes, 2 if stage > 0 and b == 0 else 1))
                cin = 4 * planes
        return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())

    torch.manual_seed(0)
    encoder = resnet50()
    assert sum(p.numel() for p in encoder.parameters()) == 23_508_032  # torchvision's, no fc
    model = torch.nn.Sequential(encoder, projector()).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    inputs, warm = {}, set()

    def step(images):
        x = (images.float() / 255 - mean) / std
        z = model(x).view(BATCH_PAIRS, 2, -1)
        loss = barlow_twins(z[:, 0], z[:, 1])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return loss

    def run_steps(size, augment, steps):
        if augment:
            raise ValueError('the PyTorch side runs without augmentation only')
        if size not in inputs:
            rng = np.random.default_rng(0)
            inputs[size] = torch.from_numpy(
                rng.integers(0, 256, (2 * BATCH_PAIRS, 3, size, size), dtype=np.uint8)
            )
        if size not in warm:
            for _ in range(2):
                step(inputs[size])
            warm.add(size)
        times = []
        for _ in range(steps):
            t0 = time.perf_counter()
            step(inputs[size])
            times.append(time.perf_counter() - t0)
        return times

    _serve(run_steps)


# ----------------------------------------------------------------------------- parent


class Worker:
    """A warm variant process, asked for steps one request at a time."""

    def __init__(self, name: str):
        kind, extra_env = VARIANTS[name]
        env = {k: v for k, v in os.environ.items() if not k.startswith(('XLA_', 'JAX_', 'OMP_'))}
        env.update(extra_env, JAX_PLATFORMS='cpu', PYTHONPATH=str(REPO))
        self.name = name
        self.process = subprocess.Popen(
            [sys.executable, __file__, f'--worker={kind}'],
            env=env,
            cwd=REPO,
            text=True,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )

    def steps(self, size: int, augment: bool, count: int) -> list[float]:
        self.process.stdin.write(json.dumps({'size': size, 'augment': augment, 'steps': count}) + '\n')
        self.process.stdin.flush()
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError(f'worker {self.name} exited (code {self.process.poll()})')
        return json.loads(line)['times']

    def close(self) -> None:
        try:
            self.process.stdin.close()  # end of requests: the worker's loop ends
            self.process.wait(timeout=10)
        except (BrokenPipeError, subprocess.TimeoutExpired):
            self.process.kill()  # it died already, or is busy (e.g. compiling)
            self.process.wait()


def _parse(argv: list[str]) -> dict:
    options = {
        'sizes': '96,160',
        'rounds': '3',
        'steps_per_round': '2',
        'variants': 'jax_default,jax_eigen,jax_project,torch_passive',
        'augment': 'jax_project',
    }
    for arg in argv:
        key, _, value = arg.lstrip('-').partition('=')
        if key not in options:
            raise SystemExit(f'unknown option {arg!r}; expected --{" --".join(options)}')
        options[key] = value
    unknown = set(options['variants'].split(',')) - set(VARIANTS)
    if unknown:
        raise SystemExit(f'--variants: unknown {sorted(unknown)}; expected some of {list(VARIANTS)}')
    not_jax = [n for n in options['augment'].split(',') if n and VARIANTS.get(n, ('',))[0] != 'jax']
    if not_jax:
        raise SystemExit(f'--augment: {not_jax} are not JAX variants (PyTorch runs unaugmented)')
    return options


def main(argv: list[str]) -> None:
    options = _parse(argv)
    sizes = [int(s) for s in options['sizes'].split(',')]
    names = options['variants'].split(',')
    augmented = [n for n in options['augment'].split(',') if n]
    rounds, per_round = int(options['rounds']), int(options['steps_per_round'])
    # (variant, augment) pairs measured at every size.
    cases = [(n, False) for n in names] + [(n, True) for n in augmented if n in names]
    # A plain `kill` of this process should stop the workers too (via the finally below).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    workers = {n: Worker(n) for n in names}
    results = []
    try:
        for size in sizes:
            times = {case: [] for case in cases}
            loads = {case: [] for case in cases}
            for case in cases:  # build, compile and warm up outside the timed rounds
                workers[case[0]].steps(size, case[1], 0)
            for _ in range(rounds):
                for case in cases:
                    times[case] += workers[case[0]].steps(size, case[1], per_round)
                    loads[case].append(os.getloadavg()[0])
            for name, augment in cases:
                row = {
                    'variant': name,
                    'augment': augment,
                    'size': size,
                    'median_s': statistics.median(times[name, augment]),
                    'steps': len(times[name, augment]),
                    'load_1min': round(statistics.mean(loads[name, augment]), 1),
                }
                results.append(row)
                print(
                    f'{size:4d} px  {name:14s} aug={"on " if augment else "off"}  '
                    f'median {1e3 * row["median_s"]:7.0f} ms over {row["steps"]} steps  '
                    f'(load {row["load_1min"]})',
                    flush=True,
                )
            by_name = {r['variant']: r['median_s'] for r in results if r['size'] == size and not r['augment']}
            torch_best = min((by_name[n] for n in by_name if n.startswith('torch')), default=None)
            for name in by_name:
                if name.startswith('jax') and torch_best:
                    print(
                        f'{size:4d} px  ratio {name} / fastest torch: {by_name[name] / torch_best:.2f}x',
                        flush=True,
                    )
    finally:
        for worker in workers.values():
            worker.close()
    print(json.dumps({'cpu_count': os.cpu_count(), 'results': results}))


if __name__ == '__main__':
    worker_arg = [a for a in sys.argv[1:] if a.startswith('--worker=')]
    if worker_arg:
        {'jax': jax_worker, 'torch': torch_worker}[worker_arg[0].split('=', 1)[1]]()
    else:
        main(sys.argv[1:])
