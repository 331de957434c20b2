"""Barlow Twins pretraining of ResNet50 on 832 generic TEM images (a CEM500K subset) — the paper's setting.

Barlow Twins (lambda 0.005), projector 128-64-1024, random crop (side 25-50%), flips
and colour jitter, 224 px,
batch 64, SGD (momentum 0.9) lr 0.2 with warm-up and a cosine over the whole run,
200 epochs (2600 steps for 832 images).

Launch (a folder of images; the paper drew `data.subset=832` of them by seed)::

    python launch.py --config=configs/barlow_tem.py --workdir=runs/barlow_tem \
        --config.data.root=/path/to/images

CPU demo on the built-in synthetic data (ResNet18 at width 16, 64 px, 200 steps, 2048
generic images, area crops and grayscale augmentations, projector 512-512-512; a few
minutes on 2 cores). Measured (benchmarks/RESULTS.md, 3 pretraining seeds against
random init of the same seeds): 8-shot accuracy gap -0.02 +- 0.05 on synthetic nanowires,
+0.04 +- 0.04 nanoparticles, +0.02 +- 0.01 viruses — no better than random init within
the seed spread, short of the +0.10 the project aims for::

    python launch.py --config=configs/barlow_tem.py:demo --workdir=runs/barlow_tem_demo

The finished run leaves `workdir/encoder` (the frozen encoder that the probe and
U-Net stages load), `metrics.jsonl`, TensorBoard events in `tb/` and the last
checkpoints in `checkpoints/`; rerunning the command resumes from them.
"""

from configs.ssl_base import ssl_config


def get_config(arg: str = ''):
    return ssl_config('barlow_twins', 'tem', arg)
