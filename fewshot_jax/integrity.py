"""Checksums of the artefacts the project writes and later reads back.

The saved segmenter (``decoder.msgpack``, ``encoder.msgpack``), the exported encoder
(``encoder/variables``) and the feature cache record the sha256 of their bytes in their
JSON metadata when written; readers check it before use, so a flipped bit or a truncated
file is an error naming the file (or, for the cache, a recomputation), never wrong
numbers. Artefacts written before checksums were recorded still load, with a log line
saying they were not checked.
"""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path

log = logging.getLogger(__name__)

_CHUNK = 1 << 20


class IntegrityError(ValueError):
    """A file whose bytes differ from the checksum recorded when it was written."""


def sha256_file(path: str | os.PathLike) -> str:
    """The sha256 of one file's bytes, as hex."""
    digest = hashlib.sha256()
    with open(path, 'rb') as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def sha256_folder(folder: str | os.PathLike) -> str:
    """The sha256 of every file under ``folder``: relative paths and bytes, in sorted order.

    A file added, removed, renamed, truncated or changed anywhere in the folder changes it.
    """
    folder = Path(folder)
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob('*') if p.is_file()):
        digest.update(path.relative_to(folder).as_posix().encode() + b'\0')
        digest.update(sha256_file(path).encode())
    return digest.hexdigest()


def sha256_of(path: str | os.PathLike) -> str:
    """:func:`sha256_file` for a file, :func:`sha256_folder` for a folder."""
    return sha256_folder(path) if Path(path).is_dir() else sha256_file(path)


def verify(path: str | os.PathLike, recorded: str | None, *, what: str, regenerate: str) -> None:
    """Raises IntegrityError unless ``path`` still has the checksum recorded when it was written.

    Args:
        path: the file or folder to check.
        recorded: the sha256 from the artefact's metadata; None for an artefact written
            before checksums were recorded (loaded unchecked, with a log line).
        what: what the file is ('the decoder of a saved segmenter'), for the message.
        regenerate: how to write it again ('rerun the segment stage'), for the message.
    """
    path = Path(path)
    if recorded is None:
        log.warning('%s has no recorded checksum (written by an older version): loaded unchecked', path)
        return
    if not path.exists():
        raise IntegrityError(f'{path} is missing ({what}); {regenerate}')
    actual = sha256_of(path)
    if actual != recorded:
        raise IntegrityError(
            f'{path} is damaged ({what}: sha256 {actual[:12]}… differs from the {recorded[:12]}… '
            f'recorded when it was written); {regenerate}'
        )


SEAL = 'meta_sha256'


def _meta_digest(meta: dict) -> str:
    import json

    body = {k: v for k, v in meta.items() if k != SEAL}
    return hashlib.sha256(json.dumps(body, sort_keys=True, default=str).encode()).hexdigest()


def seal(meta: dict) -> dict:
    """``meta`` with the sha256 of its own content, so a changed value in the JSON is seen too."""
    return {**meta, SEAL: _meta_digest(meta)}


def check_seal(meta: dict, path: str | os.PathLike, *, regenerate: str) -> None:
    """Raises IntegrityError if a JSON metadata file's values differ from those it was sealed with.

    Metadata written before seals were recorded has none and is accepted (the files it
    names are still checked where it records their checksums).
    """
    if SEAL in meta and meta[SEAL] != _meta_digest(meta):
        raise IntegrityError(f'{path} is damaged (its values differ from those written); {regenerate}')
