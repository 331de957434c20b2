"""Does test-time flipping help? Re-scores a segmentation stage's trained runs with and without it.

Rebuilds the stage's held-out test images exactly as the stage does (the config preset and
overrides given here must be the ones the stage ran with), loads every finished run's model
from ``STAGE/runs/*/model`` and prints median Dice / IoU on the test images for a plain
prediction and for ``Segmenter.predict(flips=True)`` (the mean over the 8 flips and quarter
turns). No training: a few seconds per run on a CPU.

    python benchmarks/segment_flips.py --stage=runs/seg_cpu/segment --preset=cpu

``--modes=tiled,whole`` scores each run both ways: in tiles of its training window (the
stage's way; the same as the whole image when the run trained on whole images) and in one
pass over the whole image — the question for runs trained on crops (``segment.crop``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def test_set(preset: str, resolution: int):
    """The stage's test images and masks at ``resolution`` (its split, its resizing)."""
    from configs.unet_nanowire import get_config
    from fewshot_jax.data.splits import stratified_split
    from fewshot_jax.segment.data import load_mask_set, resize_set

    config = get_config(preset)
    data = load_mask_set(config.data)
    _, test_idx = stratified_split(
        data.labels, config.data.test_fraction, config.data.split_seed, class_names=data.class_names
    )
    channels = 3 if np.ndim(data.images[0]) == 3 else 1
    return resize_set(
        [data.images[i] for i in test_idx], [data.masks[i] for i in test_idx], resolution, channels
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--stage', required=True, help='a segmentation stage folder (WORKDIR/segment)')
    parser.add_argument('--preset', default='cpu', help='the configs/unet_nanowire.py preset it ran')
    parser.add_argument('--modes', default='tiled', help="comma-separated: 'tiled', 'whole'")
    args = parser.parse_args()
    modes = args.modes.split(',')

    from fewshot_jax.segment.report import score_rows
    from fewshot_jax.segment.segmenter import load_segmenter

    runs = sorted(p.parent.parent for p in Path(args.stage).glob('runs/*/model/segmenter.json'))
    if not runs:
        raise SystemExit(f'{args.stage}: no finished runs (runs/*/model/segmenter.json)')
    cases = [(mode, flips) for mode in modes for flips in (False, True)]
    names = [f'{mode}{", flips" if flips else ""}' for mode, flips in cases]
    print('| run | ' + ' | '.join(f'median Dice, {n}' for n in names) + ' | median IoU, ' + names[-1] + ' |')
    print('|---' * (len(cases) + 2) + '|')
    cached = {}
    for run in runs:
        seg = load_segmenter(run / 'model')
        resolution = seg.info.get('resolution', seg.resolution)  # the stage's, not the crop's
        if resolution not in cached:
            cached[resolution] = test_set(args.preset, resolution)
        pixels, masks = cached[resolution]
        cells = []
        for mode, flips in cases:
            prob = seg.predict(pixels, scale=1.0, progress=False, flips=flips, mode=mode)
            rows = score_rows(
                prob,
                masks,
                encoder='',
                resolution=resolution,
                k=0,
                names=[''] * len(masks),
                classes=[''] * len(masks),
                threshold=seg.threshold,
            )  # the stage's scoring
            cells.append(np.median([[r['dice'], r['iou']] for r in rows], axis=0))
        dice = ' | '.join(f'{c[0]:.3f}' for c in cells)
        print(f'| {run.name} | {dice} | {cells[-1][1]:.3f} |', flush=True)


if __name__ == '__main__':
    main()
