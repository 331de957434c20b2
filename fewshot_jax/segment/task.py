"""The segmentation stage (``segment`` task): every encoder × resolution × k, scored.

:func:`run_segment` follows the paper's protocol (Fig. 4, Methods "Protocol for
segmentation task performance assessment"): an 80/20 class-balanced split (seed
42), k labeled images per class drawn from the training part (seed 42, nested),
the paper's epochs per k, Adam 1e-3, batch 4, loss 1 − soft Dice, every
resolution from one config; each pretrained encoder beside a random-init encoder
of the same architecture, the same decoder with no encoder features (entry
``'none=none'``: zeros for the encoder's maps, the image skip its only input; see
``models.unet``) and the Otsu threshold, all scored on the same held-out images.
Otsu (one global threshold after flattening the background) is a weak baseline:
beating it shows little; the no-encoder decoder, trained exactly like the others,
is the control that says what the encoder's features add. Outputs in
``workdir/segment``: ``results.csv`` (one row per test image × resolution × k ×
encoder), ``summary.json``, ``figures/`` (notched box plots, median Dice over k, overlays),
``runs/<encoder>_<px>px_k<k>/`` (each a loop workdir with its ``model/``),
``encoders/`` (one copy of each frozen encoder). Finished runs are skipped when
the stage runs again; an interrupted one resumes.

``segment.draws`` repeats the protocol on independent draws, from ``segment.first_draw``
(draw d: split seed and shot seed + d, runs named ``..._draw<d>``; draw 0 is the paper's);
``summary.json``'s ``gaps`` pair the first encoder with every other entry per draw (median
Dice difference, mean and 95 % t-interval over the draws). Settings chosen on one draw
are reported on the others.

The task registry names it as ``fewshot_jax.segment:run_segment`` (re-exported there).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from fewshot_jax.data.splits import k_shot_indices, stratified_split
from fewshot_jax.encoder import Encoder, load_encoder
from fewshot_jax.errors import is_count
from fewshot_jax.models import make_encoder
from fewshot_jax.segment import report
from fewshot_jax.segment.data import (
    SOURCES,
    check_masks,
    load_mask_set,
    otsu_masks,
    otsu_polarity,
    pixel_scale_of,
    resize_set,
)
from fewshot_jax.segment.model import (
    SegmentConfigError,
    check_fraction,
    check_positive_int,
    check_resolution,
    init_key,
)
from fewshot_jax.segment.segmenter import save_encoder_arrays
from fewshot_jax.segment.train import TrainSpec, paper_epochs, steps_for, train_segmenter

log = logging.getLogger(__name__)

__all__ = ['check_config', 'random_encoder', 'run_segment']

STAGE_DIR = 'segment'
NO_ENCODER = 'none'  # the spec of the no-encoder control
RESULTS_FILE = 'results.json'


def random_encoder(like: Encoder | Mapping, seed: int = 0) -> Encoder:
    """A randomly initialised encoder of the same architecture (the baseline beside a
    pretrained one).

    Args:
        like: an ``Encoder`` or a model config (depth, width, variant, …).
        seed: initialisation seed.
    """
    config = dict(like.config if isinstance(like, Encoder) else like)
    module = make_encoder(config)
    variables = jax.jit(
        lambda: module.lazy_init(init_key(seed), jax.ShapeDtypeStruct((1, 64, 64, 3), jnp.float32))
    )()
    return Encoder(variables, config, name='random', source=f'random (seed {seed})')


def _named_specs(entries: Sequence[str], workdir: Path) -> list[tuple[str, str]]:
    out = []
    for entry in entries:
        name, sep, spec = str(entry).partition('=')
        if not sep or not name or not spec:
            raise SegmentConfigError(
                f'segment.encoders entry {entry!r}: expected '
                f"'display name=weight spec', e.g. 'barlow=checkpoint:"
                f"{{workdir}}', 'random=random' or 'none=none'"
            )
        if any(c in name for c in '/\\ '):
            raise SegmentConfigError(
                f'segment.encoders: display name {name!r} must not '
                f'contain slashes or spaces (it names folders)'
            )
        out.append((name, spec.replace('{workdir}', str(workdir))))
    names = [n for n, _ in out]
    if not out or len(set(names)) != len(names) or 'otsu' in names:
        raise SegmentConfigError(
            f"segment.encoders: {names}: expected one or more distinct names ('otsu' is the baseline's)"
        )
    return out


def _encoders(config, workdir: Path) -> list[tuple[str, Encoder]]:
    """Loads every encoder of ``segment.encoders``; 'random' copies the first real one's
    architecture (or ``config.model``'s when there is none), and so does 'none', whose
    encoder only gives the decoder its shapes."""
    specs = _named_specs(config.segment.encoders, workdir)
    loaded = {name: load_encoder(spec) for name, spec in specs if spec not in ('random', NO_ENCODER)}
    like = next(iter(loaded.values())).config if loaded else config.model.to_dict()
    return [
        (name, loaded[name] if name in loaded else random_encoder(like, config.seed)) for name, spec in specs
    ]


def _validation_split(labels: np.ndarray, indices: np.ndarray, fraction: float, seed: int):
    """(train, validation) from a k-shot set: ``fraction`` of each class; none if k < 2."""
    if not fraction:
        return indices, np.zeros(0, np.int64)
    counts = np.bincount(labels[indices])
    if counts[counts > 0].min() < 2:
        log.info('k-shot set of %d images: too small for a validation split; last step kept', len(indices))
        return indices, np.zeros(0, np.int64)
    keep, held = stratified_split(labels[indices], fraction, seed)
    return indices[keep], indices[held]


def stage_steps(seg: ml_collections.ConfigDict, k: int, num_images: int) -> int:
    """Optimizer steps of the U-Nets trained on k labeled images per class.

    ``segment.num_steps`` when set; otherwise ``segment.epochs`` (or the paper's epochs for k)
    over the ``num_images`` training images, and at least ``segment.min_steps``: a decoder
    needs as many updates to converge on 2 images as on 16, so without a floor the smallest
    sets, where the encoder matters most, get the fewest steps (30 at k = 1 in the :demo).
    """
    if seg.get('num_steps'):
        return int(seg.num_steps)
    epochs = seg.epochs if seg.get('epochs') else paper_epochs(k)
    return max(int(seg.get('min_steps') or 1), steps_for(epochs, num_images, seg.batch_size))


def _spec_for(config, resolution: int, steps: int, pixel_scale: float) -> TrainSpec:
    """The training settings of one run, from ``config.segment`` and ``config.model``."""
    seg = config.segment
    return TrainSpec(
        resolution=resolution,
        steps=steps,
        decoder=seg.decoder,
        loss=seg.loss,
        batch_size=seg.batch_size,
        lr=seg.lr,
        lr_schedule=seg.get('lr_schedule', 'constant'),
        augment=bool(seg.augment),
        intensity_augment=bool(seg.get('intensity_augment', False)),
        invert_prob=seg.get('invert_prob', 0.0),
        dtype=config.model.get('dtype'),
        seed=config.seed,
        validation_every=seg.get('validation_every', 0.1),
        tile_overlap=seg.tile_overlap,
        pixel_scale=pixel_scale,
        decoder_width=seg.get('decoder_width'),
        bn_momentum=seg.get('bn_momentum'),
        crop=seg.get('crop'),
    )


def check_config(config: ml_collections.ConfigDict) -> None:
    """Validates every setting the stage reads, before any data is made or anything compiles.

    Raises:
        SegmentConfigError: naming the key, its value and what was expected.
    """
    seg = config.segment
    if not seg.resolutions:
        raise SegmentConfigError('segment.resolutions is empty: expected e.g. (224, 512)')
    for resolution in seg.resolutions:
        check_resolution(resolution)
    if not seg.shots:
        raise SegmentConfigError('segment.shots is empty: expected e.g. (1, 2, 4, 8)')
    for k in seg.shots:
        check_positive_int(k, 'segment.shots')
    check_positive_int(seg.get('epochs'), 'segment.epochs', optional=True)
    check_positive_int(seg.get('num_steps'), 'segment.num_steps', optional=True)
    check_positive_int(seg.get('min_steps'), 'segment.min_steps', optional=True)
    check_positive_int(seg.get('draws', 1), 'segment.draws')
    first_draw = seg.get('first_draw', 0)
    if not is_count(first_draw, 0):
        raise SegmentConfigError(f'segment.first_draw={first_draw!r}: expected an integer >= 0')
    check_fraction(seg.get('validation_fraction', 0.0), 'segment.validation_fraction')
    check_fraction(config.data.test_fraction, 'data.test_fraction', low_open=True)
    check_positive_int(config.get('num_devices'), 'num_devices', optional=True)
    if seg.get('num_classes', 1) != 1:
        raise SegmentConfigError(
            f'segment.num_classes={seg.num_classes!r}: the stage scores '
            f'binary masks (Dice, percolation); use segment.fit for '
            f'several classes'
        )
    if config.data.source not in SOURCES:
        raise SegmentConfigError(f'data.source={config.data.source!r}: expected one of {SOURCES}')
    spec = _spec_for(config, int(seg.resolutions[0]), 1, 1.0)
    spec.validate('segment.')
    if any(s == NO_ENCODER for _, s in _named_specs(seg.encoders, Path('.'))):
        dataclasses.replace(spec, encoder_features=False).validate('segment.')


def run_segment(config: ml_collections.ConfigDict, workdir: str | os.PathLike) -> dict:
    """The segmentation stage: every encoder × resolution × k, scored on the held-out images,
    on ``segment.draws`` independent draws of the split and the k-shot sets.

    Returns:
        A summary: per (encoder, resolution, k) medians, percolation agreement, training
        seconds, the first encoder's paired gaps over the draws, and where the results and
        the default model are.
    """
    check_config(config)
    workdir = Path(workdir)
    stage = workdir / STAGE_DIR
    seg = config.segment
    data = load_mask_set(config.data)
    check_masks(data.images, data.masks, data.names, num_classes=1)
    encoders = _encoders(config, workdir)
    no_encoder = {name for name, spec in _named_specs(seg.encoders, workdir) if spec == NO_ENCODER}
    shared = {}
    for name, encoder in encoders:
        shared[name] = stage / 'encoders' / name / 'encoder.msgpack'
        if jax.process_index() == 0 and not shared[name].is_file():
            save_encoder_arrays(shared[name], encoder.variables)
    rows, timings, panels = [], [], {}
    first = int(seg.get('first_draw', 0))
    for draw in range(first, first + int(seg.get('draws', 1))):
        draw_rows, draw_timings, draw_panels = _score_draw(
            config, data, draw, encoders, no_encoder, shared, stage
        )
        rows += draw_rows
        timings += draw_timings
        panels = panels or draw_panels
    default = f'runs/{_run_name(encoders[0][0], max(seg.resolutions), max(seg.shots), first)}/model'
    return _write_outputs(stage, rows, timings, panels, default=default)


def _run_name(encoder: str, resolution: int, k: int, draw: int) -> str:
    """A run's folder name; draw 0 (the configured seeds) keeps the paper protocol's name."""
    return f'{encoder}_{resolution}px_k{k}' + (f'_draw{draw}' if draw else '')


def _score_draw(config, data, draw: int, encoders, no_encoder, shared, stage: Path):
    """One draw of the protocol: the split (``data.split_seed + draw``), the nested k-shot
    sets (``data.shot_seed + draw``), every resolution × k × encoder trained and scored on
    that draw's test images, plus Otsu. Returns ``(rows, timings, overlay panels)``."""
    seg = config.segment
    resolutions = [int(r) for r in seg.resolutions]
    shots = sorted({int(k) for k in seg.shots})
    train_idx, test_idx = stratified_split(
        data.labels, config.data.test_fraction, config.data.split_seed + draw, class_names=data.class_names
    )
    shot_sets = k_shot_indices(
        data.labels, train_idx, shots, config.data.shot_seed + draw, class_names=data.class_names
    )
    channels = 3 if np.ndim(data.images[0]) == 3 else 1
    test_names = [data.names[i] for i in test_idx]
    test_classes = [data.class_names[data.labels[i]] for i in test_idx]
    overlay_picks = [
        int(np.flatnonzero(data.labels[test_idx] == c)[0]) for c in np.unique(data.labels[test_idx])
    ]
    rows, timings, panels = [], [], {}
    for res in resolutions:
        needed = np.union1d(test_idx, shot_sets[shots[-1]])
        pixels, labels = resize_set(
            [data.images[i] for i in needed], [data.masks[i] for i in needed], res, channels
        )
        where = {int(i): j for j, i in enumerate(needed)}
        test_pixels = pixels[[where[int(i)] for i in test_idx]]
        test_masks = labels[[where[int(i)] for i in test_idx]]
        scale = pixel_scale_of([data.images[i] for i in train_idx], res)
        for k in shots:
            picked = [where[int(i)] for i in shot_sets[k]]
            bright = otsu_polarity(pixels[picked], labels[picked])
            rows += report.score_rows(
                otsu_masks(test_pixels, bright),
                test_masks,
                encoder='otsu',
                resolution=res,
                k=k,
                names=test_names,
                classes=test_classes,
                draw=draw,
            )
            fit_idx, val_idx = _validation_split(
                data.labels, shot_sets[k], seg.get('validation_fraction', 0.0), config.seed
            )
            spec = _spec_for(config, res, stage_steps(seg, k, len(fit_idx)), scale)
            for name, encoder in encoders:
                run = _run_name(name, res, k, draw)
                run_rows, seconds, prob = _train_and_score(
                    encoder,
                    dataclasses.replace(spec, encoder_features=False) if name in no_encoder else spec,
                    stage / 'runs' / run,
                    config,
                    train=(
                        pixels[[where[int(i)] for i in fit_idx]],
                        labels[[where[int(i)] for i in fit_idx]],
                    ),
                    validation=(
                        pixels[[where[int(i)] for i in val_idx]],
                        labels[[where[int(i)] for i in val_idx]],
                    ),
                    test=(test_pixels, test_masks, test_names, test_classes),
                    info={
                        'name': run,
                        'encoder': name,
                        'encoder_source': 'none (decoder on the image alone)'
                        if name in no_encoder
                        else encoder.source,
                        'k': k,
                        'resolution': res,
                        'draw': draw,
                    },
                    shared_encoder=shared[name],
                )
                rows += run_rows
                timings.append({'run': run, 'train_seconds': seconds, 'steps': spec.steps})
                if k == shots[-1] and prob is not None:
                    panels.setdefault(name, []).extend(
                        {
                            'image': test_pixels[j, ..., 0],
                            'true': test_masks[j],
                            'prob': prob[j],
                            'label': f'{test_classes[j]}, {res} px, k={k}',
                            'dice': run_rows[j]['dice'],
                            'iou': run_rows[j]['iou'],
                        }
                        for j in overlay_picks
                    )
    return rows, timings, panels


def _train_and_score(encoder, spec, run_dir: Path, config, *, train, validation, test, info, shared_encoder):
    """Trains one run (or reads its finished results) and scores it on the test images."""
    results = run_dir / RESULTS_FILE
    if results.is_file():
        saved = json.loads(results.read_text())
        return [{'draw': info['draw'], **row} for row in saved['rows']], saved['train_seconds'], None
    t0 = time.perf_counter()
    segmenter, summary = train_segmenter(
        encoder,
        train[0],
        train[1],
        spec,
        run_dir,
        train_cfg=config.train,
        validation=validation if len(validation[0]) else None,
        num_devices=config.get('num_devices'),
        info=info,
        shared_encoder=shared_encoder,
        desc=info['name'],
    )
    seconds = round(time.perf_counter() - t0, 2)
    test_pixels, test_masks, names, classes = test
    prob = segmenter.predict(
        test_pixels, scale=1.0, progress=False, flips=bool(config.segment.get('test_flips', False))
    )
    rows = report.score_rows(
        prob,
        test_masks,
        encoder=info['encoder'],
        resolution=spec.resolution,
        k=info['k'],
        names=names,
        classes=classes,
        threshold=segmenter.threshold,
        draw=info['draw'],
    )
    if jax.process_index() == 0:
        if not config.segment.get('keep_run_checkpoints', False):
            shutil.rmtree(run_dir / 'checkpoints', ignore_errors=True)
        payload = {
            'rows': rows,
            'train_seconds': seconds,
            'resumed_from': summary['resumed_from'],
            'final_loss': summary['final_loss'],
            'steps': spec.steps,
        }
        tmp = results.with_name(RESULTS_FILE + '.tmp')
        tmp.write_text(json.dumps(payload))
        os.replace(tmp, results)
    return rows, seconds, prob


def _write_outputs(stage: Path, rows, timings, panels, default: str) -> dict:
    summary = report.summarize(rows)
    out = {
        'results': str(stage / 'results.csv'),
        'default_model': default,
        'groups': summary,
        'gaps': report.draw_gaps(rows),
        'timings': timings,
    }
    if jax.process_index() != 0:
        return out
    figures = stage / 'figures'
    figures.mkdir(parents=True, exist_ok=True)
    report.write_csv(rows, stage / 'results.csv')
    report.box_plots(rows, figures / 'dice_iou_vs_k.png')
    report.curve_over_k(summary, figures / 'median_dice_vs_k.png')
    for name, encoder_panels in panels.items():
        report.overlays(
            encoder_panels, figures / f'overlays_{name}.png', title=f'{name} encoder: held-out images'
        )
    (stage / 'summary.json').write_text(json.dumps(out, indent=2))
    table = report.format_table(summary) + '\n\n' + report.format_gaps(out['gaps'])
    (stage / 'summary.txt').write_text(table + '\n')
    print(table)
    return out
