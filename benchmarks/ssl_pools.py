"""The images benchmarks/ssl_ablation.py probes and pretrains on: the labeled task pools and
the unlabeled in-domain folder, as micrographs or (the diagnostic view) as the scenes' masks.
"""

from __future__ import annotations

import functools
import math
import os
import shutil
from pathlib import Path

import numpy as np

TASKS = ('nanowires', 'nanoparticles', 'viruses')
TASK_SEED = 1000  # the labeled pools; never used for pretraining images
INDOMAIN_SEED = 7000  # unlabeled in-domain pretraining images (disjoint from the pools)


def indomain_folder(out: Path, n: int, size: int, kind: str = 'images') -> Path:
    """Unlabeled images of the tasks' own kinds (equal shares of the three tasks), as PNGs.

    What a user with a pile of unlabeled micrographs of their own would pretrain on.
    Drawn from INDOMAIN_SEED, so none of them is in a probe pool. kind='masks' writes the
    scenes' masks instead (see task_pool); kind='paired' writes colour files whose red and
    green channels are two acquisitions of the same specimen (independent imaging conditions).
    """
    from PIL import Image

    from fewshot_jax.data import synthetic

    folder = out / f'indomain_{n}_{size}' if kind == 'images' else out / f'indomain_{kind}_{n}_{size}'
    if folder.exists():
        return folder
    # Written aside and renamed: processes sharing `out` never see a half-written folder.
    final, folder = folder, out / f'.{folder.name}.{os.getpid()}'
    folder.mkdir(parents=True, exist_ok=True)
    share = math.ceil(n / len(TASKS))
    written = 0
    for t, task in enumerate(TASKS):
        n_classes = len(getattr(synthetic, task)(1, 32, 0).class_names)
        per_class = math.ceil(share / n_classes)
        make = functools.partial(getattr(synthetic, task), per_class, size, INDOMAIN_SEED + t)
        if kind == 'paired':  # red: the 'images' folder's render; green: a second acquisition
            first, second = make().images, make(imaging_seed=INDOMAIN_SEED).images
            arrays = np.stack([first, second, first], axis=-1)
        else:
            arrays = pool_arrays(make(), kind)
        for image in arrays[: min(share, n - written)]:
            Image.fromarray(np.clip(np.rint(image * 255), 0, 255).astype(np.uint8)).save(
                folder / f'{task}_{written:06d}.png'
            )
            written += 1
    try:
        folder.rename(final)
    except OSError:  # another process got there first
        shutil.rmtree(folder)
    return final


_POOLS: dict = {}


def pool_arrays(data, kind: str) -> np.ndarray:
    """float32 (n, S, S) in [0, 1]: the micrographs, or (kind='masks') the scenes' exact masks.

    The masks are the diagnostic view: the same structures with none of the per-image
    imaging nuisances (polarity, illumination, grain, blur, dose, levels).
    """
    if kind == 'images' or kind.startswith('fixed:'):
        return data.images
    if kind == 'masks':
        return data.masks.astype(np.float32)
    raise ValueError(f"--pool_kind must be 'images', 'masks' or 'fixed:KNOB,...', got {kind!r}")


def fixed_knobs_of(kind: str) -> dict | None:
    """'fixed:contrast,dose=1e6' -> {contrast: middle of its range, dose: 1e6}; 'fixed:all': every knob."""
    if not kind.startswith('fixed:'):
        return None
    from fewshot_jax.data.synthetic.microscope import KNOB_NAMES

    fixed = {}
    for item in kind.split(':', 1)[1].split(','):
        name, _, value = item.partition('=')
        for knob in KNOB_NAMES if name == 'all' else (name,):
            fixed[knob] = (
                'typical'
                if not value
                else value.lower() == 'true'
                if knob == 'dark_objects'
                else float(value)
            )
    return fixed


def task_pool(
    task: str, per_class: int, gen_size: int, image_size: int, kind: str = 'images', seed: int = TASK_SEED
):
    """The labeled pool of `task` as uint8 (n, S, S) at the encoder's size, and labels.

    kind: 'images', 'masks' (see pool_arrays) or 'fixed:KNOB,...': the micrographs with those
    imaging conditions held at the middle of their ranges (the same scenes; 'fixed:all').

    Generated at `gen_size` (0: at `image_size`, as the calibration draws them) from `seed`
    (TASK_SEED: the tuning pool every recipe was screened on; any other seed is a fresh
    reporting pool of the same task), then resized by the pipeline's own resize when the sizes differ.
    """
    from fewshot_jax.data import pipeline, synthetic

    gen_size = gen_size or image_size
    key = (task, per_class, gen_size, image_size, kind, seed)
    if key not in _POOLS:
        data = getattr(synthetic, task)(per_class, gen_size, seed, fixed_knobs=fixed_knobs_of(kind))
        images = np.stack(
            [pipeline.to_uint8_square(im, image_size, 1)[..., 0] for im in pool_arrays(data, kind)]
        )
        _POOLS[key] = (images, np.asarray(data.labels))
    return _POOLS[key]
