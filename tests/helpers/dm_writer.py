"""A small Gatan DigitalMicrograph (.dm3 / .dm4) writer, for tests only.

rosettasciio reads dm files but cannot write them, so the tests build their
own from the publicly documented tag-file layout (Greg Jefferis' DM3 notes and
Chris Boothroyd's DM3/DM4 notes). It writes just enough of the tag tree for a
reader to find one image; it is not a general DM writer.

File layout (every header field, label length and info-array entry is
big-endian; only tag *values* follow the byte-order flag):

    header      version (4 bytes: 3 or 4)
                root length (DM3: 4 bytes, DM4: 8 bytes)
                byte order of tag values (4 bytes: 1 = little endian)
    root group  sorted flag (1 byte), open flag (1 byte), tag count (4 | 8)
                then the tag entries
    footer      8 zero bytes

    tag entry   type (1 byte: 20 = group, 21 = data)
                label length (2 bytes) and label (may be empty)
                DM4 only: byte count of the rest of the entry (8 bytes)
                group: sorted, open, tag count, entries (as the root)
                data:  '%%%%', info-array length n, n info-array entries,
                       then the value bytes
    (DM4 widens the tag count, info-array length and entries to 8 bytes.)

The info array describes the value: [code] for a simple value (2 short,
3 long, 4 ushort, 5 ulong, 6 float, 7 double, 8 bool, 9 char, 10 octet,
11 int64, 12 uint64), [20, element code, length] for an array of simple
values. DM stores text as an array of ushort (UTF-16 code units).

Values are always written little endian (flag 1), as DM on a PC writes them:
rosettasciio reads the pixel block with native little-endian numpy dtypes
whatever the flag says, so big-endian files would not round-trip anyway.
"""

from __future__ import annotations

import pathlib
import struct
from typing import NamedTuple

import numpy as np

GROUP_TAG = 20
DATA_TAG = 21
ARRAY_CODE = 20

# Tag-value type codes for the simple types, by the numpy dtype they hold.
TAG_CODE_BY_DTYPE = {
    np.dtype(np.int16): 2,
    np.dtype(np.int32): 3,
    np.dtype(np.uint16): 4,
    np.dtype(np.uint32): 5,
    np.dtype(np.float32): 6,
    np.dtype(np.float64): 7,
    np.dtype(np.bool_): 8,
    np.dtype(np.int8): 9,
    np.dtype(np.uint8): 10,
    np.dtype(np.int64): 11,
    np.dtype(np.uint64): 12,
}
DTYPE_BY_TAG_CODE = {code: dtype for dtype, code in TAG_CODE_BY_DTYPE.items()}

# ImageData.DataType: DM's pixel-type code (a different table from the
# tag-value codes above).
IMAGE_DATA_TYPE_BY_DTYPE = {
    np.dtype(np.int16): 1,
    np.dtype(np.float32): 2,
    np.dtype(np.uint8): 6,
    np.dtype(np.int32): 7,
    np.dtype(np.int8): 9,
    np.dtype(np.uint16): 10,
    np.dtype(np.uint32): 11,
    np.dtype(np.float64): 12,
    np.dtype(np.bool_): 14,
}
RGBA_THUMBNAIL_DATA_TYPE = 23  # 4 x uint8 per pixel, stored as ulong


class Scalar(NamedTuple):
    """A simple tag value with its explicit type code (3 = long, ...)."""

    code: int
    value: int | float | bool


def dm_long(value: int) -> Scalar:
    return Scalar(3, value)


def dm_ulong(value: int) -> Scalar:
    return Scalar(5, value)


def dm_float(value: float) -> Scalar:
    return Scalar(6, value)


def dm_bool(value: bool) -> Scalar:
    return Scalar(8, value)


# A tag tree: dict = group of named entries, list = group of unnamed entries
# (DM's lists such as ImageList), Scalar / str / 1-D ndarray = data tags.
TagValue = dict | list | Scalar | str | np.ndarray


def encode_tag_file(root: dict, version: int) -> bytes:
    """Encodes a tag tree as the bytes of a DM3 (version 3) or DM4 file."""
    if version not in (3, 4):
        raise ValueError(f'DM version must be 3 or 4, got {version!r}')
    body = _encode_group(root, version)
    footer = bytes(8)
    # Boothroyd's notes: the root length is the file length minus 16 (DM3)
    # or minus 24 (DM4). Readers do not rely on it.
    if version == 3:
        header_size = 12
        file_length = header_size + len(body) + len(footer)
        header = struct.pack('>iIi', 3, file_length - 16, 1)
    else:
        header_size = 16
        file_length = header_size + len(body) + len(footer)
        header = struct.pack('>iQi', 4, file_length - 24, 1)
    return header + body + footer


def _pack_count(value: int, version: int) -> bytes:
    """Tag counts, info-array lengths and entries: 4 bytes (DM3) or 8 (DM4)."""
    return struct.pack('>I' if version == 3 else '>Q', value)


def _encode_group(group: dict | list, version: int) -> bytes:
    entries = group.items() if isinstance(group, dict) else [('', v) for v in group]
    encoded = [_encode_entry(label, value, version) for label, value in entries]
    # Sorted = 1, open = 0: the flags DM itself writes; readers ignore them.
    return struct.pack('>BB', 1, 0) + _pack_count(len(encoded), version) + b''.join(encoded)


def _encode_entry(label: str, value: TagValue, version: int) -> bytes:
    label_bytes = label.encode('latin-1')
    if isinstance(value, (dict, list)):
        kind, rest = GROUP_TAG, _encode_group(value, version)
    else:
        kind, rest = DATA_TAG, b'%%%%' + _encode_data(value, label, version)
    head = struct.pack('>Bh', kind, len(label_bytes)) + label_bytes
    if version == 4:
        # DM4 puts the byte count of the rest of the entry after the label.
        head += struct.pack('>Q', len(rest))
    return head + rest


def _encode_data(value: TagValue, label: str, version: int) -> bytes:
    if isinstance(value, Scalar):
        if value.code not in DTYPE_BY_TAG_CODE:
            raise ValueError(f'tag {label!r}: unknown simple type code {value.code}')
        info = [value.code]
        payload = _little_endian(np.asarray(value.value, DTYPE_BY_TAG_CODE[value.code]))
    elif isinstance(value, str):
        # Text is an array of ushort UTF-16 code units (ushort code 4).
        units = np.frombuffer(value.encode('utf-16-le'), '<u2')
        info = [ARRAY_CODE, 4, units.size]
        payload = units.tobytes()
    elif isinstance(value, np.ndarray):
        if value.dtype not in TAG_CODE_BY_DTYPE:
            raise ValueError(f'tag {label!r}: no DM type code for dtype {value.dtype}')
        # Arrays are flat in the file; C order keeps rows of an image together.
        info = [ARRAY_CODE, TAG_CODE_BY_DTYPE[value.dtype], value.size]
        payload = _little_endian(value)
    else:
        raise TypeError(f'tag {label!r}: cannot encode {type(value).__name__} as a DM tag')
    info_bytes = _pack_count(len(info), version) + b''.join(_pack_count(i, version) for i in info)
    return info_bytes + payload


def _little_endian(values: np.ndarray) -> bytes:
    return np.ascontiguousarray(values, values.dtype.newbyteorder('<')).tobytes(order='C')


def image_group(data: np.ndarray, *, data_type: int, scale: float, units: str, name: str) -> dict:
    """The ImageList entry of one image: pixels, shape and calibrations.

    Dimensions and Calibrations.Dimension run fastest axis first (x, then y,
    then the frame axis), the reverse of numpy's C-order shape.
    """
    axes = data.shape[::-1]
    return {
        'ImageData': {
            'Calibrations': {
                'Brightness': {'Origin': dm_float(0.0), 'Scale': dm_float(1.0), 'Units': ''},
                'Dimension': [
                    {'Origin': dm_float(0.0), 'Scale': dm_float(scale), 'Units': units} for _ in axes
                ],
                'DisplayCalibratedUnits': dm_bool(True),
            },
            'Data': np.ravel(data, order='C'),
            'DataType': dm_long(data_type),
            'Dimensions': [dm_ulong(n) for n in axes],
            'PixelDepth': dm_long(data.dtype.itemsize),
        },
        'ImageTags': {},
        'Name': name,
    }


def build_tag_tree(image: np.ndarray, *, scale: float = 1.0, units: str = 'nm', name: str = 'image') -> dict:
    """The root tag group of a DM file holding `image` (2-D, or 3-D stack).

    As DM saves it, ImageList holds a small RGBA thumbnail first and the real
    image second, and the root Thumbnails group names the thumbnail's index
    so readers skip it.
    """
    image = np.asarray(image)
    if image.ndim not in (2, 3):
        raise ValueError(f'image must be 2-D (H, W) or 3-D (N, H, W), got shape {image.shape}')
    if image.dtype not in IMAGE_DATA_TYPE_BY_DTYPE:
        raise ValueError(
            f'image dtype {image.dtype} has no DM pixel type; expected one of '
            f'{", ".join(str(d) for d in IMAGE_DATA_TYPE_BY_DTYPE)}'
        )
    # A 3 x 5 thumbnail: a shape no test image has, so picking it is visible.
    thumbnail = np.full((3, 5), 0xFF808080, np.uint32)
    return {
        'ImageList': [
            image_group(thumbnail, data_type=RGBA_THUMBNAIL_DATA_TYPE, scale=1.0, units='', name='thumbnail'),
            image_group(
                image, data_type=IMAGE_DATA_TYPE_BY_DTYPE[image.dtype], scale=scale, units=units, name=name
            ),
        ],
        'Thumbnails': [{'ImageIndex': dm_long(0)}],
    }


def write_dm(
    path: str | pathlib.Path,
    image: np.ndarray,
    *,
    version: int | None = None,
    scale: float = 1.0,
    units: str = 'nm',
) -> pathlib.Path:
    """Writes `image` as a DM3 or DM4 file (version from the suffix by default).

    Args:
      path: The file to write; '.dm3' or '.dm4' picks the version.
      image: (H, W) image or (N, H, W) stack of a dtype DM supports.
      version: 3 or 4, overriding the suffix.
      scale: Calibrated size of one pixel on every axis.
      units: Unit of `scale`.

    Returns:
      The path written.
    """
    path = pathlib.Path(path)
    if version is None:
        suffix_versions = {'.dm3': 3, '.dm4': 4}
        if path.suffix.lower() not in suffix_versions:
            raise ValueError(f'{path}: expected a .dm3 or .dm4 suffix, or an explicit version')
        version = suffix_versions[path.suffix.lower()]
    tree = build_tag_tree(image, scale=scale, units=units, name=path.stem)
    path.write_bytes(encode_tag_file(tree, version))
    return path
