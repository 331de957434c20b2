"""What ``launch.py`` settles before any work: the default workdir, and a paper preset with no data.

``python launch.py --config=configs/barlow_tem.py`` typed as is should tell the user what to
do next within seconds: the workdir defaults to ``runs/<config>[_<preset>]`` (printed), and a
pretraining config that reads a folder of images with no ``data.root`` stops before anything
is generated, compiled or written, saying how to give images, that ``:demo`` runs on the
built-in synthetic data, and how long this preset would take on this machine.
"""

from __future__ import annotations

import sys
from pathlib import Path

from fewshot_jax.errors import ConfigError

# Measured rates of the ResNet50 224 px self-supervised step (benchmarks/RESULTS.md): this
# project's 2-core CPU machine, 1.5 image pairs/s (section "Input pipeline": 5.3 s for 8
# pairs); one H200, 1,667 pairs/s (section "End-to-end pretraining": 38.4 ms for a 64-pair
# bfloat16 step of the training loop).
CPU_PAIRS_PER_S = 1.5
GPU_PAIRS_PER_S = 1667.0
_REFERENCE_PIXELS = 224 * 224


class FirstRunError(ConfigError):
    """A config that cannot run as typed; the message says what to add."""


def default_workdir(config_arg: str) -> str:
    """``'configs/barlow_tem.py:demo'`` → ``'runs/barlow_tem_demo'``."""
    path, _, preset = str(config_arg).partition(':')
    name = Path(path).stem
    return f'runs/{name}_{preset}' if preset else f'runs/{name}'


def prepare(config, config_arg: str, workdir: str | None) -> str:
    """The workdir to use (the default is printed); stops a pretraining run that has no images.

    Args:
        config: the parsed config.
        config_arg: the ``--config`` argument as typed (file and ``:preset``).
        workdir: ``--workdir``, or None.

    Returns:
        The workdir.

    Raises:
        FirstRunError: a pretraining config reading a folder with ``data.root`` unset.
    """
    if not workdir:
        workdir = default_workdir(config_arg)
        print(f'workdir: {workdir} (the default for this config; --workdir=DIR to choose)', file=sys.stderr)
    data = config.get('data', {})
    if config.get('task') == 'pretrain' and data.get('source') == 'folder' and not data.get('root'):
        file = str(config_arg).partition(':')[0]
        init = (
            ' and the ImageNet weights it starts from with --config.model.init=keras:/path/'
            'resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5 (or =random)'
            if config.get('model', {}).get('init') == 'required'
            else ''
        )
        raise FirstRunError(
            f'{config_arg} pretrains on your images: give their folder with '
            f'--config.data.root=DIR (docs/datasets.md){init}; {file}:demo runs on the built-in '
            f'synthetic data instead, in minutes on a CPU. {estimate(config)}'
        )
    return workdir


def estimate(config) -> str:
    """One sentence: how long the pretraining run would take here, from a measured step rate."""
    data, train = config.data, config.train
    steps = train.get('num_steps')
    if steps is None:
        images = data.get('subset') or data.get('num_images') or 0
        steps = int(train.get('epochs', 0)) * max(int(images) // int(data.batch_size), 1)
    pairs = int(steps) * int(data.batch_size)
    # Scaled from the ResNet50 224 px rates by the pixels per image (other depths: not estimated).
    scale = (int(data.image_size) ** 2) / _REFERENCE_PIXELS
    if int(config.model.get('depth', 50)) != 50 or not pairs:
        return f'This preset runs {steps} steps of {data.batch_size} image pairs.'
    on_gpu = _has_gpu()
    rate = (GPU_PAIRS_PER_S if on_gpu else CPU_PAIRS_PER_S) / scale
    where = (
        'with a GPU here, about {t} (the 1,667 pairs/s measured on one H200 in bfloat16, '
        'benchmarks/RESULTS.md)'
        if on_gpu
        else 'on this machine, which has no GPU, about {t} (the 1.5 pairs/s measured for this '
        'step on a 2-core CPU, benchmarks/RESULTS.md)'
    )
    return (
        f'This preset ({steps} steps of {data.batch_size} pairs at {data.image_size} px) would take '
        + where.format(t=_duration(pairs / rate))
        + '.'
    )


def _has_gpu() -> bool:
    import jax

    return jax.default_backend() != 'cpu'


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f'{seconds:.0f} s'
    if seconds < 2 * 3600:
        return f'{seconds / 60:.0f} min'
    return f'{seconds / 3600:.0f} h'
