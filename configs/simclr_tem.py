"""SimCLR pretraining of ResNet50 on 832 generic TEM images (a CEM500K subset) — the paper's setting.

NT-Xent (tau 0.1), no crop, flips and colour jitter, 224 px, batch 64,
200 epochs (2600 steps for 832 images). The paper's run as its notebook ran it
(configs/ssl_base.py; every setting in ``docs/paper.md``).

Launch (a folder of images, the paper drew `data.subset=832` of them by seed; and Keras'
ImageNet weights, or ``--config.model.init=random`` to start without)::

    python launch.py --config=configs/simclr_tem.py --workdir=runs/simclr_tem \
        --config.data.root=/path/to/images \
        --config.model.init=keras:/path/resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5

CPU demo on the built-in synthetic data (what ``make demo`` pretrains): ResNet18 at width 16,
64 px, 2048 generic images, area crops, flips and 90-degree turns without photometric jitter,
projector 512-512-512, SGD lr 0.3, 2000 steps: about 4.5 minutes on 2 cores. Expected: about
+0.12 over random init on synthetic nanowires (8-shot probe; benchmarks/RESULTS.md, "Crops,
flips and quarter turns"). ``:cpu`` runs it for 5000 steps (11-12 minutes; what ``make
demo-full`` pretrains; on the two held-out tuning families it does not beat 2000 steps over
three seeds, so ``:demo`` stays at 2000). Pretrained on the unlabeled folder of a held-out physical family, at
8 labels per class over five seeds, ``:cpu`` beats its own init and texture features on both
reporting families and ``:demo`` on one of two (RESULTS.md, "Transfer to held-out physical
families")::

    python launch.py --config=configs/simclr_tem.py:demo --workdir=runs/simclr_tem_demo
    python launch.py --config=configs/simclr_tem.py:cpu --workdir=runs/simclr_tem_cpu

Outputs and resuming: configs/ssl_base.py.
"""

from configs.ssl_base import ssl_config


def get_config(arg: str = ''):
    return ssl_config('simclr', 'tem', arg)
