"""Few-shot probe on AutoDetect-mNP assembly morphologies (3 classes) — paper Fig. 5D.

Same protocol as ``probe_nanowire.py`` (20 stratified 80/20 splits, 1 … 80
labeled images per class, a linear classifier per run) and the same encoders (the paper's
five, placeholders under ``probe.models_dir``, see ``probe_nanowire.py``) on the metal
nanoparticle images sorted into dispersed, separate clusters and percolating cluster.

Launch::

    python launch.py --config=configs/probe_mnp.py --workdir=runs/probe_mnp \
        --config.data.root=/data/autodetect_mnp --config.probe.models_dir=/data/paper_encoders

CPU demo on the synthetic nanoparticles (after ``make demo``)::

    python launch.py --config=configs/probe_mnp.py:demo --workdir=runs/probe_mnp_demo
"""

from configs.probe_base import PAPER_ENCODERS, probe_config


def get_config(arg: str = ''):
    return probe_config('mnp', 'nanoparticles', arg, PAPER_ENCODERS)
