"""What the micrograph input normalisation does to a held-out family's class information,
without any encoder: the diagnostic behind "A background scale larger than the objects" in
RESULTS.md.

Each labeled image of the family (read as the probe reads a folder, at ``--size``) is taken
as the encoder would see it — plain, or through ``flatten_micrograph`` at each background
sigma — and scored by a 5-fold logistic regression on all labels, on raw pixels (32 x 32
block means) and on the 32 texture features. Per view it also prints how often the polarity
step turned an image over (per class: a polarity that differs between classes would be a cue,
one that differs within a class noise) and the share of pixels clipped::

    python benchmarks/heldout_normalisation.py --family=/work/bench/crystals --sigmas=0.0625,0.25
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent
sys.path.insert(0, str(REPO))

from heldout_features import describe, labeled_images  # noqa: E402


def flattened(plain: np.ndarray, sigma: float) -> tuple[np.ndarray, np.ndarray]:
    """``flatten_micrograph`` of (n, H, W) images in [0, 1] at ``sigma``, and for each image
    whether its polarity step turned it over (its background-subtracted image has negative
    skewness)."""
    import jax.numpy as jnp

    from fewshot_jax.models.input_norm import _high_pass, flatten_micrograph

    images = jnp.asarray(plain)[..., None]
    out = np.asarray(flatten_micrograph(images, sigma))[..., 0]
    high_pass = _high_pass(images, sigma)
    turned = np.asarray(jnp.mean(high_pass**3, axis=(1, 2)) < 0)
    return out, turned


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--family', type=Path, required=True, help='a family folder with labeled/')
    parser.add_argument('--size', type=int, default=64, help='encoder input side in px')
    parser.add_argument('--sigmas', default='0.0625,0.25', help='background sigmas, fractions of the side')
    parser.add_argument('--folds', type=int, default=5)
    args = parser.parse_args()
    from fewshot_jax.models.input_norm import CLIP_SD
    from fewshot_jax.probe.baselines import raw_pixels, texture_features

    images, labels, classes = labeled_images(args.family, args.size)
    print(f'# {args.family.name}: {len(labels)} images of {len(classes)} classes at {args.size} px')
    print(f'{"view":<28} {"pixels":>7} {"texture":>7} {"clipped":>8}  turned over, per class')
    plain = images[..., 0].astype(np.float32) / 255.0
    views = [('plain', plain, None)]
    for sigma in (float(s) for s in args.sigmas.split(',')):
        out, turned = flattened(plain, sigma)
        views.append((f'flattened, sigma {sigma:g}', out, turned))
    for name, view, turned in views:
        pixels = describe(raw_pixels(view), labels, args.folds)['accuracy']
        texture = describe(texture_features(view), labels, args.folds)['accuracy']
        clipped = np.mean(np.abs(view) >= CLIP_SD) if turned is not None else 0.0
        per_class = (
            ', '.join(f'{c} {np.mean(turned[labels == i]):.2f}' for i, c in enumerate(classes))
            if turned is not None
            else ''
        )
        print(f'{name:<28} {pixels:>7.3f} {texture:>7.3f} {clipped:>8.4f}  {per_class}', flush=True)


if __name__ == '__main__':
    main()
