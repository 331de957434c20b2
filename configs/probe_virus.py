"""Few-shot probe on the TEM virus set — paper Fig. 6J.

The virus set ships its own train/validation/test split, used as shipped: k-shot
sets of 10, 20, 40, 80, 120, 200 and 600 images per class are drawn from the
training split (20 draws per encoder), tested on the test split; the Adam head's
early stopping, if chosen, validates on the validation split.

Launch::

    python launch.py --config=configs/probe_virus.py --workdir=runs/probe_virus \
        --config.data.root=/data/tem_virus

CPU demo on the synthetic viruses (after ``make demo``; stratified splits, k up to 32)::

    python launch.py --config=configs/probe_virus.py:demo --workdir=runs/probe_virus_demo
"""

from configs.probe_base import probe_config

PAPER_ENCODERS = (
    'Barlow-Twins_TEM=keras:/models/Barlow-Twins_TEM.h5',
    'SimCLR_TEM=keras:/models/SimCLR_TEM.h5',
)
VIRUS_SHOTS = (10, 20, 40, 80, 120, 200, 600)


def get_config(arg: str = ''):
    c = probe_config('virus', 'viruses', arg, PAPER_ENCODERS)
    if not arg:
        c.probe.shots = VIRUS_SHOTS
        c.probe.split_seeds = 1  # the shipped split
        c.probe.draws = 20
        c.probe.figure_k = 80
    return c
