"""Few-shot probe on the nanowire morphology set (4 classes) — paper Fig. 2C and Fig. 3.

The paper's protocol: features of each encoder (ResNet50, 224 px, global average
pool), 20 stratified 80/20 splits, 1, 2, 4, 8, 16, 32 and 80 labeled images per
class drawn from the training part, a linear classifier per run, accuracy on the
test part; plus the one-shot anchor analysis (dispersed vs network pixel
density, from the masks beside the images). Every result stands beside a
random-init ResNet50 and the raw-pixel, texture and intensity-statistics baselines.

The encoders are the paper's five (``configs/probe_base.py``): Barlow-Twins and SimCLR
pretrained on TEM or ImageNet images, five replicas each (pretraining seeds 42-46, the
notebooks' file names), SimCLR_SotA_ImageNet (SimCLRv2, converted to a torchvision file),
and the supervised ImageNet ResNet50 (Keras applications file) beside random init, raw
pixels and texture. Their paths are placeholders under ``probe.models_dir``: point it at
the folder holding your copies (the paper's encoders are available from its authors); a
missing file stops the probe before any work with every missing path named. Your own
pretraining workdirs go in as ``--config.probe.encoders`` entries ``name=checkpoint:runs/...``.
``docs/paper.md`` compares this protocol with the paper's notebook setting by setting.

Launch (the Zenodo release, 10.5281/zenodo.6377140)::

    python launch.py --config=configs/probe_nanowire.py --workdir=runs/probe_nw \
        --config.data.root=/data/nanowires --config.probe.models_dir=/data/paper_encoders

CPU demo on the synthetic nanowires (run ``make demo`` first: it pretrains the
encoder in ``runs/demo/pretrain/simclr_tem``; a few minutes on 2 cores)::

    python launch.py --config=configs/probe_nanowire.py:demo --workdir=runs/probe_nw_demo

Outputs: ``probe/results.csv`` (one row per run), ``probe/summary.json`` (median
accuracy and its 95 % CI per encoder and k; the paired gap of each encoder over its own
``@0`` init in the list, with its 95 % interval), ``figures/*.png``. The ``:tiny``
preset (baselines only, 32 px, seconds) is what the tests run.
"""

from configs.probe_base import PAPER_ENCODERS, probe_config


def get_config(arg: str = ''):
    return probe_config('nanowire', 'nanowires', arg, PAPER_ENCODERS)
