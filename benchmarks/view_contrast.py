"""How much the encoder's input normalisation differs between two pretraining views of one
micrograph: the diagnostic behind "Contrast per view or per micrograph" in RESULTS.md.

Each labeled image of a family (read as the probe reads a folder, at ``--size``) is cut into
two views by the ``:demo`` preset's augmentations (area crops, flips, quarter turns). Per view,
the background-subtracted image (sigma 1/16 of the side) gives the two per-view quantities
``input_norm='micrograph'`` decides on its own: the contrast scale (the standard deviation it
divides by) and the polarity (the sign of the skewness). Printed per family: the median
absolute log ratio of the two views' scales, the share of pairs whose polarities differ, and
the share of views whose polarity differs from the whole image's::

    python benchmarks/view_contrast.py --root=/work/bench --families=crystals,composites
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / 'benchmarks')]

from heldout_features import labeled_images  # noqa: E402


def _demo_augment(method: str, size: int):
    """The ``:demo`` preset's augmentation settings of the method's micrograph config."""
    from configs.ssl_base import ssl_config
    from fewshot_jax.pretrain.augment.config import augment_config_from

    return augment_config_from(ssl_config(method, 'tem', 'demo').augment, size)


def scale_and_skew(images, sigma: float) -> tuple[np.ndarray, np.ndarray]:
    """Per image of (N, H, W, C) in [0, 1]: the background-subtracted spread and skewness."""
    import jax.numpy as jnp

    from fewshot_jax.models.input_norm import _high_pass

    x = _high_pass(jnp.asarray(images), sigma)
    scale = jnp.std(x, axis=(1, 2))
    skew = jnp.mean((x / (scale[:, None, None] + 1e-6)) ** 3, axis=(1, 2))
    return np.asarray(scale), np.asarray(skew)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--root', type=Path, required=True, help='folder holding one folder per family')
    parser.add_argument('--families', default='crystals,composites,nanoparticles,assemblies')
    parser.add_argument('--method', default='simclr', choices=('simclr', 'barlow_twins'))
    parser.add_argument('--size', type=int, default=64, help='encoder input side in px')
    parser.add_argument('--sigma', type=float, default=1 / 16, help='background sigma, fraction of the side')
    parser.add_argument('--repeats', type=int, default=4, help='view pairs drawn per image')
    args = parser.parse_args()
    import jax
    import jax.numpy as jnp

    from fewshot_jax.pretrain.augment.views import two_views

    augment = _demo_augment(args.method, args.size)
    print(f'{"family":<15} {"|log scale ratio|":>17} {"polarity differs":>16} {"view vs image":>13}')
    for family in args.families.split(','):
        images, _, _ = labeled_images(args.root / family, args.size)
        _, whole_skew = scale_and_skew(jnp.asarray(images, jnp.float32) / 255.0, args.sigma)
        ratios, differ, from_image = [], [], []
        for repeat in range(args.repeats):
            view_a, view_b = two_views(jax.random.PRNGKey(repeat), jnp.asarray(images), augment)
            scale_a, skew_a = scale_and_skew(view_a, args.sigma)
            scale_b, skew_b = scale_and_skew(view_b, args.sigma)
            ratios.append(np.median(np.abs(np.log(scale_a / scale_b))))
            differ.append(np.mean(np.sign(skew_a) != np.sign(skew_b)))
            views_skew = np.concatenate([skew_a, skew_b])
            from_image.append(np.mean(np.sign(views_skew) != np.sign(np.tile(whole_skew, 2))))
        figures = f'{np.mean(ratios):>17.3f} {np.mean(differ):>16.3f} {np.mean(from_image):>13.3f}'
        print(f'{family:<15} {figures}', flush=True)


if __name__ == '__main__':
    main()
