"""read_image on valid Gatan .dm3 / .dm4 files written by tests/helpers/dm_writer.py."""

import struct

import numpy as np
import pytest

from fewshot_jax.data.io import read_image
from tests.helpers.dm_writer import dm_long, encode_tag_file, write_dm

pytest.importorskip('rsciio')

VERSIONS = ['.dm3', '.dm4']


def _uint16_image():
    # Spans most of the 16-bit range, so dividing by 65535 differs visibly
    # from min-max scaling.
    rows, cols = 6, 9
    return np.array([[(r * cols + c) * 1201 + 17 for c in range(cols)] for r in range(rows)], np.uint16)


def _float32_image():
    rows, cols = 5, 7
    return np.array(
        [[(r - 2.5) * 0.75 + c * c * 0.125 for c in range(cols)] for r in range(rows)], np.float32
    )


def _scaled_reference(values, low, high):
    out = np.zeros(values.shape, np.float64)
    for idx, v in np.ndenumerate(values):
        out[idx] = (float(v) - low) / (high - low)
    return out


@pytest.mark.parametrize('suffix', VERSIONS)
def test_uint16_dm_without_percentiles_divides_by_65535(tmp_path, suffix):
    pixels = _uint16_image()
    path = write_dm(tmp_path / f'frame{suffix}', pixels)
    image = read_image(path, percentiles=None)
    assert image.dtype == np.float32
    # Shape (6, 9), not the writer's (3, 5) thumbnail stored first.
    assert image.shape == pixels.shape
    np.testing.assert_allclose(image, _scaled_reference(pixels, 0.0, 65535.0), atol=1e-6)


@pytest.mark.parametrize('suffix', VERSIONS)
def test_float32_dm_without_percentiles_scales_min_to_max(tmp_path, suffix):
    pixels = _float32_image()
    path = write_dm(tmp_path / f'frame{suffix}', pixels)
    image = read_image(path, percentiles=None)
    low = min(float(v) for v in pixels.ravel())
    high = max(float(v) for v in pixels.ravel())
    assert image.shape == pixels.shape
    np.testing.assert_allclose(image, _scaled_reference(pixels, low, high), atol=1e-6)


def _percentile(values, pct):
    """Linear interpolation between closest ranks, numpy's default method."""
    flat = sorted(float(v) for v in np.ravel(values))
    rank = pct / 100 * (len(flat) - 1)
    below = int(rank)
    above = min(below + 1, len(flat) - 1)
    return flat[below] + (rank - below) * (flat[above] - flat[below])


@pytest.mark.parametrize('suffix', VERSIONS)
def test_dm_default_percentiles_span_0_to_1(tmp_path, suffix):
    pixels = _uint16_image()
    pixels[0, 0] = 65535  # a hot pixel, beyond the 99.5th percentile
    pixels[1, 1] = 0  # a dead pixel, below the 0.5th
    image = read_image(write_dm(tmp_path / f'frame{suffix}', pixels))
    assert image.shape == pixels.shape
    assert image.min() == 0.0 and image.max() == 1.0
    low, high = _percentile(pixels, 0.5), _percentile(pixels, 99.5)
    expected = np.clip(_scaled_reference(pixels, low, high), 0.0, 1.0)
    np.testing.assert_allclose(image, expected, atol=1e-6)


def test_dm4_stack_reads_first_frame_or_all(tmp_path):
    stack = np.stack([_uint16_image(), _uint16_image()[::-1]])
    path = write_dm(tmp_path / 'stack.dm4', stack)
    every = read_image(path, frames='all', percentiles=None)
    np.testing.assert_allclose(every, _scaled_reference(stack, 0.0, 65535.0), atol=1e-6)
    first = read_image(path, percentiles=None)
    np.testing.assert_allclose(first, every[0])


@pytest.mark.parametrize('suffix', VERSIONS)
def test_writer_calibration_round_trips_through_rosettasciio(tmp_path, suffix):
    # Checks the helper itself: every tag the reader uses comes back as written.
    from rsciio.digitalmicrograph import file_reader

    pixels = _float32_image()
    signals = file_reader(str(write_dm(tmp_path / f'cal{suffix}', pixels, scale=0.25, units='nm')))
    assert len(signals) == 1  # the thumbnail is skipped
    np.testing.assert_array_equal(signals[0]['data'], pixels)
    assert [(a['size'], a['scale'], a['units']) for a in signals[0]['axes']] == [
        (5, 0.25, 'nm'),
        (7, 0.25, 'nm'),
    ]
    assert signals[0]['metadata']['General']['title'] == 'cal'


def test_encoded_bytes_match_the_documented_layout():
    tree = {'A': dm_long(7)}
    root_dm3 = (
        bytes([1, 0])
        + struct.pack('>I', 1)  # sorted, open, 1 tag
        + bytes([21])
        + struct.pack('>h', 1)
        + b'A'  # data tag labelled 'A'
        + b'%%%%'
        + struct.pack('>II', 1, 3)  # info array: [long]
        + struct.pack('<i', 7)  # the value, little endian
    )
    file_length = 12 + len(root_dm3) + 8
    # version, root length (file length - 16), little-endian flag; 8-byte footer
    assert encode_tag_file(tree, 3) == (struct.pack('>iIi', 3, file_length - 16, 1) + root_dm3 + bytes(8))
    rest = b'%%%%' + struct.pack('>QQ', 1, 3) + struct.pack('<i', 7)
    root_dm4 = (
        bytes([1, 0])
        + struct.pack('>Q', 1)
        + bytes([21])
        + struct.pack('>h', 1)
        + b'A'
        + struct.pack('>Q', len(rest))
        + rest  # DM4: byte count of the entry's rest
    )
    file_length = 16 + len(root_dm4) + 8
    assert encode_tag_file(tree, 4) == (struct.pack('>iQi', 4, file_length - 24, 1) + root_dm4 + bytes(8))


def test_writer_rejects_unsupported_images(tmp_path):
    with pytest.raises(ValueError, match=r'dtype complex64 has no DM pixel type'):
        write_dm(tmp_path / 'c.dm3', np.zeros((4, 4), np.complex64))
    with pytest.raises(ValueError, match=r'must be 2-D .* got shape \(4,\)'):
        write_dm(tmp_path / 'v.dm3', np.zeros(4, np.uint16))
