"""Which images should I label? Picks the images of an unlabeled folder worth labeling first.

Every image of the folder is encoded with a frozen encoder; a selection strategy
(``select.method``: 'typical', 'kmeans', 'coreset' or 'random'; see
``fewshot_jax/select/strategies.py``) picks ``select.budget`` of them, in the
order to label them. Identical images (same pixels) are reported and picked at
most once.

Launch (an encoder pretrained on your micrographs, e.g. ``configs/barlow_tem.py``)::

    python launch.py --config=configs/select.py --workdir=runs/select \
        --config.data.root=/data/unlabeled \
        --config.select.encoder=checkpoint:runs/bt_tem --config.select.budget=16

Outputs: ``to_label.csv`` (order, file, the cluster the pick stands for, its
size, the pick's distance to the cluster's centroid), ``to_label.png`` (the
chosen images labelled with their order), ``duplicates.csv`` when the folder
holds identical images, and ``select.json`` (the summary).

CPU demo (seconds): synthetic nanowires written to ``runs/select_demo/pool`` as
unlabeled PNGs, 16 picks from a random-init ResNet18's features; after
``make demo`` pass ``--config.select.encoder=checkpoint:runs/demo/pretrain/simclr_tem``
for the pretrained encoder::

    python launch.py --config=configs/select.py:demo --workdir=runs/select_demo

Expected: 16 rows in ``to_label.csv`` whose cluster sizes sum to the 160 pool
images. ``:tiny`` is what the tests run. Whether a strategy beats random draws
in the probe protocol is measured by ``benchmarks/select_vs_random.py``
(``probe.draw`` in ``configs/probe_base.py``).
"""

from __future__ import annotations

import ml_collections

from configs.probe_base import random_init_model

PRESETS = ('', 'demo', 'tiny')


def get_config(arg: str = ''):
    if arg not in PRESETS:
        raise ValueError(
            f'unknown preset {arg!r}: expected one of {PRESETS} '
            '(use --config=configs/select.py or --config=configs/select.py:demo)'
        )
    c = ml_collections.ConfigDict()
    c.task = 'select'
    c.seed = 0  # weights of select.encoder='random-init'

    # Architecture of select.encoder='random-init' (a pretrained encoder brings its own).
    c.model = random_init_model()

    c.data = ml_collections.ConfigDict()
    c.data.source = 'folder'  # or 'synthetic': generated images written to workdir/pool first
    c.data.root = ''
    c.data.recursive = True
    c.data.keep_color = False
    c.data.image_size = 224
    c.data.task = 'nanowires'  # synthetic only: nanowires, nanoparticles or viruses
    c.data.per_class = 40
    c.data.synthetic_size = 64
    c.data.seed = 0

    c.select = ml_collections.ConfigDict()
    # A weight spec (checkpoint:, keras:, torchvision:), 'random-init' (c.model) or an
    # encoder-free baseline ('texture', 'raw-pixels').
    c.select.encoder = ''
    c.select.method = 'typical'
    c.select.budget = 16
    c.select.seed = 0
    c.select.layer = 'pooled'
    c.select.encode_batch = 64
    c.select.sheet_columns = 8

    if arg in ('demo', 'tiny'):
        c.data.source = 'synthetic'
        c.select.encoder = 'random-init'
        c.model.depth = 18
        c.model.width = 16
        c.data.image_size = 64
    if arg == 'tiny':
        c.model.width = 4
        c.data.per_class = 4
        c.data.synthetic_size = 32
        c.data.image_size = 32
        c.select.budget = 4
        c.select.encode_batch = 16
        c.select.sheet_columns = 4
    return c
