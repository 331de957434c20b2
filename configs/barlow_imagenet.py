"""Barlow Twins pretraining of ResNet50 on 832 ImageNet photographs — the paper's setting.

Barlow Twins (lambda 0.005), random crop (side 25-50%), flips and colour jitter, 224 px, batch 64,
200 epochs (2600 steps for 832 images). The paper's run as its notebook ran it
(configs/ssl_base.py; every setting in ``docs/paper.md``).

Launch (a folder of images, the paper drew `data.subset=832` of them by seed; and Keras'
ImageNet weights, or ``--config.model.init=random`` to start without)::

    python launch.py --config=configs/barlow_imagenet.py --workdir=runs/barlow_imagenet \
        --config.data.root=/path/to/images \
        --config.model.init=keras:/path/resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5

CPU demo on the built-in synthetic everyday images: the TEM demo's recipe (ResNet18 at
width 16, 64 px, area crops, flips and quarter turns without photometric jitter, Adam, 10 000
steps: about 19 minutes on 2 cores). Its effect on the probe was measured on TEM images only::

    python launch.py --config=configs/barlow_imagenet.py:demo --workdir=runs/barlow_imagenet_demo

Outputs and resuming: configs/ssl_base.py.
"""

from configs.ssl_base import ssl_config


def get_config(arg: str = ''):
    return ssl_config('barlow_twins', 'imagenet', arg)
