"""U-Net nanowire segmentation on frozen encoders — the paper's Fig. 4 protocol.

Dispersed and network nanowire images with masks; 80/20 class-balanced split
(seed 42); k = 1, 2, 4, 8, 16, 32, 80 labeled images per class (seed 42,
nested); epochs 120, 120, 120, 60, 40, 30, 20 by k; Adam 1e-3 (constant), batch
4, loss 1 − soft Dice; the paper's transposed-conv decoder; resolutions 224, 384,
512, 768, 1024; final epoch (no test-set model selection). Every encoder is
reported beside a random-init encoder of the same architecture and an Otsu
threshold (a weak baseline: one threshold per image), on the same test images; the
classic-decoder presets (``:demo``, ``:cpu``) add the decoder with no encoder
features (``'none=none'``: zeros for the encoder's maps, the image skip its only
input), the control for what the encoder adds. The paper's decoder has no image
skip, so it has no such control.

Launch (the published nanowire set; the encoder of a pretraining workdir)::

    python launch.py --config=configs/unet_nanowire.py --workdir=runs/bt_tem \
        --config.data.root=/data/nanowires

``{workdir}`` in ``segment.encoders`` is the launch workdir, so the stage's
outputs land in ``runs/bt_tem/segment`` beside the encoder it evaluates
(``results.csv``, ``summary.txt``, ``figures/``, ``runs/*/model``). Other
encoders, e.g. a paper encoder file (read with its own input scale, docs/paper.md):
``--config.segment.encoders="('paper=keras:/m/encoder.h5', 'random=random')"``.

Presets:

* ``:demo`` — synthetic nanowires (40 per class at 256 px: 32 train, 8 test per
  class) at 128 px, k = 1, 2, 4, 8, the encoder of ``make demo`` beside the weights its
  pretraining started from (``runs/demo/pretrain/simclr_tem``; override
  ``segment.encoders``), the classic decoder at width 32, Dice + BCE, flips/turns, Adam
  3e-3 with a cosine, 60 epochs and at least 240 steps (240 at every k: a handful of masks
  needs as many decoder updates as 16 do; ``segment.min_steps``),
  test predictions averaged over the 8 flips/turns (``segment.test_flips``):
  the smallest run that still separates pretrained, random init and Otsu (what
  ``make demo`` runs at k = 8).
* ``:cpu`` — the Dice bar's check on 2 CPU cores, what ``make demo-full`` runs at k = 8: the
  demo's data and training recipe at 256 px (the images' own size), 150 epochs and at least
  400 steps (400, 400, 400, 600 at k = 1, 2, 4, 8, the floor of ``segment.fit``), and the
  paper's loss (1 − soft Dice). Expected: median Dice about 0.80 at k = 8 with the SimCLR
  ``:cpu`` encoder, ~5-6 min per encoder. With the encoder of
  ``launch.py --config=configs/simclr_tem.py:cpu --workdir=runs/simclr_cpu``::

      python launch.py --config=configs/unet_nanowire.py:cpu --workdir=runs/seg_cpu \
          --config.segment.encoders="('pretrained=checkpoint:runs/simclr_cpu', \
                                      'random=checkpoint:runs/simclr_cpu@0')"

  Measured figures of both are in benchmarks/RESULTS.md ("U-Net segmentation").
* ``:tiny`` — seconds on a CPU: a width-4 ResNet18 random encoder at 64 px, k = 1, 2,
  a few steps. For tests and smoke runs only.
"""

import ml_collections

PRESETS = ('', 'cpu', 'demo', 'tiny')


def _optional(value):
    """An int/float-or-None field that ``--config.x=None`` can set from the command line."""
    return ml_collections.config_dict.FieldReference(value, field_type=object)


def get_config(arg: str = ''):
    if arg not in PRESETS:
        raise ValueError(
            f'unknown preset {arg!r}: expected one of {PRESETS} '
            f'(--config=configs/unet_nanowire.py or ...unet_nanowire.py:demo)'
        )
    c = ml_collections.ConfigDict()
    c.task = 'segment'
    c.seed = 42
    # None: the largest device count that divides the batch.
    c.num_devices = _optional(None)

    # Architecture of the 'random' encoder when no pretrained one is listed, and the
    # compute dtype of the U-Net ('bfloat16' for speed on accelerators).
    c.model = ml_collections.ConfigDict()
    c.model.depth = 50
    c.model.width = 64
    c.model.variant = 'v1.5'
    c.model.dtype = 'float32'

    c.data = ml_collections.ConfigDict()
    c.data.source = 'nanowire'  # 'nanowire' (published layout), 'masked_folder', 'synthetic'
    c.data.root = ''
    c.data.classes = ('dispersed', 'network')
    c.data.mask_suffix = '_mask.png'  # masked_folder only
    # How mask files mark the foreground: 'binary' (one channel, 0/1/255), 'color_overlay'
    # (colour drawn over a grey image), 'auto'; None: 'auto' for 'nanowire', else 'binary'.
    c.data.mask_encoding = ml_collections.FieldReference(None, field_type=str)
    # An unreadable image or mask: 'error' lists them all and stops; 'skip' goes on without
    # them, listing them on the console.
    c.data.on_unreadable = 'error'
    c.data.per_class = 100  # synthetic only
    c.data.synthetic_size = 1024  # synthetic only
    c.data.seed = 0  # synthetic only
    c.data.test_fraction = 0.2
    c.data.split_seed = 42
    c.data.shot_seed = 42

    c.segment = ml_collections.ConfigDict()
    # 'display name=weight spec'; 'random' is a random-init encoder of the same architecture.
    c.segment.encoders = ('pretrained=checkpoint:{workdir}', 'random=random')
    c.segment.resolutions = (224, 384, 512, 768, 1024)
    # Independent draws of the split and the k-shot sets (draw d: data.split_seed + d and
    # data.shot_seed + d); the summary pairs the first encoder with every other entry per draw.
    # Choose settings on one draw and report on others (e.g. first_draw=1, draws=3 after choosing
    # on draw 0); draws=1, first_draw=0 is the paper's single split.
    c.segment.draws = 1
    c.segment.first_draw = 0
    c.segment.shots = (1, 2, 4, 8, 16, 32, 80)
    c.segment.epochs = _optional(None)  # None: the paper's by k
    c.segment.num_steps = _optional(None)  # overrides epochs
    # At least this many steps whatever k (None: the paper's epochs alone decide).
    c.segment.min_steps = _optional(None)
    c.segment.decoder = 'paper'  # or 'unet' (classic)
    # Decoder filters scale by decoder_width / 64; None follows the encoder's width.
    c.segment.decoder_width = _optional(None)
    # None: Keras' 0.99 for 'paper' (as in the notebooks), 0.9 for 'unet'.
    c.segment.bn_momentum = _optional(None)
    c.segment.loss = 'dice'  # or 'dice_bce'
    c.segment.batch_size = 4
    c.segment.lr = 1e-3
    c.segment.lr_schedule = 'constant'  # the paper's (Keras Adam); or 'cosine' (to 0)
    c.segment.augment = False  # flips/quarter turns, identical for image and mask
    c.segment.intensity_augment = False  # contrast, brightness, gamma, illumination, noise
    c.segment.invert_prob = 0.0  # x -> 1 - x per image: both contrast polarities in the data
    c.segment.validation_fraction = 0.0  # >0: keep the best step on a split of the k images
    c.segment.validation_every = 0.1
    c.segment.tile_overlap = 0.25
    # Train on random crop-px windows of the resolution-px images (None: whole images);
    # test images are then predicted in crop-px tiles.
    c.segment.crop = _optional(None)
    # Test-time augmentation: average the predictions of the 8 flips/quarter turns (8x compute).
    c.segment.test_flips = False
    c.segment.num_classes = 1
    c.segment.keep_run_checkpoints = False  # a finished run keeps only its model

    c.train = ml_collections.ConfigDict()
    c.train.log_every = 10
    c.train.checkpoint_every = 0.25
    c.train.keep_checkpoints = 1
    c.train.progress = True

    if arg in ('demo', 'cpu'):
        c.model.depth = 18
        c.model.width = 16
        c.data.source = 'synthetic'
        c.data.per_class = 40
        c.data.synthetic_size = 256
        c.segment.encoders = (
            'pretrained=checkpoint:runs/demo/pretrain/simclr_tem',
            'random=checkpoint:runs/demo/pretrain/simclr_tem@0',
            'none=none',
        )
        c.segment.shots = (1, 2, 4, 8)
        # The paper's decoder and loss learn too slowly for a few hundred CPU steps on thin wires
        # (benchmarks/RESULTS.md, Superseded runs, "U-Net: how the :cpu preset was found").
        c.segment.decoder = 'unet'
        c.segment.decoder_width = 32
        c.segment.loss = 'dice_bce'
        c.segment.lr = 3e-3
        c.segment.lr_schedule = 'cosine'
        c.segment.augment = True
        # The mean prediction over the 8 flips/quarter turns raises the median Dice of every run
        # measured (benchmarks/RESULTS.md, U-Net segmentation, "Test-time flips").
        c.segment.test_flips = True
    if arg == 'demo':
        c.segment.resolutions = (128,)
        c.segment.epochs = 60  # 30, 60, 120, 240 steps at k = 1, 2, 4, 8 ...
        c.segment.min_steps = 240  # ... raised to k = 8's budget: 240 steps at every k
    elif arg == 'cpu':
        c.segment.resolutions = (256,)
        c.segment.epochs = 150  # 75, 150, 300, 600 steps at k = 1, 2, 4, 8 ...
        c.segment.min_steps = 400  # ... at least segment.fit's 400: 400, 400, 400, 600
        # The paper's 1 - soft Dice, not Dice + BCE: the same on average, above 0.80 on both draws
        # (benchmarks/RESULTS.md, "The :cpu preset with the SimCLR :cpu encoder").
        c.segment.loss = 'dice'
        # Whole images, not random windows (segment.crop): windows are no better per minute
        # (benchmarks/RESULTS.md, "Training on random windows").
    elif arg == 'tiny':
        c.model.depth = 18
        c.model.width = 4
        c.data.source = 'synthetic'
        c.data.per_class = 5
        c.data.synthetic_size = 64
        c.segment.encoders = ('random=random',)
        c.segment.resolutions = (64,)
        c.segment.shots = (1, 2)
        c.segment.num_steps = 4
        c.train.log_every = 2
        c.train.progress = False
    return c
