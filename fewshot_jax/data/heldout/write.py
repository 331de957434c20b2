"""Writes a held-out family to disk as 16-bit TIFF folders the project's readers load.

    python -m fewshot_jax.data.heldout.write --family=nanoparticles --out=DIR \\
        --unlabeled=600 --per_class=100 --size=128 --seed=0

Layout (`sources.UnlabeledFolderSource(DIR/unlabeled)`,
`sources.ClassFolderSource(DIR/labeled)`):

    DIR/unlabeled/u00000.tif ...            flat folder, no labels
    DIR/labeled/<class>/<class>_00000.tif   one folder per class
    DIR/manifest.json                       arguments and per-image parameters

Each image is a function of (family, seed, split, class, index) only, so
smaller runs write the first images of larger ones.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import pathlib
import sys
import time
from collections.abc import Sequence

import tifffile

from fewshot_jax.data.heldout.families import FAMILIES, labeled_image, unlabeled_image


def _one(job: tuple) -> tuple[str, dict]:
    family_name, split, label, index, size, seed, path = job
    family = FAMILIES[family_name]
    if split == 'unlabeled':
        image, info = unlabeled_image(family, index, size, seed)
    else:
        image, info = labeled_image(family, label, index, size, seed)
    tifffile.imwrite(path, image, photometric='minisblack')
    return path, info


def write(
    family_name: str,
    out: str | pathlib.Path,
    *,
    unlabeled: int = 600,
    per_class: int = 100,
    size: int = 128,
    seed: int = 0,
    workers: int = 1,
) -> dict:
    """Writes the unlabeled pool and the labeled set of one family.

    Args:
      family_name: A key of `FAMILIES`.
      out: Output folder; created if missing. Existing files of the same
        names are overwritten, others are left alone.
      unlabeled: Images in the unlabeled pool.
      per_class: Labeled images per class.
      size: Image side in pixels (the field of view stays the same).
      seed: Seed of the whole set.
      workers: Processes rendering in parallel (1 = this process).

    Returns:
      The manifest that is also written to out/manifest.json.
    """
    if family_name not in FAMILIES:
        raise ValueError(f'unknown family {family_name!r}; choose one of {sorted(FAMILIES)}')
    if size < 16 or size % 2:
        raise ValueError(f'size must be an even number >= 16, got {size}')
    family = FAMILIES[family_name]
    out = pathlib.Path(out)
    jobs = []
    if unlabeled:
        (out / 'unlabeled').mkdir(parents=True, exist_ok=True)
    for index in range(unlabeled):
        jobs.append(
            (family_name, 'unlabeled', 0, index, size, seed, str(out / 'unlabeled' / f'u{index:05d}.tif'))
        )
    for label, name in enumerate(family.classes):
        if per_class:
            (out / 'labeled' / name).mkdir(parents=True, exist_ok=True)
        for index in range(per_class):
            path = out / 'labeled' / name / f'{name}_{index:05d}.tif'
            jobs.append((family_name, 'labeled', label, index, size, seed, str(path)))
    if workers > 1:
        with multiprocessing.get_context('spawn').Pool(workers) as pool:
            done = pool.map(_one, jobs, chunksize=16)
    else:
        done = [_one(job) for job in jobs]
    manifest = {
        'family': family_name,
        'description': family.description,
        'classes': list(family.classes),
        'unlabeled': unlabeled,
        'per_class': per_class,
        'size': size,
        'seed': seed,
        'pixel_nm': family.field_nm / size,
        'dtype': 'uint16',
        'images': {str(pathlib.Path(p).relative_to(out)): info for p, info in done},
    }
    (out / 'manifest.json').write_text(json.dumps(manifest, indent=1))
    return manifest


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point; returns the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--family', required=True, choices=sorted(FAMILIES))
    parser.add_argument('--out', required=True, help='output folder')
    parser.add_argument('--unlabeled', type=int, default=600, help='images in the unlabeled pool')
    parser.add_argument('--per_class', type=int, default=100, help='labeled images per class')
    parser.add_argument('--size', type=int, default=128, help='image side in pixels')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--workers', type=int, default=1, help='rendering processes')
    args = parser.parse_args(argv)
    start = time.perf_counter()
    manifest = write(
        args.family,
        args.out,
        unlabeled=args.unlabeled,
        per_class=args.per_class,
        size=args.size,
        seed=args.seed,
        workers=args.workers,
    )
    print(
        f'{args.family}: {len(manifest["images"])} images of {args.size} px '
        f'({manifest["pixel_nm"]:.3f} nm/px) in {args.out} in {time.perf_counter() - start:.1f} s'
    )
    return 0


if __name__ == '__main__':
    sys.exit(main())
