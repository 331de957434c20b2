"""Frozen features of a labeled image set, computed once and cached in the workdir.

An *extractor* turns images into one feature vector each. The probe's encoder
lists name them by weight spec, with an optional display name before ``=``::

    'Barlow-Twins TEM=checkpoint:runs/bt_tem'   # a pretraining workdir (newest weights)
    'checkpoint:runs/bt_tem@1300'               # a checkpoint step (name: the spec)
    'keras:/models/barlow_resnet_batch64_project128_64_1024_seed42.h5'  # a paper encoder
    'torchvision:/models/resnet50.pth'
    'random-init'            # a randomly initialised ResNet (see below), same forward path
    'bn-stats:checkpoint:runs/bt_tem@0'  # the init's weights, BatchNorm statistics of these images
    'raw-pixels', 'texture', 'intensity'  # encoder-free baselines (``probe.baselines``)

``random-init`` is the baseline every pretrained encoder must beat: the same
architecture (depth, width, variant, stem, input normalisation) with the
weights Flax's initialisers draw from a seed, BatchNorm statistics at their
initial values (mean 0, variance 1), run through the same ``Encoder.encode``.
Its architecture is the ``model`` the caller passes (the probe task passes the
first pretrained encoder's, so the comparison is like for like).

With ``average_orientations`` an encoder's features are the mean of its pooled features
over the eight orientations of each image (four quarter turns, each also mirrored): a
micrograph has no preferred orientation, and the mean makes the features exactly
invariant to it where a network is so only approximately. Baselines are never averaged:
their definitions stay fixed. ``pooling`` ('average', the network's own, or 'gem';
:mod:`fewshot_jax.probe.pooling`) is how a feature map becomes a vector; baselines ignore
it too.

``bn-stats:<weight spec>`` is the BatchNorm-statistics-only control
(``fewshot_jax.probe.bn_stats``): the spec's weights unchanged, its BatchNorm running
statistics re-estimated in train mode on the images being encoded (labels unused),
then features in inference mode. Paired with the ``@0`` init of a pretraining run it
measures how much of "pretrained − init" the statistics alone account for.

Encoders run through ``Encoder.encode`` (BatchNorm in inference mode, every
batch split over all local devices). :func:`compute_features` caches each result
as ``cache_dir/<name>-<key>.npz``; the key hashes the extractor's *content*
(the weights themselves, so a changed checkpoint or file is a new key; the
baseline's name and arguments), the data set's fingerprint (image bytes,
labels, class names), the image size and the layer. A repeated probe reads the
cache; anything changed re-encodes.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import re
import zipfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np

from fewshot_jax.integrity import IntegrityError
from fewshot_jax.probe import bn_stats
from fewshot_jax.probe import pooling as pooling_lib

log = logging.getLogger(__name__)

RANDOM_INIT = 'random-init'
BASELINES = ('raw-pixels', 'texture', 'intensity')
_CACHE_VERSION = 1


class FeatureError(ValueError):
    """An encoder spec, feature cache or feature set that cannot be used."""


@dataclasses.dataclass(frozen=True)
class Extractor:
    """Something that maps images (N, H, W[, C]) to features (N, D).

    Attributes:
        name: display name (figure legends, CSV rows).
        spec: the weight spec or baseline name it came from.
        fingerprint: a hash of everything that determines its output.
        extract: ``images -> (N, D) float32``.
        model: the encoder's model config (None for baselines).
    """

    name: str
    spec: str
    fingerprint: str
    extract: Callable[[np.ndarray], np.ndarray]
    model: dict | None = None


@dataclasses.dataclass(frozen=True)
class FeatureSet:
    """The features of one extractor on one data set.

    Attributes:
        name, spec: of the extractor.
        features: (N, D) float32.
        dataset: the data set's fingerprint (:func:`dataset_fingerprint`).
        class_names: the data set's class names.
        path: the cache file (None when not cached).
        cached: True when read from the cache rather than computed.
    """

    name: str
    spec: str
    features: np.ndarray
    dataset: str
    class_names: tuple[str, ...]
    path: Path | None = None
    cached: bool = False


def parse_entry(entry: str) -> tuple[str, str]:
    """``'Name=spec'`` → ``(name, spec)``; a bare spec is its own name."""
    text = str(entry).strip()
    name, sep, spec = text.partition('=')
    if not sep:
        return text, text
    if not name.strip() or not spec.strip():
        raise FeatureError(f'encoder entry {entry!r}: expected "display name=spec" or a spec')
    return name.strip(), spec.strip()


def make_extractor(
    spec: str,
    *,
    name: str | None = None,
    model: Mapping | None = None,
    seed: int = 0,
    layer: str = 'pooled',
    batch_size: int = 64,
    raw_pixel_side: int = 32,
    average_orientations: bool = False,
    pooling: str = 'average',
) -> Extractor:
    """Builds the extractor a spec names.

    Args:
        spec: a weight spec (``checkpoint:``, ``keras:``, ``torchvision:`` or a
            path), ``'bn-stats:'`` and a weight spec, ``'random-init'``,
            ``'raw-pixels'``, ``'texture'`` or ``'intensity'``.
        name: display name; default the spec.
        model: the architecture of ``'random-init'`` (``depth``, ``width``,
            ``variant``, ``input_mean``, ``input_std`` …).
        seed: the seed of ``'random-init'``'s weights.
        layer: encoder layer ('pooled' by default; feature maps are average
            pooled to one vector), or several joined by '+' ('stage2+stage3+pooled'):
            each pooled, then concatenated (see :func:`layer_names`).
        batch_size: images per encoder call (and per train-mode batch of ``bn-stats:``).
        raw_pixel_side: side of the block-mean image of ``'raw-pixels'``.
        average_orientations: an encoder's features averaged over the image's eight
            orientations (:func:`pooled_features`); baselines ignore it.
        pooling: how an encoder's feature maps become vectors, 'average' or 'gem'
            (:mod:`fewshot_jax.probe.pooling`); baselines ignore it.

    Raises:
        FeatureError: an unknown spec, or 'random-init' without a model.
        fewshot_jax.probe.pooling.PoolingError: an unknown pooling.
        fewshot_jax.models.weights.WeightsError: a weight spec naming no usable encoder.
    """
    name = name or spec
    pooling_lib.check_pooling(pooling)
    if spec in BASELINES:
        from fewshot_jax.probe import baselines

        def extract_baseline(images):
            if spec == 'raw-pixels':
                return baselines.raw_pixels(_grayscale(images), side=raw_pixel_side)
            if spec == 'intensity':
                return baselines.intensity_features(_grayscale(images))
            return baselines.texture_features(_grayscale(images))

        key = {
            'raw-pixels': f'raw-pixels/side={raw_pixel_side}',
            'texture': f'texture/dim={baselines.TEXTURE_DIM}',
            'intensity': f'intensity/quantiles={baselines.INTENSITY_QUANTILES}',
        }[spec]
        return Extractor(name, spec, _hash(key.encode()), extract_baseline)
    from fewshot_jax.encoder import Encoder, load_encoder

    if bn_stats.base_spec(spec) is not None:
        init = load_encoder(bn_stats.base_spec(spec))
        return _bn_stats_extractor(
            Encoder, init, spec, name, layer, batch_size, average_orientations, pooling
        )
    if spec == RANDOM_INIT:
        if model is None:
            raise FeatureError(
                f"encoder {name!r}: 'random-init' needs a model architecture "
                '(config.model, or a pretrained encoder in the same list)'
            )
        encoder = _random_encoder(Encoder, dict(model), seed, name)
    else:
        encoder = load_encoder(spec)
    layer_names(layer)  # a bad layer stops here, before any image is encoded
    fingerprint = _encoder_fingerprint(encoder, layer, average_orientations, pooling)

    def extract(images):
        return pooled_features(encoder, images, layer, batch_size, average_orientations, pooling)

    return Extractor(name, spec, fingerprint, extract, dict(encoder.config))


def pooled_features(
    encoder,
    images,
    layer: str = 'pooled',
    batch_size: int = 64,
    average_orientations: bool = False,
    pooling: str = 'average',
) -> np.ndarray:
    """The probe's features: ``layer`` of ``encoder`` on ``images`` (several layers joined by '+'
    are each pooled, then concatenated; :func:`layer_names`).

    ``pooling`` reduces each feature map to a vector (:mod:`fewshot_jax.probe.pooling`):
    'average' is the network's own global average ('pooled'), 'gem' the generalised mean
    of the same last-stage map. With ``average_orientations``, the mean of those features
    over the eight orientations of each image (quarter turns 0-3, each also mirrored
    left-right): exactly invariant to the orientation a micrograph happened to be recorded
    in, at eight times the encoding cost.
    """
    pooling_lib.check_pooling(pooling)
    layers = layer_names(layer)
    # Under a pooling other than the network's average, 'pooled' is the last stage's map
    # reduced by that pooling.
    maps = {n: ('stage4' if n == 'pooled' and pooling != 'average' else n) for n in layers}
    requested = tuple(dict.fromkeys(maps.values()))
    images = np.asarray(images)
    views = tuple(_orientations(images)) if average_orientations else (images,)
    total = None
    for view in views:
        out = encoder.encode(view, layer=requested, batch_size=batch_size, num_devices=None)
        pooled = np.concatenate(
            [
                out[maps[n]] if out[maps[n]].ndim == 2 else pooling_lib.pool_map(out[maps[n]], pooling)
                for n in layers
            ],
            axis=1,
        )
        total = pooled if total is None else total + pooled
    return total / len(views)


def _orientations(images: np.ndarray):
    """The eight orientations of every image (N, H, W[, C]): quarter turns, each also mirrored."""
    for turns in range(4):
        turned = np.rot90(images, turns, axes=(1, 2))
        yield turned
        yield turned[:, :, ::-1]


def layer_names(layer: str) -> tuple[str, ...]:
    """The encoder layers a probe ``layer`` setting names: one, or several joined by '+'.

    Several layers are each global-average pooled and concatenated: the pooled maps of
    earlier stages are first-order statistics of local filter responses, a learned texture
    descriptor at the scale of the structures, where the last stage of a small image is a
    2 x 2 map. Which one a probe should use is measured (benchmarks/RESULTS.md).

    Raises:
        FeatureError: an empty, unknown or repeated layer name.
    """
    from fewshot_jax.models.resnet import LAYER_NAMES

    names = tuple(part.strip() for part in str(layer).split('+'))
    if not all(names) or any(n not in LAYER_NAMES for n in names) or len(set(names)) != len(names):
        raise FeatureError(
            f'probe.layer={layer!r}: expected one of {LAYER_NAMES}, or several distinct ones '
            "joined by '+' (e.g. 'stage2+stage3+pooled')"
        )
    return names


def _bn_stats_extractor(
    encoder_cls,
    init,
    spec: str,
    name: str,
    layer: str,
    batch_size: int,
    average_orientations: bool,
    pooling: str,
) -> Extractor:
    # The images are part of the cache key already; the batch size shapes the train-mode
    # statistics of every layer after the first, so it is part of the extractor.
    content = _encoder_fingerprint(init, layer, average_orientations, pooling)
    fingerprint = _hash(f'bn-stats/batch={batch_size}/{content}'.encode())

    def extract(images):
        variables = bn_stats.reestimate_batch_stats(
            init.module, init.variables, images, batch_size=batch_size
        )
        encoder = encoder_cls(variables, init.config, name=name, step=init.step, source=spec)
        return pooled_features(encoder, images, layer, batch_size, average_orientations, pooling)

    return Extractor(name, spec, fingerprint, extract, dict(init.config))


def _random_encoder(encoder_cls, model: dict, seed: int, name: str):
    import jax

    from fewshot_jax.models import make_encoder

    module = make_encoder(model)
    # One compiled init: eager init dispatches (and compiles) every layer's ops one by one.
    init = jax.jit(lambda key: module.init(key, np.zeros((1, 32, 32, 3), np.float32), train=False))
    variables = init(jax.random.key(seed))
    return encoder_cls(variables, model, name=name, source=f'{RANDOM_INIT}@seed={seed}')


def _encoder_fingerprint(
    encoder, layer: str, average_orientations: bool = False, pooling: str = 'average'
) -> str:
    import jax

    digest = hashlib.sha256()
    # Each option is absent from the hash at its default, so caches of plain features stay valid.
    if average_orientations:
        digest.update(b'average_orientations')
    if pooling != 'average':
        digest.update(f'pooling={pooling}'.encode())
    config = {k: v for k, v in encoder.config.items() if k != 'init'}
    digest.update(json.dumps(config, sort_keys=True, default=str).encode())
    digest.update(layer.encode())
    leaves = jax.tree_util.tree_leaves_with_path(encoder.variables)
    for path, leaf in sorted(leaves, key=lambda item: jax.tree_util.keystr(item[0])):
        digest.update(jax.tree_util.keystr(path).encode())
        digest.update(np.ascontiguousarray(np.asarray(leaf)).tobytes())
    return digest.hexdigest()


def _grayscale(images: np.ndarray) -> np.ndarray:
    images = np.asarray(images)
    if images.dtype == np.uint8:
        images = images.astype(np.float32) / 255.0
    if images.ndim == 4 and images.shape[-1] == 3:
        images = images @ np.asarray([0.299, 0.587, 0.114], np.float32)
    elif images.ndim == 4 and images.shape[-1] == 1:
        images = images[..., 0]
    return images


def _hash(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def dataset_fingerprint(images, labels, class_names: Sequence[str]) -> str:
    """A hash of the images' bytes, shape and dtype, the labels and the class names."""
    digest = hashlib.sha256()
    images = np.ascontiguousarray(images)
    digest.update(f'{images.shape}{images.dtype}'.encode())
    digest.update(images.tobytes())
    digest.update(np.asarray(labels, np.int64).tobytes())
    digest.update(json.dumps(list(class_names)).encode())
    return digest.hexdigest()


def _slug(name: str) -> str:
    return re.sub(r'[^A-Za-z0-9._-]+', '_', name).strip('_')[:60] or 'encoder'


def compute_features(
    extractor: Extractor,
    images,
    labels,
    class_names: Sequence[str],
    *,
    cache_dir: str | os.PathLike | None = None,
    layer: str = 'pooled',
    dataset: str | None = None,
) -> FeatureSet:
    """The extractor's features of ``images``, from the cache when it holds them.

    Args:
        extractor: from :func:`make_extractor`.
        images: (N, H, W[, C]) uint8 or float in [0, 1], already at the probe's size.
        labels, class_names: the data set's labels (kept with the features).
        cache_dir: where cached features live (``workdir/features``); None: no cache.
        layer: recorded in the key (the extractor already applies it).
        dataset: the data set's fingerprint, if already computed.

    Raises:
        FeatureError: the extractor returned an unusable array.
    """
    images = np.asarray(images)
    dataset = dataset or dataset_fingerprint(images, labels, class_names)
    size = images.shape[1:3]
    key = _hash(json.dumps([_CACHE_VERSION, extractor.fingerprint, dataset, list(size), layer]).encode())[:16]
    path = None
    if cache_dir is not None:
        path = Path(cache_dir) / f'{_slug(extractor.name)}-{key}.npz'
        if path.is_file():
            try:
                with np.load(path, allow_pickle=False) as stored:
                    meta = json.loads(str(stored['meta']))
                    features = stored['features']
                _check_cached(path, meta, features)
                if meta.get('key') == key and features.shape[0] == len(images):
                    log.info('features of %s: read from %s', extractor.name, path)
                    return FeatureSet(
                        extractor.name,
                        extractor.spec,
                        features,
                        dataset,
                        tuple(meta['class_names']),
                        path,
                        cached=True,
                    )
                log.warning('%s does not match this request; recomputing', path)
            except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as err:
                # A cache is derived data: a damaged file is said on the console and rewritten.
                log.warning('%s is unreadable or damaged (%s); recomputing it', path, err)
    features = np.asarray(extractor.extract(images), np.float32)
    if features.ndim != 2 or features.shape[0] != len(images):
        raise FeatureError(
            f'encoder {extractor.name!r} returned features of shape '
            f'{features.shape} for {len(images)} images; expected (N, D)'
        )
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        meta = {
            'key': key,
            'name': extractor.name,
            'spec': extractor.spec,
            'fingerprint': extractor.fingerprint,
            'dataset': dataset,
            'image_size': list(size),
            'layer': layer,
            'class_names': list(class_names),
            'shape': list(features.shape),
            'sha256': _features_digest(features),
        }
        temporary = path.with_suffix('.tmp.npz')
        np.savez(
            temporary,
            features=features,
            labels=np.asarray(labels, np.int64),
            meta=np.asarray(json.dumps(meta)),
        )
        os.replace(temporary, path)
    return FeatureSet(
        extractor.name, extractor.spec, features, dataset, tuple(class_names), path, cached=False
    )


def _features_digest(features: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(features, np.float32).tobytes()).hexdigest()


def _check_cached(path: Path, meta: dict, features: np.ndarray) -> None:
    """Raises IntegrityError if cached features differ from the checksum written with them."""
    recorded = meta.get('sha256')
    if recorded is None:
        log.warning('%s has no recorded checksum (written by an older version): read unchecked', path)
    elif _features_digest(features) != recorded:
        raise IntegrityError(f'{path}: features differ from the sha256 recorded when they were written')


def check_feature_sets(sets: Sequence[FeatureSet], image_names: Sequence[str] | None = None) -> None:
    """Raises FeatureError unless every set covers the same images and classes, all finite.

    Args:
        sets: the feature sets of one probe.
        image_names: names (file paths) of the images, for error messages.
    """
    if not sets:
        raise FeatureError('no encoders: the probe needs at least one feature set')
    first = sets[0]
    names = [s.name for s in sets]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise FeatureError(
            f'encoder display name(s) {duplicates} used twice; give each encoder its own name ("name=spec")'
        )
    for s in sets:
        if s.dataset != first.dataset or s.features.shape[0] != first.features.shape[0]:
            raise FeatureError(
                f'encoder {s.name!r}: its features cover other images '
                f'({s.features.shape[0]} images, data set {s.dataset[:12]}) '
                f"than encoder {first.name!r}'s ({first.features.shape[0]} "
                f'images, data set {first.dataset[:12]})'
            )
        if s.class_names != first.class_names:
            raise FeatureError(
                f'encoder {s.name!r}: class names {list(s.class_names)} differ '
                f"from encoder {first.name!r}'s {list(first.class_names)}"
            )
        finite = np.isfinite(s.features).all(axis=1)
        if not finite.all():
            row = int(np.flatnonzero(~finite)[0])
            where = f' ({image_names[row]})' if image_names is not None else ''
            raise FeatureError(
                f'encoder {s.name!r}: features of image {row}{where} are NaN or '
                f'infinite ({int((~finite).sum())} images in all)'
                + (f'; cache file {s.path}' if s.path else '')
            )
