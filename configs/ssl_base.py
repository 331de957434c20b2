"""Shared defaults of the self-supervised pretraining experiments (the paper's settings).

Not an experiment itself: ``barlow_tem.py``, ``simclr_tem.py``, ``barlow_imagenet.py``
and ``simclr_imagenet.py`` build on :func:`ssl_config`. The preset without a suffix is the
paper's run as its notebook ran it: Keras' ResNet50 started from the ImageNet weights you give
(``model.init``), fed RGB in [0, 1], projector Dense -> ReLU -> BN 128-64-1024, SGD without
momentum, lr 0.2. ``docs/paper.md`` lists, setting by setting, what the paper says, what the
notebook did, this preset and our default, and why they differ; our fixes are switches, e.g.
``--config.optim.schedule=paper`` for the notebook's learning rate (cosine to 0 at step 1000)
instead of the default warm-up and cosine over the whole run.

A finished run leaves ``workdir/encoder`` (the frozen encoder that the probe and U-Net
stages load), ``encoder_init`` (the weights it started from, ``checkpoint:WORKDIR@0``),
``metrics.jsonl``, TensorBoard events in ``tb/`` and the last checkpoints in
``checkpoints/``; rerunning the command resumes from them.
"""

from __future__ import annotations

import ml_collections
from ml_collections import config_dict

# ImageNet channel statistics of [0, 1] RGB inputs (as torchvision normalises); kept here as
# literals so loading a config imports nothing but ml_collections (a test checks they equal
# the ResNet module's).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

PRESETS = ('', 'demo', 'cpu', 'tiny')


def optional_int(value):
    """A config field holding an int or None that ``--config.x=None`` can set from the command line."""
    return config_dict.FieldReference(value, field_type=object)


def ssl_config(method: str, dataset: str, preset: str) -> ml_collections.ConfigDict:
    """The paper's pretraining setup for ``method`` on ``dataset``.

    Args:
        method: 'barlow_twins' (random crop, the paper's selected setting) or
            'simclr' (no crop, the paper's selected setting).
        dataset: 'tem' (grayscale micrographs; paper: 832 CEM500K images) or
            'imagenet' (colour photographs; paper: 832 ImageNet images).
        preset: '' for the paper's run, 'demo' for a CPU-sized run on the
            built-in synthetic data (SimCLR 4-5 minutes on 2 cores, Barlow Twins 13),
            'cpu' for the same recipe run longer (11-16 minutes; Barlow Twins' is its
            :demo), 'tiny' for tests
            (a width-4 ResNet18 at 32 px, 6 steps: seconds).
    """
    if preset not in PRESETS:
        raise ValueError(
            f'unknown preset {preset!r}: expected one of {PRESETS} '
            f'(use --config=configs/<file>.py, :demo, :cpu or :tiny)'
        )
    if dataset not in ('tem', 'imagenet'):
        raise ValueError(f"dataset={dataset!r}: expected 'tem' or 'imagenet'")
    c = ml_collections.ConfigDict()
    c.task = 'pretrain'
    c.seed = 0
    c.num_devices = optional_int(None)  # None: every visible device

    c.model = ml_collections.ConfigDict()
    c.model.depth = 50
    c.model.width = 64
    # 'keras': Keras' ResNet50 (v1), the notebook's; 'v1.5': torchvision's.
    c.model.variant = 'keras'
    c.model.stem = 'imagenet'  # 'small': 3x3 stride 1, no max-pool (for 32-96 px images)
    c.model.dtype = 'float32'
    c.model.zero_init_residual = False
    c.model.projector = (128, 64, 1024)  # paper: last projection layer 1024
    # 'paper': Dense -> ReLU -> BN (the notebook's); 'standard': Dense -> BN -> ReLU.
    c.model.projector_order = 'paper'
    # 'frozen': projector BN on running statistics (the notebook's); 'batch': batch statistics.
    c.model.projector_bn = 'frozen'
    # Start of the encoder, a weight spec: 'keras:/path.h5', 'torchvision:/path.pth',
    # 'checkpoint:/path/workdir' or 'random'. 'required' stops the run before any work and
    # says how to give the ImageNet weights the paper started from.
    c.model.init = 'required'
    # Input normalisation of [0, 1] RGB images: the notebook fed them unchanged (mean 0, std 1)
    # with RGB channel order, even to the BGR-trained Keras ImageNet weights.
    c.model.input_mean = (0.0, 0.0, 0.0)
    c.model.input_std = (1.0, 1.0, 1.0)
    c.model.input_channels = 'rgb'
    # 'micrograph': flatten the background, unit contrast, one polarity (models/input_norm.py),
    # the background being a Gaussian blur of sigma = background_sigma x the image side;
    # 'background': the same background and polarity, the contrast divided by input_std only.
    c.model.input_norm = 'channel'
    c.model.background_sigma = 1 / 16

    c.loss = ml_collections.ConfigDict()
    c.loss.name = method
    c.loss.variant = 'standard'  # 'paper' reproduces the original notebooks
    c.loss.temperature = 0.1
    c.loss.lambd = 0.005

    c.augment = ml_collections.ConfigDict()
    # Paper's selected settings: Barlow Twins with Randcrop, SimCLR without crop.
    c.augment.crop = 'random' if method == 'barlow_twins' else 'none'
    c.augment.crop_range = (0.25, 0.5)  # the original code's Randcrop side fraction
    # crop='window': views of this fraction of the image side at its own pixel size (no resize).
    c.augment.window = 0.5
    c.augment.flip_prob = 0.5
    c.augment.rotate90 = False  # also rotate by k * 90 degrees (all 8 symmetries with flips)
    c.augment.jitter_prob = 0.8
    c.augment.brightness = 0.0
    c.augment.contrast = (0.2, 1.8)
    c.augment.saturation = (0.2, 1.8)
    c.augment.hue = 0.2
    # Grayscale-micrograph augmentations (the augment module); off in the paper's recipe.
    c.augment.crop_area = (0.08, 1.0)  # crop='area': area fraction of the image
    c.augment.crop_ratio = (3 / 4, 4 / 3)
    c.augment.gamma = (1.0, 1.0)
    c.augment.invert_prob = 0.0
    c.augment.blur_prob = 0.0
    c.augment.blur_sigma = (0.1, 2.0)
    c.augment.noise_prob = 0.0
    c.augment.noise_std = (0.0, 0.05)
    # (lo, hi) fraction of the recorded dose each view keeps: its shot noise raised to match,
    # scaled by the image's own noise level; (1, 1) off. Off in every preset: on the held-out
    # tuning families it did not meet its rule (benchmarks/RESULTS.md, "Views at a lower dose").
    c.augment.dose = (1.0, 1.0)
    c.augment.illumination = 0.0  # max amplitude of a smooth random illumination field
    # True: colour files hold two acquisitions of one field (red, green); one view from each.
    c.augment.paired_channels = False

    c.data = ml_collections.ConfigDict()
    c.data.source = 'folder'
    c.data.root = ''
    # The paper drew 832 images per run; --config.data.subset=None uses every image.
    c.data.subset = optional_int(832)
    c.data.keep_color = dataset == 'imagenet'
    # An unreadable file: 'error' lists them all and stops; 'skip' goes on without them,
    # listing them on the console.
    c.data.on_unreadable = 'error'
    c.data.num_images = 832  # synthetic sources only
    c.data.synthetic_size = 256
    c.data.image_size = 224
    c.data.batch_size = 64
    c.data.seed = 0
    c.data.num_threads = 8
    c.data.num_workers = 0  # Grain worker processes; >0 for large sets that do not fit the cache
    c.data.cache_gb = 4.0  # decode+resize once and serve from RAM when the set fits

    c.optim = ml_collections.ConfigDict()
    c.optim.name = 'sgd'
    c.optim.lr = 0.2
    c.optim.momentum = 0.0  # the notebook's tf.keras.optimizers.SGD(schedule)
    c.optim.weight_decay = 0.0
    # 'cosine': warm-up, then cosine over the whole run; 'paper': the notebook's
    # CosineDecay(lr, decay_steps), lr 0 after decay_steps (docs/paper.md).
    c.optim.schedule = 'cosine'
    c.optim.decay_steps = 1000  # schedule='paper' only
    c.optim.warmup_steps = 0.05  # a fraction of the run; the cosine then spans the rest
    c.optim.end_lr = 0.0

    c.train = ml_collections.ConfigDict()
    c.train.epochs = 200
    c.train.num_steps = optional_int(None)  # overrides epochs when set
    c.train.log_every = 10
    c.train.checkpoint_every = 500
    c.train.keep_checkpoints = 3
    c.train.progress = True

    # The online probe (the monitor module): few-shot accuracy on a labeled set that never
    # enters the pretraining batches, logged as probe/<task>/<k>shot_{logistic,knn}; step 0 is
    # the random-init reference. Tasks: 'nanowires', 'nanoparticles', 'viruses' (synthetic)
    # or 'folder:/path/to/class_folders'; () turns it off.
    c.monitor = ml_collections.ConfigDict()
    c.monitor.tasks = ('nanowires', 'nanoparticles')
    c.monitor.every = 0.25  # a fraction of the run, or a number of steps
    c.monitor.images_per_class = 48
    c.monitor.image_size = c.data.get_ref('image_size')
    c.monitor.shots = (8,)
    c.monitor.draws = 20
    c.monitor.layer = 'pooled'
    c.monitor.seed = 0

    if preset in ('demo', 'cpu', 'tiny'):
        # The small presets keep the recipe the benchmark tuned (benchmarks/RESULTS.md,
        # "Pretraining recipes: does pretraining beat random init?", Protocol): torchvision's
        # ResNet from random weights on ImageNet-normalised inputs, the standard projector and
        # SGD with momentum.
        c.model.variant = 'v1.5'
        c.model.init = 'random'
        c.model.input_mean = IMAGENET_MEAN
        c.model.input_std = IMAGENET_STD
        c.model.projector_order = 'standard'
        c.model.projector_bn = 'batch'
        c.optim.momentum = 0.9
        c.model.depth = 18
        c.model.width = 16
        c.model.projector = (64, 64, 128)
        c.data.source = 'synthetic_everyday' if dataset == 'imagenet' else 'synthetic'
        c.data.num_images = 256
        c.data.synthetic_size = 96
        c.data.image_size = 64
        c.data.batch_size = 32
        c.optim.lr = 0.1
        c.train.num_steps = 200
        c.train.log_every = 10
        c.train.checkpoint_every = 50
    if preset in ('demo', 'cpu'):
        # Area crops and flips with *no* photometric change between the views: jitter teaches
        # invariance to the intensity statistics that tell the synthetic classes apart
        # (benchmarks/RESULTS.md, "Pretraining recipes: does pretraining beat random init?").
        # A wide projector, 2048 generic images, a 10 % warm-up; SGD lr 0.3 (SimCLR), Adam (Barlow Twins).
        c.augment.crop = 'area'
        c.augment.crop_area = (0.2, 1.0)
        c.augment.jitter_prob = 0.0
        c.augment.brightness = 0.0
        c.augment.contrast = (1.0, 1.0)
        c.augment.saturation = (1.0, 1.0)
        c.augment.hue = 0.0
        # Quarter turns (all 8 symmetries of the pixel grid with the flips): a micrograph has
        # no preferred orientation, so none of them changes what the specimen is.
        c.augment.rotate90 = True
        c.model.projector = (512, 512, 512)
        c.data.num_images = 2048
        # A user's folder (data.source='folder') is used whole: 832 is the paper's draw
        # from CEM500K, and a scientist's few hundred images are all worth training on.
        c.data.subset = None
        c.optim.lr = 0.3
        c.optim.warmup_steps = 0.1
        if method == 'barlow_twins':
            # Adam: Barlow Twins' loss sums D diagonal and D(D-1) off-diagonal terms, so its
            # gradient grows with the projector's width and plain SGD's step with it (at lr 0.3
            # the features lose the class on held-out micrographs); the Barlow Twins paper's
            # LARS and Adam take steps that do not depend on the loss's scale
            # (benchmarks/RESULTS.md, "Transfer to held-out physical families").
            c.optim.name = 'adam'
            c.optim.lr = 1e-3
        # On the held-out tuning families SimCLR's 5000 steps do not beat 2000 (crystals -0.014
        # [-0.029, +0.002], composites +0.054 [-0.165, +0.273], 3 seeds each), Barlow Twins'
        # with Adam still climbs past 7000 (10 000 vs 7000 over six tuning runs: +0.056
        # [+0.0003, +0.112] at 8 labels, by a rule fixed before its runs), so Barlow Twins' :demo
        # is its 10 000-step :cpu run (benchmarks/RESULTS.md, "Pretraining length on the held-out
        # families", "Barlow Twins at 10 000 steps on the tuning families").
        steps = {'demo': (2000, 10000), 'cpu': (5000, 10000)}[preset]
        c.train.num_steps = steps[0] if method == 'simclr' else steps[1]
        c.train.checkpoint_every = 500
    if preset == 'tiny':
        # Compiles and runs in seconds: for tests and smoke runs, not for results.
        c.model.width = 4
        c.model.projector = (16, 16, 32)
        c.data.num_images = 32
        c.data.synthetic_size = 40
        c.data.image_size = 32
        c.data.batch_size = 8
        c.data.num_threads = 2
        c.train.num_steps = 6
        c.train.log_every = 1
        c.train.checkpoint_every = 2
        c.train.progress = False
        c.monitor.tasks = ()
        c.monitor.images_per_class = 6
        c.monitor.shots = (2,)
        c.monitor.draws = 3
    return c
