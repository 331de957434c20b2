"""Input throughput of the Grain pipelines, in images/s, from real files on disk.

Writes ``--n_images`` synthetic micrographs of ``--source_size`` px as 8-bit PNGs
(flat folder for the SSL pipeline, four class folders for the labeled one),
then times how fast each pipeline turns them into uint8 batches at
``--image_size``. Pass ``--step_pairs_per_s`` (from ``pretrain_step.py`` on the
same machine) to print the headroom: the SSL pipeline must deliver at least
4× what the train step consumes.

    python benchmarks/input_pipeline.py --image_size=224 --batch=64 --threads=16
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from absl import app, flags
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fewshot_jax.data import pipeline, sources, synthetic  # noqa: E402

_N = flags.DEFINE_integer('n_images', 256, 'Images written to disk.')
_SOURCE_SIZE = flags.DEFINE_integer('source_size', 512, 'Side of the files on disk.')
_SIZE = flags.DEFINE_integer('image_size', 224, 'Pipeline output side.')
_BATCH = flags.DEFINE_integer('batch', 64, 'Batch size.')
_THREADS = flags.DEFINE_integer('threads', os.cpu_count() or 2, 'Grain read threads.')
_BATCHES = flags.DEFINE_integer('batches', 20, 'Timed batches (after 2 warm-up batches).')
_WORKERS = flags.DEFINE_integer('workers', os.cpu_count() or 2, 'Grain worker processes (mode workers).')
_STEP = flags.DEFINE_float('step_pairs_per_s', 0.0, 'Train-step throughput to compare with.')
_ARRAYRECORD = flags.DEFINE_bool(
    'arrayrecord',
    False,
    'Also time reading an ArrayRecord copy prepared at --image_size (needs tensorflow-datasets).',
)


def write_files(root: Path) -> None:
    images = synthetic.generic(_N.value, _SOURCE_SIZE.value, seed=0)
    for i, image in enumerate(images):
        folder = root / 'unlabeled'
        labeled = root / 'labeled' / f'class{i % 4}'
        folder.mkdir(parents=True, exist_ok=True)
        labeled.mkdir(parents=True, exist_ok=True)
        pil = Image.fromarray(np.rint(image * 255).astype(np.uint8))
        pil.save(folder / f'{i:05d}.png')
        pil.save(labeled / f'{i:05d}.png')


def images_per_s(dataset, spec) -> float:
    iterator = pipeline.batch_iterator(dataset, spec)
    for _ in range(2):
        next(iterator)
    t0 = time.perf_counter()
    for _ in range(_BATCHES.value):
        batch = next(iterator)
    elapsed = time.perf_counter() - t0
    rows = len(batch['image']) if isinstance(batch, dict) else len(batch)
    return rows * _BATCHES.value / elapsed


def main(argv):
    del argv
    base = dict(
        image_size=_SIZE.value,
        global_batch=_BATCH.value,
        seed=0,
        num_threads=_THREADS.value,
        prefetch=_THREADS.value,
    )
    modes = {  # how the SSL pipeline reads: from RAM after one decode, threads, processes
        'cached': pipeline.PipelineSpec(**base),
        'threads': pipeline.PipelineSpec(**base, cache_bytes=0),
        'workers': pipeline.PipelineSpec(**base, cache_bytes=0, num_workers=_WORKERS.value),
    }
    result = {
        'cpus': os.cpu_count(),
        'threads': _THREADS.value,
        'workers': _WORKERS.value,
        'n_images': _N.value,
        'source_size': _SOURCE_SIZE.value,
        'image_size': _SIZE.value,
        'batch': _BATCH.value,
    }
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        write_files(root)
        unlabeled = sources.UnlabeledFolderSource(root / 'unlabeled')
        for mode, spec in modes.items():
            t0 = time.perf_counter()
            dataset = pipeline.ssl_dataset(unlabeled, spec)
            result[f'ssl_{mode}_setup_s'] = round(time.perf_counter() - t0, 2)
            result[f'ssl_{mode}_images_per_s'] = round(images_per_s(dataset, spec), 1)
        if _ARRAYRECORD.value:
            from fewshot_jax.data import tfds_builders

            t0 = time.perf_counter()
            tfds_builders.prepare(
                'cem500k', manual_dir=root / 'unlabeled', data_dir=root / 'tfds', resolution=_SIZE.value
            )
            result['arrayrecord_prepare_s'] = round(time.perf_counter() - t0, 1)
            prepared = tfds_builders.TfdsSource(
                'cem500k', split='train', data_dir=root / 'tfds', resolution=_SIZE.value
            )
            spec = modes['threads']
            result['ssl_arrayrecord_threads_images_per_s'] = round(
                images_per_s(pipeline.ssl_dataset(prepared, spec), spec), 1
            )
        labeled_source = sources.ClassFolderSource(root / 'labeled')
        result['labeled_images_per_s'] = round(
            images_per_s(
                pipeline.train_dataset(labeled_source, range(len(labeled_source)), modes['threads']),
                modes['threads'],
            ),
            1,
        )
    line = (
        f'{os.cpu_count()} CPUs, {_SOURCE_SIZE.value} px PNG → {_SIZE.value} px, batch '
        f'{_BATCH.value}: SSL cached {result["ssl_cached_images_per_s"]} images/s (decode once '
        f'{result["ssl_cached_setup_s"]} s), threads×{_THREADS.value} '
        f'{result["ssl_threads_images_per_s"]}, workers×{_WORKERS.value} '
        f'{result["ssl_workers_images_per_s"]}; labeled {result["labeled_images_per_s"]}'
    )
    if _ARRAYRECORD.value:
        line += (
            f'; ArrayRecord at {_SIZE.value} px, threads×{_THREADS.value}: '
            f'{result["ssl_arrayrecord_threads_images_per_s"]}'
        )
    if _STEP.value > 0:
        for mode in modes:
            result[f'{mode}_over_step'] = round(result[f'ssl_{mode}_images_per_s'] / _STEP.value, 2)
        line += (
            f'; vs train step {_STEP.value} pairs/s: cached {result["cached_over_step"]}×, '
            f'threads {result["threads_over_step"]}×, workers {result["workers_over_step"]}×'
        )
    print(line, flush=True)
    print(json.dumps(result), flush=True)


if __name__ == '__main__':
    app.run(main)
