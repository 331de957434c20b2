"""The whole study in one command: pretrain → probe → segment → report.

Each stage is a registered task with its own sub-config and sub-workdir
(``WORKDIR/pretrain/<name>``, ``WORKDIR/probe/<task>``, ``WORKDIR/segment/<task>``,
``WORKDIR/grid/...``); later stages name the encoders of earlier ones by weight spec
(``checkpoint:WORKDIR/pretrain/bt_tem``). Rerunning skips finished stages;
``--config.force=probe`` (comma-separated) redoes stages. The report
(``WORKDIR/report.html`` and ``report.md``) is rebuilt at the end of every run, and
by the report module (``analysis/report.py``, run with ``python -m`` and the workdir).

The paper's study on the real data sets (see docs/datasets.md for the layouts)::

    python launch.py --config=configs/workflow.py --workdir=runs/study \
        --config.roots.generic_tem=/data/cem500k_subset --config.roots.everyday=/data/imagenet832 \
        --config.roots.nanowires=/data/nanowires --config.roots.nanoparticles=/data/mnp \
        --config.roots.viruses=/data/tem_virus \
        --config.init=keras:/path/resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5

``init`` is the ImageNet weights every pretraining unit starts from, as in the paper
(``random`` to start without; docs/paper.md). Missing folders are listed, with where each
data set is published, before any stage starts. Two presets run the whole study on the
built-in synthetic data on 2 CPU cores:

``:demo`` (``make demo``) is the 10-minute first contact: SimCLR's ``:demo`` pretraining
(2000 steps), the probes of the stages' ``:demo`` presets with every control (random init,
BatchNorm statistics only, raw pixels, texture, intensity statistics) and the gap table, and
the U-Net's ``:demo`` preset at k = 8 (128 px, beside random init, the no-encoder decoder
and Otsu). It passes the probe bar (the pretrained encoder's 8-shot nanowire accuracy ≥ 0.10
above its random init) but not the Dice bar (median Dice 0.74 at k = 8)::

    python launch.py --config=configs/workflow.py:demo --workdir=runs/demo

``:demo-full`` (``make demo-full``) is the smallest run that reaches both bars, the Dice one
being median U-Net Dice ≥ 0.80 at 8 masks per class (benchmarks/RESULTS.md, "make demo"):
SimCLR's ``:cpu`` pretraining (5000 steps, 11-12 min), the same probes, and the ``:cpu``
U-Net (256 px, k = 8 only, ~5 min per encoder) — about 20 min::

    python launch.py --config=configs/workflow.py:demo-full --workdir=runs/demo-full

``:tiny`` runs every stage in seconds (tests). Hyperparameter sweeps (paper Fig. 8, 9):
``--config.grid.sweep="('data.batch_size=16,32,64', 'augment.crop=random,none')"``
pretrains one encoder per listed value (one setting varied at a time, the others as in
``grid.base``) for each of ``grid.seeds`` and compares them with the probe's tuning
protocol (4-fold cross-validation inside the training part), each run beside its own ``@0``
init: the report gives every setting's gap over its inits with a t-interval over the seeds.
"""

import ml_collections

from configs import probe_base, ssl_base, unet_nanowire

PRESETS = ('', 'demo', 'demo-full', 'tiny')
# The preset of each stage's own config that a workflow preset uses (the same name otherwise):
# the 10-minute demo runs the stages' demo-sized presets; the full demo, their CPU-sized ones.
STAGE_PRESETS = {'demo': 'demo', 'demo-full': 'cpu'}

# name → (method, dataset, display name). The paper's four encoders; the demo pretrains
# the first two on synthetic generic micrographs.
PAPER_ENCODERS = {
    'bt_tem': ('barlow_twins', 'tem', 'Barlow Twins TEM'),
    'simclr_tem': ('simclr', 'tem', 'SimCLR TEM'),
    'bt_everyday': ('barlow_twins', 'imagenet', 'Barlow Twins everyday'),
    'simclr_everyday': ('simclr', 'imagenet', 'SimCLR everyday'),
}
PROBE_TASKS = {'nanowires': 'nanowire', 'nanoparticles': 'mnp', 'viruses': 'virus'}


def get_config(arg: str = ''):
    if arg not in PRESETS:
        raise ValueError(
            f'unknown preset {arg!r}: expected one of {PRESETS} '
            '(--config=configs/workflow.py, :demo, :demo-full or :tiny)'
        )
    c = ml_collections.ConfigDict()
    c.task = 'workflow'
    c.stages = ('pretrain', 'probe', 'segment', 'grid', 'report')  # grid: only if grid.sweep
    c.force = ''  # stages to redo, comma-separated (e.g. 'probe,segment')

    # Real data folders of the paper preset (unused by the synthetic presets).
    c.roots = ml_collections.ConfigDict()
    c.roots.generic_tem = ''
    c.roots.everyday = ''
    c.roots.nanowires = ''
    c.roots.nanoparticles = ''
    c.roots.viruses = ''

    # The demos pretrain one encoder, SimCLR: its :demo and :cpu presets are the ones whose
    # nanowire gap over random init is >= 0.10 on pretraining seeds 0 and 1 (benchmarks/RESULTS.md,
    # "Pretraining recipes: does pretraining beat random init?"); a second would double the budget.
    one_simclr = ('simclr_tem',)
    names = {
        '': tuple(PAPER_ENCODERS),
        'demo': one_simclr,
        'demo-full': one_simclr,
        'tiny': ('bt_tem', 'simclr_tem'),
    }[arg]
    c.display_names = ml_collections.ConfigDict({n: PAPER_ENCODERS[n][2] for n in names})
    stage_preset = STAGE_PRESETS.get(arg, arg)
    c.pretrain = ml_collections.ConfigDict()
    for name in names:
        method, dataset, _ = PAPER_ENCODERS[name]
        c.pretrain[name] = ssl_base.ssl_config(method, dataset, stage_preset)

    probe_tasks = ('nanowires',) if arg == 'tiny' else tuple(PROBE_TASKS)
    c.probe = ml_collections.ConfigDict()
    for task in probe_tasks:
        # Encoders are filled in by the workflow: every pretrained encoder, then the
        # baselines already listed by the probe config (random init, raw pixels, texture, intensity).
        # The probe has no :cpu preset: the demo's is already the benchmark's protocol size.
        probe_preset = 'demo' if arg in STAGE_PRESETS else arg
        p = probe_base.probe_config(PROBE_TASKS[task], task, probe_preset, ())
        p.probe.encoders = probe_base.BASELINE_ENCODERS
        if probe_preset == 'demo':
            p.probe.shots = (1, 2, 4, 8, 16)
            p.probe.split_seeds = 20
            # Which images to label: typicality (the strategy made for tiny budgets) beside
            # random draws; the report says what it buys (benchmarks/RESULTS.md, label selection).
            p.probe.draw = 'random,typical'
        c.probe[task] = p

    c.segment = ml_collections.ConfigDict()
    s = unet_nanowire.get_config(stage_preset)
    # Plus every pretrained encoder, by the workflow; the no-encoder control where the decoder
    # has the image skip it learns from (the classic decoder of the CPU-sized presets).
    s.segment.encoders = ('random=random',) + (('none=none',) if s.segment.decoder == 'unet' else ())
    if arg == 'demo':  # the 10-minute first contact
        # k = 8 only, so the no-encoder control fits the 10 minutes (benchmarks/RESULTS.md,
        # "make demo"); k = 1 does not train a U-Net in 30 steps.
        s.segment.shots = (8,)
    if arg == 'demo-full':
        s.segment.shots = (8,)  # the Dice bar's k; each k costs its own U-Net per encoder
    c.segment.nanowires = s

    c.grid = ml_collections.ConfigDict()
    c.grid.base = names[0]
    c.grid.sweep = ()  # e.g. ('data.batch_size=16,32,64', 'model.projector=(64,64,64)')
    c.grid.seeds = (0, 1, 2)
    c.grid.probe_task = 'nanowires'

    if arg == 'tiny':
        c.grid.sweep = ('data.batch_size=8',)
        c.grid.seeds = (0,)
    if not arg:
        # The paper's pretraining units all start from the ImageNet weights the user gives.
        c.init = 'required'
        for name in names:
            c.pretrain[name].model.init = c.get_ref('init')
        c.pretrain.bt_tem.data.root = c.roots.get_ref('generic_tem')
        c.pretrain.simclr_tem.data.root = c.roots.get_ref('generic_tem')
        c.pretrain.bt_everyday.data.root = c.roots.get_ref('everyday')
        c.pretrain.simclr_everyday.data.root = c.roots.get_ref('everyday')
        for task in probe_tasks:
            c.probe[task].data.root = c.roots.get_ref(task)
        c.segment.nanowires.data.root = c.roots.get_ref('nanowires')
    return c
