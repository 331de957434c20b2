"""Few-shot probe on the TEM virus set — paper Fig. 6J.

The virus set ships its own train/validation/test split, used as shipped: k-shot
sets of 10, 20, 40, 80, 120, 200 and 600 images per class are drawn from the
training split (20 draws per encoder), tested on the test split; the Adam head's
early stopping, if chosen, validates on the validation split. The paper used 9 of the 14
viruses (``PAPER_VIRUSES``, spelled as the dataset's class folders: the paper's "Nairovirus"
is the CCHF folder, its "Coxpox" Cowpox); ``--config.data.classes=None`` takes all 14. The
encoders are the paper's five (placeholders under ``probe.models_dir``, see
``probe_nanowire.py``).

Launch::

    python launch.py --config=configs/probe_virus.py --workdir=runs/probe_virus \
        --config.data.root=/data/tem_virus --config.probe.models_dir=/data/paper_encoders

CPU demo on the synthetic viruses (after ``make demo``; stratified splits, k up to 32)::

    python launch.py --config=configs/probe_virus.py:demo --workdir=runs/probe_virus_demo
"""

from configs.probe_base import PAPER_ENCODERS, probe_config

# The paper's nine viruses (Methods: Astrovirus, Nairovirus, Coxpox, Influenza, Nipah,
# Norovirus, Orf, Papilloma, Rift Valley) under the dataset's folder names.
PAPER_VIRUSES = (
    'Astrovirus',
    'CCHF',
    'Cowpox',
    'Influenza',
    'Nipah virus',
    'Norovirus',
    'Orf',
    'Papilloma',
    'Rift Valley',
)
VIRUS_SHOTS = (10, 20, 40, 80, 120, 200, 600)


def get_config(arg: str = ''):
    c = probe_config('virus', 'viruses', arg, PAPER_ENCODERS)
    if not arg:
        c.data.classes = PAPER_VIRUSES
        c.probe.shots = VIRUS_SHOTS
        c.probe.split_seeds = 1  # the shipped split
        c.probe.draws = 20
        c.probe.figure_k = 80
    return c
