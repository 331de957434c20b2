"""The pretraining recipes that benchmarks/ssl_ablation.py compares: each is a method and the
config overrides it changes from ``configs/ssl_base.ssl_config(method, 'tem', 'demo')``.

    python benchmarks/ssl_ablation.py --list --out=x    # every recipe and its overrides
"""

from __future__ import annotations

# Grayscale micrograph augmentations: saturation and hue are no-ops on gray images.
GRAY = {
    'augment.brightness': 0.3,
    'augment.gamma': (0.6, 1.6),
    'augment.blur_prob': 0.5,
    'augment.blur_sigma': (0.1, 1.5),
    'augment.noise_prob': 0.5,
    'augment.noise_std': (0.0, 0.05),
    'augment.saturation': (1.0, 1.0),
    'augment.hue': 0.0,
}
AREA02 = {'augment.crop': 'area', 'augment.crop_area': (0.2, 1.0)}
AREA008 = {'augment.crop': 'area', 'augment.crop_area': (0.08, 1.0)}
WIDE = {'model.projector': (512, 512, 512)}
# Smaller crops and stronger blur.
STRONG = {'augment.crop_area': (0.08, 1.0), 'augment.blur_prob': 0.8, 'augment.blur_sigma': (0.5, 2.5)}
ADAM = {'optim.name': 'adam', 'optim.lr': 1e-3, 'optim.warmup_steps': 0.1}
MNORM = {'model.input_norm': 'micrograph'}
NUISANCE = {'augment.invert_prob': 0.5, 'augment.illumination': 0.5}
PAIRED = {'data.source': 'indomain_paired', 'augment.paired_channels': True}
NO_PHOTOMETRIC = {
    'augment.jitter_prob': 0.0,
    'augment.brightness': 0.0,
    'augment.contrast': (1.0, 1.0),
    'augment.gamma': (1.0, 1.0),
    'augment.blur_prob': 0.0,
    'augment.noise_prob': 0.0,
}
BEST_GUESS = {**AREA02, **GRAY, **WIDE, 'data.num_images': 2048, 'optim.lr': 0.3, 'optim.warmup_steps': 0.1}

# Crops, flips and quarter turns, no photometric change between the views.
GEOM_ROT = {**BEST_GUESS, **NO_PHOTOMETRIC, 'augment.rotate90': True}
ADAM_1E3 = {'optim.name': 'adam', 'optim.lr': 1e-3}

# What every recipe's overrides apply on top of, per method: ssl_config(method, 'tem', 'demo')
# reset to the :demo preset the recipes were measured against (up to 2026-12-03: `combo` at 200
# steps for Barlow Twins, the paper's recipe scaled down for SimCLR), so the figures in
# benchmarks/RESULTS.md stay reproducible when the shipped preset changes.
MEASURED_BASE: dict[str, dict] = {
    'barlow_twins': {
        **BEST_GUESS,
        'augment.jitter_prob': 0.8,
        'augment.contrast': (0.2, 1.8),
        'augment.rotate90': False,
        'train.num_steps': 200,
    },
    'simclr': {
        'augment.crop': 'none',
        'augment.crop_area': (0.08, 1.0),
        'augment.jitter_prob': 0.8,
        'augment.contrast': (0.2, 1.8),
        'augment.saturation': (0.2, 1.8),
        'augment.hue': 0.2,
        'augment.rotate90': False,
        'model.projector': (64, 64, 128),
        'data.num_images': 256,
        'optim.lr': 0.1,
        'optim.warmup_steps': 0.05,
        'train.num_steps': 200,
    },
}

# name -> (method, overrides). Each changes one thing from the shipped :demo recipe,
# except the combinations at the end.
RECIPES: dict[str, tuple[str, dict]] = {
    'shipped': ('barlow_twins', {}),
    'small_stem': ('barlow_twins', {'model.stem': 'small'}),
    'small_stem_32px': ('barlow_twins', {'model.stem': 'small', 'data.image_size': 32}),
    'images_2k': ('barlow_twins', {'data.num_images': 2048}),
    'images_4k': ('barlow_twins', {'data.num_images': 4096}),
    'gray_aug': ('barlow_twins', GRAY),
    'invert': ('barlow_twins', {'augment.invert_prob': 0.5}),
    'area02': ('barlow_twins', AREA02),
    'area008': ('barlow_twins', AREA008),
    'wide_proj': ('barlow_twins', WIDE),
    'lars': ('barlow_twins', {'optim.name': 'lars', 'optim.lr': 1.0, 'optim.warmup_steps': 0.1}),
    'lars_lr5': ('barlow_twins', {'optim.name': 'lars', 'optim.lr': 5.0, 'optim.warmup_steps': 0.1}),
    'lr0.03': ('barlow_twins', {'optim.lr': 0.03}),
    'lr0.3_wu0.1': ('barlow_twins', {'optim.lr': 0.3, 'optim.warmup_steps': 0.1}),
    'batch128': ('barlow_twins', {'data.batch_size': 128}),
    'wd5e-4': ('barlow_twins', {'optim.weight_decay': 5e-4}),
    'steps1000': ('barlow_twins', {'train.num_steps': 1000}),
    'steps3000': ('barlow_twins', {'train.num_steps': 3000}),
    'simclr_shipped': ('simclr', {}),
    'simclr_area02_gray': ('simclr', {**AREA02, **GRAY}),
    'indomain': ('barlow_twins', {'data.source': 'indomain', 'data.num_images': 2048}),
    'combo': ('barlow_twins', BEST_GUESS),
    'combo_1000': ('barlow_twins', {**BEST_GUESS, 'train.num_steps': 1000}),
    'combo_3000': ('barlow_twins', {**BEST_GUESS, 'train.num_steps': 3000}),
    'combo_small_stem_32px': ('barlow_twins', {**BEST_GUESS, 'model.stem': 'small', 'data.image_size': 32}),
    # The small stem at the probe's 64 px: 64x64 maps in stage 1 instead of 16x16 (4x the FLOPs).
    'combo_small_stem_64px': ('barlow_twins', {**BEST_GUESS, 'model.stem': 'small'}),
    # Large crops only: a crop of 0.2 of the area can cut a network's connectivity or leave one
    # wire of several, the structure that separates the classes; flips and the grayscale ops stay.
    'combo_area06': ('barlow_twins', {**BEST_GUESS, 'augment.crop_area': (0.6, 1.0)}),
    'combo_nocrop': ('barlow_twins', {**BEST_GUESS, 'augment.crop': 'none'}),
    # A smooth random illumination field per view: the synthetic micrographs' uneven
    # illumination identifies an image (a pretext shortcut) without carrying its class.
    'combo_illum': ('barlow_twins', {**BEST_GUESS, 'augment.illumination': 0.5}),
    'combo_illum_1000': (
        'barlow_twins',
        {**BEST_GUESS, 'augment.illumination': 0.5, 'train.num_steps': 1000},
    ),
    # Polarity and illumination carry no label in the tasks (drawn per image for every class):
    # views of opposite polarity and different illumination leave only structure to match.
    'combo_invert_illum': ('barlow_twins', {**BEST_GUESS, **NUISANCE}),
    'combo_invert_illum_600': ('barlow_twins', {**BEST_GUESS, **NUISANCE, 'train.num_steps': 600}),
    'combo_indomain_invert_illum': (
        'barlow_twins',
        {**BEST_GUESS, **NUISANCE, 'data.source': 'indomain'},
    ),
    'combo_indomain': ('barlow_twins', {**BEST_GUESS, 'data.source': 'indomain'}),
    # The encoder normalises each micrograph (background, contrast, polarity) itself.
    'combo_mnorm': ('barlow_twins', {**BEST_GUESS, **MNORM}),
    'combo_mnorm_1000': ('barlow_twins', {**BEST_GUESS, **MNORM, 'train.num_steps': 1000}),
    'combo_indomain_mnorm': ('barlow_twins', {**BEST_GUESS, **MNORM, 'data.source': 'indomain'}),
    'combo_indomain_mnorm_1000': (
        'barlow_twins',
        {**BEST_GUESS, **MNORM, 'data.source': 'indomain', 'train.num_steps': 1000},
    ),
    # Large crops only, in-domain, 1000 steps (with --pool_kind=masks: does crop invariance
    # cost the nanowire classes, which differ in wire count, length and width?).
    'combo_indomain_area06_1000': (
        'barlow_twins',
        {**BEST_GUESS, 'data.source': 'indomain', 'augment.crop_area': (0.6, 1.0), 'train.num_steps': 1000},
    ),
    # Every imaging condition the augmentations can redraw, at the generator's strengths:
    # polarity, illumination, blur and shot noise per view, on top of the micrograph norm.
    'combo_indomain_allnuis_1000': (
        'barlow_twins',
        {
            **BEST_GUESS,
            **MNORM,
            **NUISANCE,
            'augment.noise_prob': 0.8,
            'augment.noise_std': (0.0, 0.15),
            'augment.blur_prob': 0.8,
            'augment.blur_sigma': (0.1, 2.0),
            'data.source': 'indomain',
            'train.num_steps': 1000,
        },
    ),
    # The direct test of the imaging-conditions reading: the two views are two acquisitions of
    # one specimen (independent polarity, contrast, illumination, grain, blur, dose, levels),
    # then augmented as usual; the red channel is exactly combo_indomain's image.
    'combo_indomain_paired': ('barlow_twins', {**BEST_GUESS, **PAIRED}),
    'combo_indomain_paired_1000': ('barlow_twins', {**BEST_GUESS, **PAIRED, 'train.num_steps': 1000}),
    # Paired acquisitions differ in polarity and contrast: the encoder's micrograph
    # normalisation takes those away so that the pretext task is learnable (loss above 540
    # without it: the views barely correlate).
    'combo_indomain_paired_mnorm_1000': (
        'barlow_twins',
        {**BEST_GUESS, **PAIRED, **MNORM, 'train.num_steps': 1000},
    ),
    # The 2x2 of the diagnostic: pretrain on the masks, probe the micrographs (run with the
    # default --pool_kind) and pretrain on the micrographs, probe the masks (--pool_kind=masks).
    'combo_indomain_masks_1000': (
        'barlow_twins',
        {**BEST_GUESS, 'data.source': 'indomain_masks', 'train.num_steps': 1000},
    ),
    'combo_indomain_images_1000': (
        'barlow_twins',
        {**BEST_GUESS, 'data.source': 'indomain_images', 'train.num_steps': 1000},
    ),
    # Crops and flips only: on micrographs with the imaging knobs held fixed, random init
    # reads the class from intensity statistics that the photometric invariances may erase.
    'combo_indomain_geom_1000': (
        'barlow_twins',
        {**BEST_GUESS, **NO_PHOTOMETRIC, 'data.source': 'indomain_images', 'train.num_steps': 1000},
    ),
    'combo_indomain_geom_3000': (
        'barlow_twins',
        {**BEST_GUESS, **NO_PHOTOMETRIC, 'data.source': 'indomain_images', 'train.num_steps': 3000},
    ),
    # The same on generic images: what a user without a pile of their own micrographs can do.
    'combo_geom_3000': ('barlow_twins', {**BEST_GUESS, **NO_PHOTOMETRIC, 'train.num_steps': 3000}),
    # As long as the 15 CPU-minute budget allows (~115 ms a step on 2 idle cores).
    'combo_geom_7000': ('barlow_twins', {**BEST_GUESS, **NO_PHOTOMETRIC, 'train.num_steps': 7000}),
    'simclr_combo_geom_3000': ('simclr', {**BEST_GUESS, **NO_PHOTOMETRIC, 'train.num_steps': 3000}),
    # + rotations by multiples of 90 degrees: with the flips, all 8 symmetries of the square,
    # none of which changes a micrograph's class (the generators draw orientations uniformly).
    'combo_geom_rot_3000': ('barlow_twins', {**GEOM_ROT, 'train.num_steps': 3000}),
    # Barlow Twins with Adam (a step size that does not grow with the loss's D^2 terms) and
    # the quarter turns, chosen on the held-out crystals family; at 10 000 steps the Barlow
    # Twins :demo and :cpu presets (benchmarks/heldout_transfer.py, two tuning families).
    'barlow_adam_rot_3000': ('barlow_twins', {**GEOM_ROT, **ADAM_1E3, 'train.num_steps': 3000}),
    'barlow_adam_rot_7000': ('barlow_twins', {**GEOM_ROT, **ADAM_1E3, 'train.num_steps': 7000}),
    'barlow_adam_rot_10000': ('barlow_twins', {**GEOM_ROT, **ADAM_1E3, 'train.num_steps': 10000}),
    'simclr_combo_geom_rot_2000': ('simclr', {**GEOM_ROT, 'train.num_steps': 2000}),
    'simclr_combo_geom_rot_3000': ('simclr', {**GEOM_ROT, 'train.num_steps': 3000}),
    'simclr_combo_geom_rot_5000': ('simclr', {**GEOM_ROT, 'train.num_steps': 5000}),
    # Variations of the SimCLR :demo recipe aimed at the virus task (shape at random
    # magnification): zoomed-in crops down to 8 % of the area, a softer temperature.
    'simclr_rot_area008_2000': ('simclr', {**GEOM_ROT, **AREA008, 'train.num_steps': 2000}),
    'simclr_rot_tau02_2000': ('simclr', {**GEOM_ROT, 'loss.temperature': 0.2, 'train.num_steps': 2000}),
    # Twice the negatives per step, half the steps (the same images seen).
    'simclr_rot_b64_1000': ('simclr', {**GEOM_ROT, 'data.batch_size': 64, 'train.num_steps': 1000}),
    'combo_indomain_geom_mnorm_1000': (
        'barlow_twins',
        {**BEST_GUESS, **NO_PHOTOMETRIC, **MNORM, 'data.source': 'indomain_images', 'train.num_steps': 1000},
    ),
    'combo_indomain_1000': (
        'barlow_twins',
        {**BEST_GUESS, 'data.source': 'indomain', 'train.num_steps': 1000},
    ),
    'combo_indomain_3000': (
        'barlow_twins',
        {**BEST_GUESS, 'data.source': 'indomain', 'train.num_steps': 3000},
    ),
    'simclr_combo': ('simclr', BEST_GUESS),
    'simclr_combo_t0.5': ('simclr', {**BEST_GUESS, 'loss.temperature': 0.5}),
    # Second screen (one seed each), all on top of `combo`:
    'simclr_combo_t0.2': ('simclr', {**BEST_GUESS, 'loss.temperature': 0.2}),
    'combo_lambd0.02': ('barlow_twins', {**BEST_GUESS, 'loss.lambd': 0.02}),
    'combo_lambd0.001': ('barlow_twins', {**BEST_GUESS, 'loss.lambd': 0.001}),
    'combo_strong': ('barlow_twins', {**BEST_GUESS, **STRONG}),
    'combo_invert': ('barlow_twins', {**BEST_GUESS, 'augment.invert_prob': 0.5}),
    'combo_b64': ('barlow_twins', {**BEST_GUESS, 'data.batch_size': 64}),
    'combo_lr0.1': ('barlow_twins', {**BEST_GUESS, 'optim.lr': 0.1}),
    # Adam: its step size does not scale with the gradient (SGD at lr 0.3 takes a ~300-1000
    # norm gradient in the first steps of Barlow Twins; SimCLR collapsed to z_std ~0.006).
    'combo_adam': ('barlow_twins', {**BEST_GUESS, **ADAM}),
    'simclr_combo_adam': ('simclr', {**BEST_GUESS, **ADAM}),
    'combo_indomain_adam': ('barlow_twins', {**BEST_GUESS, **ADAM, 'data.source': 'indomain'}),
    'combo_indomain_adam_1000': (
        'barlow_twins',
        {**BEST_GUESS, **ADAM, 'data.source': 'indomain', 'train.num_steps': 1000},
    ),
    'simclr_combo_lr0.03': ('simclr', {**BEST_GUESS, 'optim.lr': 0.03}),
    # In-domain images generated at the encoder's input size (as the probe pools are).
    'combo_indomain64': (
        'barlow_twins',
        {**BEST_GUESS, 'data.source': 'indomain', 'data.synthetic_size': 64},
    ),
    'combo_indomain_strong': ('barlow_twins', {**BEST_GUESS, **STRONG, 'data.source': 'indomain'}),
}

# --tiny: a whole pass in seconds (compiles, trains, encodes, probes, reports).
TINY = {
    'model.width': 4,
    'model.projector': (16, 16, 32),
    'data.num_images': 32,
    'data.synthetic_size': 48,
    'data.image_size': 32,
    'data.batch_size': 8,
    'train.num_steps': 4,
}
