"""A trained U-Net as a numpy-in, numpy-out object: :class:`Segmenter` and :func:`load_segmenter`.

Example::

    from fewshot_jax.segment import load_segmenter
    seg = load_segmenter('runs/bt_tem/segment')      # the stage's default model
    prob = seg.predict(images)                        # (N, H, W) probabilities, native size
    masks = seg.predict_masks(images)                 # thresholded (argmax for classes)

**Geometry.** A segmenter was trained on square windows of ``resolution`` px cut
from images resized by ``pixel_scale`` (training px per source px; 1 when the
training images were already at that size). ``predict`` resizes each image by
``pixel_scale`` so that wires are as many pixels wide as in training, mirror-pads
it to a multiple of 32 px (and at least one tile), covers it with
``resolution``-px tiles on the model's 32-px stride grid overlapping by at least
``tile_overlap`` (a fraction of the tile), blends the tiles (weights 0 on the
outer quarter of each shared overlap, rising to 1 at its middle, see
:func:`blend_weights`), and resizes the probabilities back to the image's own
size. ``mode='whole'`` runs the whole padded image at once instead: no tile
seams, memory growing with the image. A pixel of a tiled prediction equals the
whole-image prediction whenever the model's effective receptive field around it
stays inside the part of its tiles that the blend keeps.

**Files.** ``save(path)`` writes ``path/segmenter.json`` (architecture, geometry,
provenance), ``path/decoder.msgpack`` and the frozen encoder's
``encoder.msgpack`` (or a relative reference to a shared copy, which the
segmentation stage uses so that dozens of runs keep one encoder each).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import serialization
from tqdm import tqdm

from fewshot_jax import integrity
from fewshot_jax.errors import is_count
from fewshot_jax.models.unet import DOWNSAMPLING
from fewshot_jax.segment import saved
from fewshot_jax.segment.model import build_unet, model_input, probabilities
from fewshot_jax.segment.tiles import blend_weights, tile_starts, tile_stride
from fewshot_jax.segment.tiles import resize as _resize

FORMAT = 1
META_FILE = 'segmenter.json'
DECODER_FILE = 'decoder.msgpack'
ENCODER_FILE = 'encoder.msgpack'
SUMMARY_FILE = 'summary.json'
_PROGRESS_MIN_IMAGES = 16
_INTEGER_SCALES = {np.dtype(np.uint8): 255.0, np.dtype(np.uint16): 65535.0}


# The 8 symmetries of the square: (quarter turns, then a left-right flip).
DIHEDRAL = tuple((turns, flip) for flip in (False, True) for turns in range(4))


def dihedral(image: np.ndarray, view: int, inverse: bool = False) -> np.ndarray:
    """``image`` (H, W[, C]) under symmetry ``DIHEDRAL[view]``, or that symmetry undone."""
    turns, flip = DIHEDRAL[view]
    if inverse:
        image = image[:, ::-1] if flip else image
        return np.ascontiguousarray(np.rot90(image, -turns, axes=(0, 1)))
    image = np.rot90(image, turns, axes=(0, 1))
    return np.ascontiguousarray(image[:, ::-1] if flip else image)


class SegmenterError(ValueError):
    """Images, arguments or files a segmenter cannot use."""


def _as_unit_float(image, index: int) -> np.ndarray:
    array = np.asarray(image)
    scale = _INTEGER_SCALES.get(array.dtype)
    if scale is not None:
        return array.astype(np.float32) / np.float32(scale)
    if not np.issubdtype(array.dtype, np.floating):
        raise SegmenterError(f'image {index}: dtype {array.dtype}; expected uint8, uint16 or float in [0, 1]')
    low, high = (float(np.min(array)), float(np.max(array))) if array.size else (0.0, 0.0)
    if not (np.isfinite(low) and np.isfinite(high)) or low < -1e-3 or high > 1 + 1e-3:
        raise SegmenterError(
            f'image {index}: float values over [{low:g}, {high:g}]; expected '
            f'[0, 1] (divide 0-255 images by 255, or pass uint8)'
        )
    return np.clip(array.astype(np.float32), 0.0, 1.0)


class Segmenter:
    """A frozen encoder + trained decoder with its geometry.

    Attributes:
        variables: ``{'params', 'batch_stats'}`` of the whole U-Net.
        encoder_config: the encoder's model dict.
        decoder: 'paper' or 'unet'.
        num_classes: 1 (binary) or C.
        resolution: the training tile side in px.
        channels: 1 (grayscale micrographs) or 3.
        pixel_scale: training px per source px (see the module docstring).
        threshold: foreground probability threshold of :meth:`predict_masks`.
        tile_overlap: tile overlap as a fraction of ``resolution``.
        decoder_width: the width the decoder's filters were scaled for (None: the encoder's).
        encoder_features: False for the no-encoder control (zeros for the encoder's maps).
        info: provenance (encoder name and spec, k, steps, …), saved with the model.
    """

    def __init__(
        self,
        variables: Mapping,
        encoder_config: Mapping,
        *,
        decoder: str = 'paper',
        num_classes: int = 1,
        resolution: int,
        channels: int = 1,
        pixel_scale: float = 1.0,
        threshold: float = 0.5,
        tile_overlap: float = 0.25,
        dtype: str | None = None,
        decoder_width: int | None = None,
        encoder_features: bool = True,
        info: Mapping | None = None,
    ):
        if resolution % DOWNSAMPLING:
            raise SegmenterError(f'resolution {resolution}: expected a multiple of {DOWNSAMPLING}')
        if not 0 <= tile_overlap < 1:
            raise SegmenterError(f'tile_overlap={tile_overlap}: expected a fraction in [0, 1)')
        self.encoder_config = dict(encoder_config)
        self.decoder = decoder
        self.num_classes = int(num_classes)
        self.resolution = int(resolution)
        self.channels = int(channels)
        self.pixel_scale = float(pixel_scale)
        self.threshold = float(threshold)
        self.tile_overlap = float(tile_overlap)
        self.dtype = dtype
        self.decoder_width = decoder_width
        self.encoder_features = bool(encoder_features)
        self.info = dict(info or {})
        # Positional: (config, decoder, classes, dtype, bn_momentum, decoder_width, encoder_features).
        self.module = build_unet(
            self.encoder_config, decoder, self.num_classes, dtype, None, decoder_width, self.encoder_features
        )
        self.variables = {'params': variables['params'], 'batch_stats': variables['batch_stats']}
        module = self.module
        self._forward = jax.jit(lambda v, x: probabilities(module.apply(v, model_input(x), train=False)))

    def __repr__(self) -> str:
        c = self.encoder_config
        return (
            f'Segmenter({self.decoder} decoder on ResNet{c["depth"]} width {c["width"]}, '
            f'{self.resolution} px tiles, pixel_scale {self.pixel_scale:g}, '
            f'{self.num_classes} class channel(s), {self.info.get("name", "")})'
        )

    # ---- prediction -------------------------------------------------------------------
    def _checked(self, images) -> tuple[list[np.ndarray], bool, bool]:
        """Images as a list of float (H, W, channels) arrays; (list, was_single, was_array)."""
        if isinstance(images, np.ndarray) or hasattr(images, '__array__'):
            array = np.asarray(images)
            if array.ndim == 2:
                return [self._channels(_as_unit_float(array[..., None], 0), 0)], True, True
            if array.ndim == 3:
                array = array[..., None]
            if array.ndim != 4 or array.shape[-1] not in (1, 3):
                raise SegmenterError(
                    f'images of shape {array.shape}: expected (H, W), (N, H, W), '
                    f'(N, H, W, 1) or (N, H, W, 3), or a list of images'
                )
            if len(array) == 0:
                raise SegmenterError('no images to segment (N = 0)')
            return [self._channels(_as_unit_float(a, i), i) for i, a in enumerate(array)], False, True
        items = list(images)
        if not items:
            raise SegmenterError('no images to segment (empty list)')
        out = []
        for i, item in enumerate(items):
            a = np.asarray(item)
            if a.ndim == 2:
                a = a[..., None]
            if a.ndim != 3 or a.shape[-1] not in (1, 3):
                raise SegmenterError(
                    f'image {i} of shape {np.shape(item)}: expected (H, W), (H, W, 1) or (H, W, 3)'
                )
            out.append(self._channels(_as_unit_float(a, i), i))
        return out, False, False

    def _channels(self, image: np.ndarray, index: int) -> np.ndarray:
        if image.shape[0] < 1 or image.shape[1] < 1:
            raise SegmenterError(f'image {index} has shape {image.shape}: no pixels')
        if image.shape[-1] == self.channels:
            return image
        if self.channels == 1:  # colour → luminance, as the training pipeline does
            return (image @ np.asarray([0.299, 0.587, 0.114], np.float32))[..., None]
        return np.repeat(image, 3, axis=-1)

    def _prepare(self, image: np.ndarray, scale: float, minimum: int, multiple: int) -> tuple:
        """Resized, uint8-quantised (as in training) image, mirror-padded to at least
        ``minimum`` px and a multiple of ``multiple`` px on each side."""
        height, width = image.shape[:2]
        h, w = max(1, round(height * scale)), max(1, round(width * scale))
        resized = _resize(image, h, w)
        if resized.ndim == 2:
            resized = resized[..., None]
        pad_h = max(minimum, -(-h // multiple) * multiple)
        pad_w = max(minimum, -(-w // multiple) * multiple)
        pixels = np.clip(np.rint(resized * 255.0), 0, 255).astype(np.uint8)
        padded = np.pad(pixels, ((0, pad_h - h), (0, pad_w - w), (0, 0)), mode='symmetric')
        return padded, (h, w)

    def predict(
        self,
        images,
        *,
        scale: float | None = None,
        mode: str = 'tiled',
        batch_size: int = 8,
        progress: bool | None = None,
        flips: bool = False,
    ):
        """Probabilities at each image's own size.

        Args:
            images: (H, W), (N, H, W), (N, H, W, 1|3) or a list of (H, W[, 1|3]) arrays of any
                sizes; uint8, uint16 or float in [0, 1].
            scale: training px per image px; None uses ``pixel_scale`` (1 = native pixels).
            mode: 'tiled' (fixed ``resolution`` tiles, blended) or 'whole' (one pass per image).
            batch_size: tiles per device call.
            progress: show a progress bar; None shows one for many images.
            flips: test-time augmentation: the mean of the predictions of the 8 flips and
                quarter turns of each image, each turned back (8x the compute). Makes the
                prediction exactly equivariant to them.

        Returns:
            float32 probabilities (…, H, W) (binary) or (…, H, W, C), shaped like the input:
            an array for an array input, a list for a list.
        """
        if mode not in ('tiled', 'whole'):
            raise SegmenterError(f"mode={mode!r}: expected 'tiled' or 'whole'")
        if not is_count(batch_size):
            raise SegmenterError(f'batch_size={batch_size!r}: expected a positive integer')
        scale = self.pixel_scale if scale is None else float(scale)
        if not np.isfinite(scale) or scale <= 0:
            raise SegmenterError(f'scale={scale!r}: expected a positive number')
        items, single, as_array = self._checked(images)
        show = len(items) > _PROGRESS_MIN_IMAGES if progress is None else bool(progress)
        views = range(len(DIHEDRAL)) if flips else range(1)
        outputs = [0.0] * len(items)
        with tqdm(total=len(items) * len(views), desc='segment', unit='img', disable=not show) as bar:
            for view in views:
                probs = self._predict_items([dihedral(x, view) for x in items], scale, mode, batch_size, bar)
                for i, prob in enumerate(probs):
                    outputs[i] = outputs[i] + dihedral(prob, view, inverse=True)
        if flips:
            outputs = [o / len(views) for o in outputs]
        if single:
            return outputs[0]
        if as_array and len({o.shape for o in outputs}) == 1:
            return np.stack(outputs)
        return outputs

    def _predict_items(self, items, scale, mode, batch_size, bar) -> list[np.ndarray]:
        outputs = [None] * len(items)
        if mode == 'whole':
            for i, image in enumerate(items):
                padded, (h, w) = self._prepare(image, scale, DOWNSAMPLING, DOWNSAMPLING)
                prob = np.asarray(self._forward(self.variables, padded[None]))[0]
                outputs[i] = self._finish(prob[:h, :w], image.shape[:2])
                bar.update(1)
        else:
            self._predict_tiled(items, scale, batch_size, outputs, bar)
        return outputs

    def _finish(self, prob: np.ndarray, size: tuple[int, int]) -> np.ndarray:
        prob = _resize(np.asarray(prob, np.float32), *size)
        if prob.ndim == 3:  # renormalise class probabilities after interpolation
            prob = prob / np.maximum(prob.sum(-1, keepdims=True), 1e-12)
        return prob

    def _predict_tiled(self, items, scale, batch_size, outputs, bar) -> None:
        tile = self.resolution
        stride = tile_stride(tile, int(round(self.tile_overlap * tile)))
        overlap = tile - stride  # what the 32-px grid actually gives
        channel_shape = () if self.num_classes == 1 else (self.num_classes,)
        open_images, queue = {}, []

        def flush(count: int) -> None:
            batch = queue[:count]
            del queue[:count]
            tiles = np.stack([open_images[i]['padded'][y : y + tile, x : x + tile] for i, y, x, _ in batch])
            if len(tiles) < batch_size:  # one compiled shape
                tiles = np.concatenate(
                    [tiles, np.zeros((batch_size - len(tiles), *tiles.shape[1:]), np.uint8)]
                )
            probs = np.asarray(self._forward(self.variables, tiles))
            for (i, y, x, weight), prob in zip(batch, probs[: len(batch)], strict=True):
                entry = open_images[i]
                entry['sum'][y : y + tile, x : x + tile] += prob * (
                    weight if prob.ndim == 2 else weight[..., None]
                )
                entry['weight'][y : y + tile, x : x + tile] += weight
                entry['left'] -= 1
                if entry['left'] == 0:
                    h, w = entry['size']
                    total = entry['weight'][:h, :w]
                    prob_map = entry['sum'][:h, :w] / (total if prob.ndim == 2 else total[..., None])
                    outputs[i] = self._finish(prob_map, items[i].shape[:2])
                    del open_images[i]
                    bar.update(1)

        for i, image in enumerate(items):
            # The same padding as a whole-image pass: a multiple of 32, at least one tile.
            padded, size = self._prepare(image, scale, tile, DOWNSAMPLING)
            ys = tile_starts(padded.shape[0], tile, overlap)
            xs = tile_starts(padded.shape[1], tile, overlap)
            open_images[i] = {
                'padded': padded,
                'size': size,
                'left': len(ys) * len(xs),
                'sum': np.zeros(padded.shape[:2] + channel_shape, np.float32),
                'weight': np.zeros(padded.shape[:2], np.float32),
            }
            wy = [blend_weights(tile, overlap, a == 0, a == ys[-1]) for a in ys]
            wx = [blend_weights(tile, overlap, b == 0, b == xs[-1]) for b in xs]
            queue.extend(
                (i, y, x, np.outer(wy[a], wx[b])) for a, y in enumerate(ys) for b, x in enumerate(xs)
            )
            while len(queue) >= batch_size:
                flush(batch_size)
        while queue:
            flush(min(batch_size, len(queue)))

    def predict_masks(self, images, **kwargs):
        """uint8 masks: ``probability >= threshold`` (binary) or the most probable class.

        Takes the arguments of :meth:`predict`.
        """
        probs = self.predict(images, **kwargs)
        to_mask = (
            (lambda p: (p >= self.threshold).astype(np.uint8))
            if self.num_classes == 1
            else (lambda p: np.argmax(p, axis=-1).astype(np.uint8))
        )
        if isinstance(probs, list):
            return [to_mask(p) for p in probs]
        return to_mask(probs)

    # ---- files ------------------------------------------------------------------------
    def meta(self) -> dict:
        """What ``segmenter.json`` holds (besides where the encoder's arrays are)."""
        return {
            'format': FORMAT,
            'encoder_config': self.encoder_config,
            'decoder': self.decoder,
            'num_classes': self.num_classes,
            'resolution': self.resolution,
            'channels': self.channels,
            'pixel_scale': self.pixel_scale,
            'threshold': self.threshold,
            'tile_overlap': self.tile_overlap,
            'dtype': self.dtype,
            'decoder_width': self.decoder_width,
            'encoder_features': self.encoder_features,
            'info': self.info,
        }

    def save(self, path: str | os.PathLike, shared_encoder: str | os.PathLike | None = None) -> Path:
        """Writes the segmenter to the folder ``path`` (created; files replaced).

        Args:
            path: destination folder.
            shared_encoder: an ``encoder.msgpack`` written by :func:`save_encoder_arrays` to
                refer to instead of writing a copy (kept as a path relative to ``path``).
        """
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        host = jax.device_get(self.variables)
        decoder = {c: host[c].get('decoder', {}) for c in ('params', 'batch_stats')}
        _write_atomic(path / DECODER_FILE, serialization.msgpack_serialize(_plain(decoder)))
        if shared_encoder is None:
            save_encoder_arrays(
                path / ENCODER_FILE, {c: host[c]['encoder'] for c in ('params', 'batch_stats')}
            )
            encoder_ref = ENCODER_FILE
        else:
            encoder_ref = os.path.relpath(Path(shared_encoder).absolute(), path.absolute())
        # Checked on load: a damaged file is an error naming it, never wrong masks.
        digests = {name: integrity.sha256_file(path / name) for name in (DECODER_FILE, encoder_ref)}
        meta = integrity.seal({**self.meta(), 'encoder_file': encoder_ref, 'sha256': digests})
        _write_atomic(path / META_FILE, json.dumps(meta, indent=2).encode())
        return path


def _plain(tree):
    """Nested dicts of numpy arrays (what msgpack serialises)."""
    if isinstance(tree, Mapping):
        return {k: _plain(v) for k, v in tree.items()}
    return np.asarray(tree)


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + '.tmp')
    tmp.write_bytes(data)
    os.replace(tmp, path)


def save_encoder_arrays(path: str | os.PathLike, variables: Mapping) -> Path:
    """Writes an encoder's ``{'params', 'batch_stats'}`` to one msgpack file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _write_atomic(path, serialization.msgpack_serialize(_plain(jax.device_get(dict(variables)))))
    return path


def _read_msgpack(path: Path, what: str, redo: str) -> dict:
    if not path.is_file():
        raise SegmenterError(f'{path} not found: the {what} of this segmenter is missing')
    return saved.decode_msgpack(path, what, redo)


def _resolve(path: Path, run: str | None) -> Path:
    """The folder holding ``segmenter.json`` that ``path`` (and ``run``) name."""
    if (path / META_FILE).is_file() and run is None:
        return path
    if (path / 'segment').is_dir() and not (path / SUMMARY_FILE).is_file():
        return _resolve(path / 'segment', run)
    runs = path / 'runs'
    if run is not None:
        candidate = runs / run / 'model'
        if not (candidate / META_FILE).is_file():
            present = sorted(p.name for p in runs.iterdir()) if runs.is_dir() else []
            raise SegmenterError(
                f'{path}: no finished segmentation run {run!r} (finished or started runs: {present})'
            )
        return candidate
    summary = path / SUMMARY_FILE
    if summary.is_file():
        default = json.loads(summary.read_text()).get('default_model')
        if default and (path / default / META_FILE).is_file():
            return path / default
    raise SegmenterError(
        f'{path} holds no segmenter: expected {META_FILE} (a saved segmenter) '
        f'or a segmentation stage folder with {SUMMARY_FILE} and runs/'
    )


def load_segmenter(path: str | os.PathLike, run: str | None = None) -> Segmenter:
    """Opens a saved segmenter.

    Args:
        path: a folder written by :meth:`Segmenter.save`, a segmentation stage folder
            (``workdir/segment``: its default model, named in ``summary.json``), or a workdir
            that holds one.
        run: with a stage folder, the run to open (a folder name under ``runs/``, e.g.
            ``'pretrained_256px_k8'``).

    Raises:
        SegmenterError: nothing loadable there (names what was looked for).
    """
    folder = _resolve(Path(path), run)
    redo = saved.redo_hint(folder)
    meta = saved.read_meta(folder / META_FILE, redo)
    if meta.get('format') != FORMAT:
        raise SegmenterError(
            f'{folder / META_FILE}: format {meta.get("format")!r}; this fewshot_jax reads format {FORMAT}'
        )
    saved.verify_files(folder, (DECODER_FILE, meta['encoder_file']), meta, redo)
    decoder = _read_msgpack(folder / DECODER_FILE, 'decoder', redo)
    encoder = _read_msgpack(folder / meta['encoder_file'], 'encoder', redo)
    variables = {c: {'encoder': encoder[c], 'decoder': decoder.get(c, {})} for c in ('params', 'batch_stats')}
    return Segmenter(
        jax.device_put(jax.tree.map(jnp.asarray, variables)),
        meta['encoder_config'],
        decoder=meta['decoder'],
        num_classes=meta['num_classes'],
        resolution=meta['resolution'],
        channels=meta['channels'],
        pixel_scale=meta['pixel_scale'],
        threshold=meta['threshold'],
        tile_overlap=meta['tile_overlap'],
        dtype=meta.get('dtype'),
        decoder_width=meta.get('decoder_width'),
        encoder_features=meta.get('encoder_features', True),
        info=meta.get('info'),
    )


__all__ = [
    'Segmenter',
    'SegmenterError',
    'load_segmenter',
    'save_encoder_arrays',
]
