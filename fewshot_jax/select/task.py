"""The ``select`` task: which images of an unlabeled folder to label first.

``python launch.py --config=configs/select.py --workdir=W --config.data.root=/unlabeled
--config.select.encoder=checkpoint:runs/bt_tem --config.select.budget=16`` runs

1. the checks that need no image: ``select.method``, ``select.budget`` (an integer
   >= 1, at most the number of image files), then the encoder (a spec naming no
   weights stops here, before any image is read);
2. reading the folder (``data.sources.UnlabeledFolderSource``): unreadable files
   are left out with a warning naming their count, images with identical pixels
   (a content hash of the decoded image) are reported in ``W/duplicates.csv`` and
   only the first of each group is kept, and a budget above the distinct
   readable images stops with an error naming the counts; all before encoding;
3. the frozen features (``probe.features``, cached in ``W/features``) and the
   selection (``fewshot_jax.select.select``);
4. ``W/to_label.csv``, ``W/to_label.png`` (the contact sheet) and ``W/select.json``.

Cluster sizes count every readable image a pick stands for, duplicates included.
For ``'random'`` and ``'coreset'`` a pick stands for the images nearer to it than to
any other pick (in the standardised feature space the strategies use).

With ``data.source='synthetic'`` (the ``:demo`` and ``:tiny`` presets) the
generated images are first written to ``W/pool`` as PNG files without labels, so
the demo reads a folder exactly as a user's run does.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import numpy as np

from fewshot_jax.data import synthetic
from fewshot_jax.data.io import DataError
from fewshot_jax.data.pipeline import to_uint8_square
from fewshot_jax.data.sources import UnlabeledFolderSource
from fewshot_jax.errors import ConfigError, is_count
from fewshot_jax.models.weights import WeightsError
from fewshot_jax.probe import features as features_lib
from fewshot_jax.select import report
from fewshot_jax.select.strategies import METHODS, select, standardize
from fewshot_jax.train_lib.checkpoint import WorkdirLock

log = logging.getLogger(__name__)

SOURCES = ('folder', 'synthetic')
SYNTHETIC_TASKS = ('nanowires', 'nanoparticles', 'viruses')


def run_select(config, workdir) -> dict:
    """Runs the select task; returns the summary written to ``workdir/select.json``.

    Raises:
        ConfigError: an unknown method or source, a budget outside 1..the images.
        fewshot_jax.models.weights.WeightsError: an encoder spec naming no usable weights.
        fewshot_jax.data.io.DataError: a missing folder, a folder without images.
    """
    workdir = Path(workdir)
    method, budget, seed = check_config(config)
    with WorkdirLock(workdir):
        root = pool_folder(config.data, workdir)
        source = UnlabeledFolderSource(
            root,
            recursive=bool(config.data.get('recursive', True)),
            keep_color=bool(config.data.get('keep_color', False)),
        )
        files = len(source)
        if budget > files:
            raise ConfigError(
                f'select.budget={budget}: expected at most {files}, the number of image files in {root}'
            )
        extractor = make_extractor(config)
        images, paths, digests, keep = _distinct_pool(source, root, budget, config.data, workdir)
        pool = images[keep]
        feature_set = features_lib.compute_features(
            extractor,
            pool,
            np.zeros(len(pool), np.int64),
            (),
            cache_dir=workdir / 'features',
            layer=config.select.get('layer', 'pooled'),
        )
        log.info('select: features of %d images from %s', len(pool), extractor.name)
        chosen = select(feature_set.features, budget, method, seed=seed)
        rows = _label_rows(
            chosen, method, budget, feature_set.features, [paths[i] for i in keep], _group_of(keep, digests)
        )
        csv_path = report.write_to_label(workdir / 'to_label.csv', rows)
        sheet = report.contact_sheet(
            pool[chosen.indices],
            [f'{r["order"]} (n={r["cluster_size"]})' for r in rows],
            workdir / 'to_label.png',
            columns=int(config.select.get('sheet_columns', 8)),
            title=f'label in this order: {method}, {extractor.name} (n = images each pick stands for)',
        )
        summary = {
            'method': method,
            'budget': budget,
            'encoder': extractor.spec,
            'files': files,
            'unreadable': files - len(paths),
            'duplicates': len(paths) - len(keep),
            'pool': len(keep),
            'to_label': str(csv_path),
            'sheet': str(sheet),
            'next': f'label the images of {csv_path} in its order',
        }
        (workdir / 'select.json').write_text(json.dumps(summary, indent=1))
    return summary


def _distinct_pool(source, root: Path, budget: int, data_cfg, workdir: Path):
    """The pool's readable images with content duplicates set aside (listed in
    ``duplicates.csv``, warned about); ``(images, paths, digests, keep)``.

    Raises:
        ConfigError: a budget over the distinct readable images.
    """
    files = len(source)
    images, paths, digests = read_pool(source, int(data_cfg.get('image_size', 224)))
    keep, groups = content_duplicates(digests)
    if groups:
        duplicates = sum(len(g) - 1 for g in groups)
        report.write_duplicates(workdir / 'duplicates.csv', [[paths[i] for i in g] for g in groups])
        log.warning(
            'select: %d duplicate image(s) in %d group(s) of identical pixels in %s, e.g. %s = %s; '
            'each group is picked at most once (list: %s)',
            duplicates,
            len(groups),
            root,
            paths[groups[0][0]],
            paths[groups[0][1]],
            workdir / 'duplicates.csv',
        )
    if budget > len(keep):
        raise ConfigError(
            f'select.budget={budget}: expected at most {len(keep)}, the distinct readable images in '
            f'{root} ({files} files, {files - len(paths)} unreadable, {len(paths) - len(keep)} '
            'duplicates)'
        )
    return images, paths, digests, keep


def _label_rows(chosen, method: str, budget: int, features, files: list, group_of) -> list[dict]:
    """The to-label list: each pick in order, its cluster and how many pool images it stands
    for. ``files`` are the distinct images' paths; ``group_of`` gives, for every readable
    image, the position of its distinct image, so duplicates count towards their cluster."""
    multiplicity = np.bincount(group_of, minlength=len(files))
    cells = chosen.assignment
    if method == 'random':
        cells = nearest_pick(features, chosen.indices)
    sizes = np.bincount(cells, weights=multiplicity, minlength=budget).astype(np.int64)
    return [
        {
            'order': i + 1,
            'file': files[index],
            'cluster': int(cluster) if cluster >= 0 else i,
            'cluster_size': int(sizes[cluster if cluster >= 0 else i]),
            'distance_to_centroid': float(distance),
        }
        for i, (index, cluster, distance) in enumerate(
            zip(chosen.indices, chosen.cluster, chosen.distance_to_centroid, strict=True)
        )
    ]


def check_config(config) -> tuple[str, int, int]:
    """``(method, budget, seed)`` from ``config.select``, or a ConfigError naming the value."""
    cfg = config.select
    method = cfg.get('method', 'typical')
    if method not in METHODS:
        raise ConfigError(f'select.method={method!r}: expected one of {METHODS}')
    budget, seed = cfg.get('budget'), cfg.get('seed', 0)
    if not is_count(budget):
        raise ConfigError(f'select.budget={budget!r}: expected an integer >= 1 (images to label)')
    if not is_count(seed, 0):
        raise ConfigError(f'select.seed={seed!r}: expected an integer >= 0')
    source = config.data.get('source', 'folder')
    if source not in SOURCES:
        raise ConfigError(f'data.source={source!r}: expected one of {SOURCES}')
    if not cfg.get('encoder'):
        raise ConfigError(
            "select.encoder='': expected a weight spec, e.g. --config.select.encoder=checkpoint:runs/bt_tem "
            "(or 'random-init', 'texture', 'raw-pixels')"
        )
    return method, int(budget), int(seed)


def pool_folder(data_cfg, workdir: Path) -> Path:
    """The folder to read: ``data.root``, or ``workdir/pool`` filled with synthetic images."""
    if data_cfg.get('source', 'folder') == 'folder':
        if not data_cfg.get('root'):
            raise DataError(
                "data.root='': expected the folder of unlabeled images (pass --config.data.root=/path)"
            )
        return Path(data_cfg.root)
    task = data_cfg.get('task', 'nanowires')
    if task not in SYNTHETIC_TASKS:
        raise ConfigError(f'data.task={task!r}: expected one of {SYNTHETIC_TASKS}')
    from PIL import Image

    generated = getattr(synthetic, task)(
        int(data_cfg.per_class), int(data_cfg.synthetic_size), int(data_cfg.get('seed', 0))
    )
    folder = workdir / 'pool'
    folder.mkdir(parents=True, exist_ok=True)
    for stale in folder.glob('*.png'):  # a rerun with fewer images must not keep the old ones
        stale.unlink()
    # Shuffled file names: the folder must not reveal the classes by their order.
    order = np.random.default_rng(int(data_cfg.get('seed', 0))).permutation(len(generated.images))
    for name, i in enumerate(order):
        pixels = np.clip(np.rint(generated.images[i] * 255.0), 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(folder / f'{name:05d}.png')
    return folder


def make_extractor(config) -> features_lib.Extractor:
    """The extractor ``select.encoder`` names (weights are loaded here, before any image is read)."""
    spec = str(config.select.encoder)
    kwargs = {
        'layer': config.select.get('layer', 'pooled'),
        'batch_size': int(config.select.get('encode_batch', 64)),
    }
    try:
        if spec == features_lib.RANDOM_INIT:
            return features_lib.make_extractor(
                spec, model=config.model.to_dict(), seed=int(config.get('seed', 0)), **kwargs
            )
        return features_lib.make_extractor(spec, **kwargs)
    except (WeightsError, features_lib.FeatureError) as err:
        raise WeightsError(f'select.encoder={spec!r}: {err}') from None


def read_pool(source: UnlabeledFolderSource, size: int):
    """Reads every file of ``source``; unreadable ones are left out with one warning.

    Returns:
        ``(images, paths, digests)``: uint8 (n, size, size[, 3]) images at the encoder's
        size, their file paths and a hash of each decoded image's pixels.
    """
    images, paths, digests, bad = [], [], [], []
    for i in range(len(source)):
        try:
            image = np.asarray(source[i]['image'], np.float32)
        except DataError as err:
            bad.append(str(err))
            continue
        digests.append(hashlib.sha256(f'{image.shape}'.encode() + image.tobytes()).hexdigest())
        channels = 3 if image.ndim == 3 else 1
        square = to_uint8_square(image, size, channels)
        images.append(square[..., 0] if channels == 1 else square)
        paths.append(str(source.paths[i]))
    if bad:
        log.warning(
            'select: %d of %d files are unreadable and left out; first: %s', len(bad), len(source), bad[0]
        )
    if not images:
        raise DataError(f'{source.root}: none of its {len(source)} image files is readable')
    return np.stack(images), paths, digests


def content_duplicates(digests) -> tuple[np.ndarray, list[list[int]]]:
    """``(kept, groups)``: the first image of each distinct content, and the groups of 2+."""
    members: dict[str, list[int]] = {}
    for i, digest in enumerate(digests):
        members.setdefault(digest, []).append(i)
    kept = np.asarray(sorted(m[0] for m in members.values()), np.int64)
    groups = sorted((m for m in members.values() if len(m) > 1), key=lambda m: m[0])
    return kept, groups


def nearest_pick(features: np.ndarray, picks: np.ndarray) -> np.ndarray:
    """Each row's nearest pick (index into ``picks``), in the standardised feature space."""
    x = standardize(np.asarray(features, np.float32)).astype(np.float64)
    centres = x[picks]
    # ‖a‖² + ‖b‖² − 2ab in float64: (pool × picks) memory, never (pool × picks × features).
    distance = (x * x).sum(1)[:, None] + (centres * centres).sum(1)[None, :] - 2.0 * x @ centres.T
    distance[picks, np.arange(len(picks))] = -1.0  # a pick is in its own cell, whatever the rounding
    return np.argmin(distance, axis=1)


def _group_of(kept: np.ndarray, digests) -> np.ndarray:
    """For every readable image, the position in ``kept`` of the image with its content."""
    position = {digests[i]: p for p, i in enumerate(kept)}
    return np.asarray([position[d] for d in digests], np.int64)
