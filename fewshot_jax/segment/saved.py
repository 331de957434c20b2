"""A saved segmenter's files checked before use: damaged bytes are an error naming the file.

``Segmenter.save`` records the sha256 of ``decoder.msgpack`` and of the encoder's file in
``segmenter.json``; :func:`verify_files` checks them on load. A truncated or bit-flipped
``segmenter.json`` or msgpack file is an ``IntegrityError`` naming the file and how to
write it again, never a traceback from the decoder or a segmenter predicting wrong masks.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from flax import serialization

from fewshot_jax.integrity import IntegrityError, check_seal, verify

# segmenter.json fields every load needs (a truncated or hand-edited file lacks some).
META_KEYS = ('encoder_file', 'encoder_config', 'decoder', 'num_classes', 'resolution')
META_KEYS += ('channels', 'pixel_scale', 'threshold', 'tile_overlap')


def redo_hint(folder: Path) -> str:
    """How to write a damaged segmenter again (the end of every error about its files)."""
    return f'rerun the segmentation that wrote {folder} to write it again (workflow: --config.force=segment)'


def read_meta(path: Path, redo: str) -> dict:
    """``segmenter.json`` as a dict; IntegrityError if it is not the JSON that save wrote."""
    try:
        meta = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise IntegrityError(f'{path} is damaged (not valid JSON: {err}); {redo}') from None
    if not isinstance(meta, dict):
        raise IntegrityError(f'{path} is damaged (expected a JSON object); {redo}')
    check_seal(meta, path, regenerate=redo)
    missing = [key for key in META_KEYS if key not in meta]
    if missing and 'format' in meta:
        raise IntegrityError(f'{path} is damaged (no {", ".join(missing)}); {redo}')
    return meta


def verify_files(folder: Path, names: Sequence[str], meta: dict, redo: str) -> None:
    """Checks each present file against the checksum ``segmenter.json`` recorded for it.

    Files missing on disk are left to the reader, which names what is missing.
    """
    digests = meta.get('sha256') or {}
    for name in names:
        if (folder / name).is_file():
            what = 'the decoder' if name == 'decoder.msgpack' else 'the encoder'
            verify(folder / name, digests.get(name), what=f'{what} of a saved segmenter', regenerate=redo)


def decode_msgpack(path: Path, what: str, redo: str) -> dict:
    """A msgpack file of arrays as nested dicts; IntegrityError if its bytes do not decode."""
    try:
        tree = serialization.msgpack_restore(path.read_bytes())
    except Exception as err:  # noqa: BLE001 - msgpack raises several types for damaged bytes
        raise IntegrityError(f'{path} is damaged (the {what} does not decode: {err}); {redo}') from None
    if not isinstance(tree, dict):
        raise IntegrityError(f'{path} is damaged (the {what} is not a tree of arrays); {redo}')
    return tree
