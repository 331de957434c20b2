"""``python -m fewshot_jax.segment predict``: masks for a folder of new images.

    python -m fewshot_jax.segment predict --model runs/bt_tem/segment --images DIR --out DIR

writes one mask PNG (0/255, each image's own size) per image, mirroring the
folder layout, with a progress bar. ``--model`` is a saved segmenter or a stage
folder (its default model, or ``--run NAME``).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from fewshot_jax.integrity import IntegrityError
from fewshot_jax.segment.segmenter import SegmenterError, load_segmenter

__all__ = ['load_segmenter_path', 'main', 'predict_folder']


def predict_folder(
    model: str | os.PathLike,
    images: str | os.PathLike,
    out: str | os.PathLike,
    *,
    threshold: float | None = None,
    scale: float | None = None,
    mode: str = 'tiled',
    save_probabilities: bool = False,
    progress: bool = True,
    flips: bool = False,
) -> list[Path]:
    """Writes a mask PNG (0/255, the image's own size) for every image under ``images``.

    Masks mirror the folder layout under ``out`` (``a/b.tif`` → ``out/a/b.png``); with
    ``save_probabilities`` a float32 ``.npy`` of the probabilities goes beside each mask.
    ``flips`` averages each prediction over the 8 flips and quarter turns of the image.

    Raises:
        DataError: the folder holds no images (names it and the accepted extensions).
    """
    from PIL import Image
    from tqdm import tqdm

    from fewshot_jax.data.sources import UnlabeledFolderSource

    segmenter = load_segmenter(model)
    if threshold is not None:
        segmenter.threshold = float(threshold)
    source = UnlabeledFolderSource(images, keep_color=segmenter.channels == 3)
    root, out = Path(images), Path(out)
    written = []
    for i in tqdm(range(len(source)), desc='predict', unit='img', disable=not progress):
        prob = segmenter.predict(source[i]['image'], scale=scale, mode=mode, flips=flips)
        mask = (prob >= segmenter.threshold) if prob.ndim == 2 else np.argmax(prob, -1)
        target = out / source.paths[i].relative_to(root).with_suffix('.png')
        target.parent.mkdir(parents=True, exist_ok=True)
        pixels = (mask * 255).astype(np.uint8) if prob.ndim == 2 else mask.astype(np.uint8)
        Image.fromarray(pixels).save(target)
        if save_probabilities:
            np.save(target.with_suffix('.npy'), prob.astype(np.float32))
        written.append(target)
    return written


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m fewshot_jax.segment predict --model M --images DIR --out DIR``."""
    parser = argparse.ArgumentParser(
        prog='python -m fewshot_jax.segment', description='Segment a folder of images with a trained U-Net.'
    )
    commands = parser.add_subparsers(dest='command', required=True)
    predict = commands.add_parser('predict', help='write a mask PNG per image')
    predict.add_argument(
        '--model', required=True, help='a saved segmenter, or a stage folder (WORKDIR/segment)'
    )
    predict.add_argument('--run', default=None, help='with a stage folder: the run to use')
    predict.add_argument('--images', required=True, help='folder of images (searched recursively)')
    predict.add_argument('--out', required=True, help='folder for the masks')
    predict.add_argument('--threshold', type=float, default=None)
    predict.add_argument(
        '--scale',
        type=float,
        default=None,
        help="training px per image px (default: the model's pixel_scale)",
    )
    predict.add_argument('--mode', choices=('tiled', 'whole'), default='tiled')
    predict.add_argument('--probabilities', action='store_true', help='also write .npy maps')
    predict.add_argument(
        '--flips', action='store_true', help='average over the 8 flips/quarter turns (8x compute)'
    )
    args = parser.parse_args(argv)
    from fewshot_jax.data.io import DataError

    try:
        model = args.model
        if args.run is not None:
            model = Path(load_segmenter_path(args.model, args.run))
        written = predict_folder(
            model,
            args.images,
            args.out,
            threshold=args.threshold,
            scale=args.scale,
            mode=args.mode,
            save_probabilities=args.probabilities,
            flips=args.flips,
        )
    except (DataError, SegmenterError, IntegrityError) as err:
        print(f'error: {err}', file=sys.stderr)
        return 2
    print(f'wrote {len(written)} masks to {args.out}')
    return 0


def load_segmenter_path(stage: str | os.PathLike, run: str) -> Path:
    """The model folder of ``run`` in a stage folder."""
    path = Path(stage) / 'runs' / run / 'model'
    if not (path / 'segmenter.json').is_file():
        raise SegmenterError(f'{path}: no finished run {run!r} in {stage}')
    return path
