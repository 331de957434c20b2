"""Shared defaults of the few-shot probe experiments (the paper's protocol).

Not an experiment itself: ``probe_nanowire.py``, ``probe_mnp.py`` and
``probe_virus.py`` build on :func:`probe_config`. Imports only ml_collections.
"""

from __future__ import annotations

import ml_collections
from ml_collections import config_dict

PRESETS = ('', 'demo', 'tiny')
PAPER_SHOTS = (1, 2, 4, 8, 16, 32, 80)
# The paper's encoders as weight specs with display names. '{models}' stands for
# probe.models_dir, a placeholder the user points at their copies of the files.
# The four self-supervised encoders, five replicas each (pretraining seeds 42-46), under the
# file names the probe notebooks load (docs/paper.md): Keras files saved by the paper's
# notebook, read with RGB inputs in [0, 1] as the notebook fed them.
PAPER_REPLICA_SEEDS = (42, 43, 44, 45, 46)
PAPER_ENCODER_FILES = (
    ('Barlow-Twins_TEM', 'barlow_resnet_batch64_project128_64_1024_seed{seed}.h5'),
    ('SimCLR_TEM', 'simclr_resnet_batch64_project128_64_1024_nocrop_seed{seed}.h5'),
    ('Barlow-Twins_ImageNet', 'barlow_ImageNet_batch64_project128_64_1024_seed{seed}.h5'),
    ('SimCLR_ImageNet', 'simclr_ImageNet_batch64_project128_64_1024_nocrop_seed{seed}.h5'),
)
# SimCLR_SotA_ImageNet: SimCLRv2 r50_1x_sk0 (official SimCLR repository), a TensorFlow
# checkpoint the user converts to a torchvision state dict; SimCLR takes RGB in [0, 1].
SOTA_ENCODER = 'SimCLR_SotA_ImageNet=torchvision:{models}/r50_1x_sk0.pth?input=unit'
# The supervised ImageNet ResNet50 the paper's pretraining started from (Keras applications
# file: 'caffe' inputs, read as such), beside random init as a baseline.
IMAGENET_SUPERVISED = (
    'ImageNet_supervised=keras:{models}/resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5'
)
PAPER_ENCODERS = (
    *(
        f'{name} seed{seed}=keras:{{models}}/{pattern.format(seed=seed)}'
        for name, pattern in PAPER_ENCODER_FILES
        for seed in PAPER_REPLICA_SEEDS
    ),
    SOTA_ENCODER,
    IMAGENET_SUPERVISED,
)
# The random-init and encoder-free baselines (raw pixels, texture, grey-level statistics)
# are added to every list.
BASELINE_ENCODERS = ('random-init', 'raw pixels=raw-pixels', 'texture=texture', 'intensity=intensity')
# The demo's encoder beside the weights its pretraining started from and those weights with
# BatchNorm statistics of the probe's images: the probe's gap table pairs both with the init.
_DEMO_RUN = 'checkpoint:runs/demo/pretrain/simclr_tem'
DEMO_ENCODERS = (
    f'SimCLR demo={_DEMO_RUN}',
    f'random-init={_DEMO_RUN}@0',
    f'BN stats only=bn-stats:{_DEMO_RUN}@0',
) + BASELINE_ENCODERS[1:]
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def random_init_model() -> ml_collections.ConfigDict:
    """The architecture of a 'random-init' encoder: torchvision's ResNet50 (v1.5) on
    ImageNet-normalised inputs, the section ``model`` of the probe and select configs."""
    model = ml_collections.ConfigDict()
    model.depth = 50
    model.width = 64
    model.variant = 'v1.5'
    model.stem = 'imagenet'
    model.dtype = 'float32'
    model.input_mean = IMAGENET_MEAN
    model.input_std = IMAGENET_STD
    model.input_norm = 'channel'  # or 'micrograph' / 'background' (models/input_norm.py)
    model.background_sigma = 1 / 16  # not 'channel': the background blur, x the side
    return model


def probe_config(
    source: str, synthetic_task: str, preset: str, encoders: tuple[str, ...]
) -> ml_collections.ConfigDict:
    """The probe protocol for one data set.

    Args:
        source: ``data.source`` of the paper's preset ('nanowire', 'mnp', 'virus').
        synthetic_task: the synthetic stand-in used by the demo and tiny presets.
        preset: '' (paper), 'demo' (synthetic data, minutes on a CPU) or 'tiny'
            (seconds: a test-sized run with the baselines only).
        encoders: the paper preset's encoder list (baselines are appended).
    """
    if preset not in PRESETS:
        raise ValueError(
            f'unknown preset {preset!r}: expected one of {PRESETS} '
            '(use --config=configs/<file>.py or --config=configs/<file>.py:demo)'
        )
    c = ml_collections.ConfigDict()
    c.task = 'probe'
    c.seed = 0  # weights of the random-init baseline

    # Architecture of 'random-init' when no pretrained encoder is listed (otherwise it
    # copies the first pretrained encoder's architecture).
    c.model = random_init_model()

    c.data = ml_collections.ConfigDict()
    c.data.source = source
    c.data.root = ''
    # Class folders to use, or None for every one (object-typed so that both a tuple and
    # --config.data.classes=None parse from the command line).
    c.data.classes = config_dict.FieldReference(None, field_type=object)
    c.data.keep_color = False
    # An unreadable file: 'error' lists them all and stops; 'skip' goes on without them,
    # listing them on the console.
    c.data.on_unreadable = 'error'
    c.data.image_size = 224
    c.data.task = synthetic_task  # synthetic sources only
    c.data.per_class = 100
    c.data.synthetic_size = 256
    c.data.seed = 0

    c.probe = ml_collections.ConfigDict()
    c.probe.encoders = tuple(encoders) + BASELINE_ENCODERS
    # What '{models}' in probe.encoders stands for: a placeholder, point it at your copies
    # (a missing file stops the probe before any work, naming every missing path).
    c.probe.models_dir = '/path/to/paper_encoders'
    c.probe.layer = 'pooled'
    # Encoder features averaged over each image's eight orientations (quarter turns, each
    # mirrored; baselines never): exact orientation invariance, eight times the encoding. Off:
    # on the held-out tuning families it lifts the random init more than a pretrained encoder
    # (benchmarks/RESULTS.md, "Two rules fixed before their runs").
    c.probe.average_orientations = False
    # How the last feature map becomes one vector: 'average' (the network's global average,
    # the paper's) or 'gem' (generalised mean, power 3: weights the locations where a filter
    # answers most; fewshot_jax/probe/pooling.py). The average: GeM did not meet its rule on
    # the held-out tuning families (benchmarks/RESULTS.md, "Generalised-mean pooling").
    c.probe.pooling = 'average'
    c.probe.encode_batch = 64
    c.probe.mode = 'protocol'  # or 'tuning': 4-fold CV inside the training part (Fig. 8)
    c.probe.head = 'logistic'  # any of logistic, ridge, knn, adam; comma-separated for several
    c.probe.shots = PAPER_SHOTS
    # The paper: 20 stratified 80/20 splits per encoder, one k-shot draw each (seed 42).
    c.probe.split_seeds = 20
    c.probe.draws = 1
    c.probe.shot_seed = 42
    # How the k-shot training sets are drawn: 'random' (k per class, the paper) and, beside
    # it, any of 'uniform', 'kmeans', 'typical', 'coreset' (comma-separated): k × classes
    # images chosen from the training part's unlabeled features (fewshot_jax/probe/draws.py).
    c.probe.draw = 'random'
    c.probe.test_fraction = 0.2
    c.probe.tuning_splits = 5
    c.probe.tuning_folds = 4
    # 'logistic': scikit-learn's LogisticRegression(C) objective, solved to convergence.
    c.probe.C = 1.0
    c.probe.tol = 1e-4  # 2-norm of scikit-learn's normalised gradient (its own criterion: max-norm)
    c.probe.max_iter = 1000
    c.probe.ridge_l2 = 1.0
    c.probe.knn_neighbors = 20
    c.probe.knn_temperature = 0.07
    # 'adam': the paper's classifier (Keras Dense + Adam 1e-3, batch 32, patience 10),
    # early-stopped on labeled images outside the k-shot set (never the test part).
    c.probe.adam = ml_collections.ConfigDict()
    c.probe.adam.lr = 1e-3
    c.probe.adam.batch_size = 32
    c.probe.adam.max_epochs = 300
    c.probe.adam.patience = 10
    c.probe.adam.early_stopping = 'holdout'  # or 'none' (fixed max_epochs)
    c.probe.adam.holdout_per_class = 10
    c.probe.figure_k = 8
    c.probe.tsne_encoder = ''  # '' = the first pretrained encoder
    c.probe.anchor_classes = ('dispersed', 'network')
    c.probe.chunk_values = 1 << 26

    if preset in ('demo', 'tiny'):
        c.data.source = 'synthetic'
        c.model.depth = 18
        c.model.width = 16
        c.model.stem = 'imagenet'
    if preset == 'demo':
        c.data.per_class = 50
        # Generated at the encoder's input size, as the benchmark was calibrated
        # (docs/synthetic/README.md) and as benchmarks/ssl_ablation.py probes.
        c.data.synthetic_size = 64
        c.data.image_size = 64
        c.probe.encoders = DEMO_ENCODERS
        c.probe.shots = (1, 2, 4, 8, 16, 32)
        c.probe.split_seeds = 20
    if preset == 'tiny':
        c.model.width = 4
        c.data.per_class = 12
        c.data.synthetic_size = 32
        c.data.image_size = 32
        c.probe.encoders = BASELINE_ENCODERS
        c.probe.shots = (1, 2, 4)
        c.probe.split_seeds = 3
        c.probe.figure_k = 2
        c.probe.encode_batch = 16
        c.probe.adam.holdout_per_class = 2
    return c
