"""Does an encoder's input normalisation change what ``segment.fit``'s defaults give on
objects larger than its background blur? The check behind "The background normalisation and
segmentation" in RESULTS.md.

A nuclei-like fluorescence field (not a micrograph from the project's generators; written
here): bright nuclei of 10-28 px radius in a 512 px field, chromatin texture, uneven
illumination, optical blur, shot and read noise, with the exact mask. It is cut into 16
tiles of 128 px; ``segment.fit(encoder, 4 tiles, 4 masks)`` with every default, then the
median Dice on 8 held-out tiles, for each encoder given, beside a global Otsu threshold of the
held-out tiles (one threshold for all, as one would threshold the whole image)::

    python benchmarks/segment_input_norm.py --encoders=runs/a,runs/b --fields=3
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

TILE = 128
FIELD = 512


def nuclei_field(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """One (512, 512) float image in [0, 1] and its {0, 1} mask."""
    from scipy import ndimage

    yy, xx = np.mgrid[0:FIELD, 0:FIELD].astype(np.float64)
    signal = np.zeros((FIELD, FIELD))
    mask = np.zeros((FIELD, FIELD), bool)
    for _ in range(int(rng.integers(35, 55))):
        cy, cx = rng.uniform(0, FIELD, 2)
        a, b = rng.uniform(10, 28), rng.uniform(10, 28)
        angle = rng.uniform(0, np.pi)
        u = (xx - cx) * np.cos(angle) + (yy - cy) * np.sin(angle)
        v = -(xx - cx) * np.sin(angle) + (yy - cy) * np.cos(angle)
        r = np.sqrt((u / a) ** 2 + (v / b) ** 2)
        inside = r <= 1
        mask |= inside
        # Brighter towards the centre (a thicker nucleus), its DNA content drawn per nucleus.
        signal = np.maximum(signal, rng.uniform(0.25, 1.0) * np.clip(1.2 - 0.4 * r, 0, None) * inside)
    chromatin = ndimage.gaussian_filter(rng.standard_normal((FIELD, FIELD)), 2.0)
    signal *= 1 + 0.8 * chromatin / chromatin.std() * 0.25
    illumination = (
        1 - 0.35 * ((xx - rng.uniform(0, FIELD)) ** 2 + (yy - rng.uniform(0, FIELD)) ** 2) / FIELD**2
    )
    image = ndimage.gaussian_filter(signal * illumination, 1.5) + 0.05 + 0.03 * illumination
    photons = rng.poisson(np.clip(image, 0, None) * 200) / 200
    image = photons + rng.normal(0, 0.01, image.shape)
    low, high = np.percentile(image, [0.5, 99.5])
    return np.clip((image - low) / (high - low), 0, 1).astype(np.float32), mask.astype(np.uint8)


def tiles(array: np.ndarray) -> np.ndarray:
    n = FIELD // TILE
    return array.reshape(n, TILE, n, TILE).swapaxes(1, 2).reshape(n * n, TILE, TILE)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--encoders', required=True, help='comma-separated encoder specs (workdirs, ...)')
    parser.add_argument('--fields', type=int, default=3, help='independent fields (seeds 0..n-1)')
    args = parser.parse_args()
    from skimage.filters import threshold_otsu

    from fewshot_jax import load_encoder
    from fewshot_jax.segment import fit
    from fewshot_jax.segment.metrics import dice

    specs = args.encoders.split(',')
    encoders = {spec: load_encoder(spec) for spec in specs}
    rows = {name: [] for name in ['otsu', *specs]}
    for field in range(args.fields):
        rng = np.random.default_rng(field)
        image, mask = nuclei_field(rng)
        images, masks = tiles(image), tiles(mask)
        order = rng.permutation(len(images))
        train, held = order[:4], order[4:12]
        threshold = threshold_otsu(images[held])
        rows['otsu'].append(np.median(dice(images[held] > threshold, masks[held])))
        for spec, encoder in encoders.items():
            segmenter = fit(encoder, images[train], masks[train], progress=False)
            prob = segmenter.predict(images[held])
            rows[spec].append(np.median(dice(prob, masks[held])))
        print(f'field {field}: ' + ', '.join(f'{Path(k).name} {v[-1]:.3f}' for k, v in rows.items()))
    for name, values in rows.items():
        per_field = ', '.join(f'{v:.3f}' for v in values)
        print(f'{Path(name).name:<40} median Dice per field {per_field}; mean {np.mean(values):.3f}')


if __name__ == '__main__':
    main()
