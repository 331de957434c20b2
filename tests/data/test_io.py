"""Tests for fewshot_jax.data.io on real files written to tmp_path."""

import re

import numpy as np
import pytest
import tifffile
from PIL import Image

from fewshot_jax.data.io import DataError, read_image, read_mask


def _gradient(h=16, w=20):
    return (np.arange(h * w).reshape(h, w) % 256).astype(np.uint8)


def _luma_reference(rgb):
    """BT.601 luminance written out per pixel."""
    out = np.zeros(rgb.shape[:2], np.float64)
    for i in range(rgb.shape[0]):
        for j in range(rgb.shape[1]):
            r, g, b = (float(v) for v in rgb[i, j, :3])
            out[i, j] = 0.299 * r + 0.587 * g + 0.114 * b
    return out


def _percentile_scale_reference(values, low_pct, high_pct):
    flat = sorted(float(v) for v in np.ravel(values))
    low, high = np.percentile(flat, [low_pct, high_pct])
    out = np.zeros(np.shape(values), np.float64)
    for idx, v in np.ndenumerate(values):
        out[idx] = min(1.0, max(0.0, (float(v) - low) / (high - low)))
    return out


@pytest.mark.parametrize('suffix', ['.png', '.bmp', '.tif'])
def test_8bit_lossless_formats_divide_by_255(tmp_path, suffix):
    pixels = _gradient()
    path = tmp_path / f'img{suffix}'
    if suffix == '.tif':
        tifffile.imwrite(path, pixels)
    else:
        Image.fromarray(pixels).save(path)
    image = read_image(path)
    assert image.dtype == np.float32 and image.shape == pixels.shape
    np.testing.assert_allclose(image, pixels / 255.0, atol=1e-6)


def test_jpg_grayscale_is_close_to_source(tmp_path):
    pixels = np.full((16, 16), 100, np.uint8)
    Image.fromarray(pixels).save(tmp_path / 'a.jpg', quality=95)
    image = read_image(tmp_path / 'a.jpg')
    assert image.shape == (16, 16)
    np.testing.assert_allclose(image, 100 / 255.0, atol=2 / 255.0)


def test_uppercase_extension_is_read(tmp_path):
    Image.fromarray(_gradient()).save(tmp_path / 'A.PNG', format='PNG')
    assert read_image(tmp_path / 'A.PNG').shape == (16, 20)


def test_rgba_png_becomes_luminance_and_alpha_is_ignored(tmp_path):
    rng = np.random.default_rng(0)
    rgba = rng.integers(0, 256, size=(6, 7, 4), dtype=np.uint8)
    Image.fromarray(rgba, mode='RGBA').save(tmp_path / 'a.png')
    image = read_image(tmp_path / 'a.png')
    assert image.shape == (6, 7)
    np.testing.assert_allclose(image, _luma_reference(rgba) / 255.0, atol=1e-5)


def test_keep_color_returns_three_channels(tmp_path):
    rgb = np.random.default_rng(1).integers(0, 256, size=(5, 6, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / 'a.png')
    image = read_image(tmp_path / 'a.png', keep_color=True)
    assert image.shape == (5, 6, 3)
    np.testing.assert_allclose(image, rgb / 255.0, atol=1e-6)
    Image.fromarray(_gradient()).save(tmp_path / 'gray.png')
    assert read_image(tmp_path / 'gray.png', keep_color=True).shape == (16, 20)


def test_16bit_tif_scaled_by_percentiles(tmp_path):
    rng = np.random.default_rng(2)
    pixels = rng.integers(1000, 5000, size=(12, 10)).astype(np.uint16)
    pixels[0, 0] = 65535  # a hot pixel must not flatten the contrast
    tifffile.imwrite(tmp_path / 'a.tif', pixels)
    image = read_image(tmp_path / 'a.tif', percentiles=(1.0, 99.0))
    np.testing.assert_allclose(image, _percentile_scale_reference(pixels, 1.0, 99.0), atol=1e-5)
    assert image.min() == 0.0 and image.max() == 1.0


def test_16bit_png_and_dtype_range_without_percentiles(tmp_path):
    pixels = (np.arange(80).reshape(8, 10) * 800).astype(np.uint16)
    Image.fromarray(pixels).save(tmp_path / 'a.png')
    tifffile.imwrite(tmp_path / 'a.tif', pixels)
    from_png = read_image(tmp_path / 'a.png', percentiles=None)
    from_tif = read_image(tmp_path / 'a.tif', percentiles=None)
    np.testing.assert_allclose(from_png, pixels / 65535.0, atol=1e-6)
    np.testing.assert_allclose(from_tif, pixels / 65535.0, atol=1e-6)


def test_float_tif_min_max_and_constant_image(tmp_path):
    values = np.linspace(-3.0, 5.0, 40, dtype=np.float32).reshape(5, 8)
    tifffile.imwrite(tmp_path / 'f.tif', values)
    image = read_image(tmp_path / 'f.tif', percentiles=(0, 100))
    np.testing.assert_allclose(image, (values + 3.0) / 8.0, atol=1e-6)
    tifffile.imwrite(tmp_path / 'c.tif', np.full((4, 4), 7.0, np.float32))
    np.testing.assert_array_equal(read_image(tmp_path / 'c.tif'), np.zeros((4, 4)))


def test_nan_in_float_tif_is_an_error(tmp_path):
    values = np.ones((4, 4), np.float32)
    values[1, 2] = np.nan
    tifffile.imwrite(tmp_path / 'nan.tif', values)
    with pytest.raises(DataError, match=r'nan\.tif.*1 non-finite'):
        read_image(tmp_path / 'nan.tif')


def test_multiframe_tif_first_or_all_frames(tmp_path):
    stack = np.stack([np.full((6, 6), v, np.uint8) for v in (10, 20, 30)])
    tifffile.imwrite(tmp_path / 'stack.tif', stack, photometric='minisblack')
    first = read_image(tmp_path / 'stack.tif')
    every = read_image(tmp_path / 'stack.tif', frames='all')
    assert first.shape == (6, 6) and every.shape == (3, 6, 6)
    np.testing.assert_allclose(first, 10 / 255.0)
    np.testing.assert_allclose(every[:, 0, 0], np.array([10, 20, 30]) / 255.0)
    assert read_image(tmp_path / 'stack.tif', frames='all').flags['C_CONTIGUOUS']


def test_multiframe_gif_all_frames(tmp_path):
    frames = [Image.fromarray(np.full((5, 5), v, np.uint8)) for v in (0, 128, 255)]
    frames[0].save(tmp_path / 'a.gif', save_all=True, append_images=frames[1:])
    every = read_image(tmp_path / 'a.gif', frames='all')
    assert every.shape == (3, 5, 5)
    np.testing.assert_allclose(every[:, 2, 2], [0.0, 128 / 255.0, 1.0], atol=1e-6)


def test_rgb_tif_becomes_luminance(tmp_path):
    rgb = np.random.default_rng(3).integers(0, 256, size=(4, 5, 3), dtype=np.uint8)
    tifffile.imwrite(tmp_path / 'rgb.tif', rgb, photometric='rgb')
    np.testing.assert_allclose(read_image(tmp_path / 'rgb.tif'), _luma_reference(rgb) / 255.0, atol=1e-5)


# --- bad input: every error names the file and the reason ---


def test_missing_file(tmp_path):
    with pytest.raises(DataError, match=r'nope\.png: file does not exist'):
        read_image(tmp_path / 'nope.png')


def test_zero_byte_file(tmp_path):
    (tmp_path / 'empty.png').write_bytes(b'')
    with pytest.raises(DataError, match=r'empty\.png: file is empty'):
        read_image(tmp_path / 'empty.png')


def test_text_file_named_jpg(tmp_path):
    (tmp_path / 'notes.jpg').write_text('this is not an image\n')
    with pytest.raises(DataError, match=r'notes\.jpg: not a readable JPG'):
        read_image(tmp_path / 'notes.jpg')


def test_truncated_png(tmp_path):
    Image.fromarray(np.random.default_rng(4).integers(0, 256, (64, 64), np.uint8)).save(tmp_path / 'full.png')
    data = (tmp_path / 'full.png').read_bytes()
    (tmp_path / 'cut.png').write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match=r'cut\.png: cannot decode PNG.*truncated'):
        read_image(tmp_path / 'cut.png')


def test_truncated_tif(tmp_path):
    tifffile.imwrite(tmp_path / 'full.tif', np.ones((64, 64), np.uint16))
    data = (tmp_path / 'full.tif').read_bytes()
    (tmp_path / 'cut.tif').write_bytes(data[:100])
    with pytest.raises(DataError, match=r'cut\.tif: cannot decode TIFF'):
        read_image(tmp_path / 'cut.tif')


def test_one_by_one_image(tmp_path):
    Image.fromarray(np.zeros((1, 1), np.uint8)).save(tmp_path / 'dot.png')
    with pytest.raises(DataError, match=r'dot\.png: image is 1x1 pixels; expected at least 2x2'):
        read_image(tmp_path / 'dot.png')


def test_image_over_pixel_limit(tmp_path):
    Image.fromarray(np.zeros((40, 50), np.uint8)).save(tmp_path / 'big.png')
    tifffile.imwrite(tmp_path / 'big.tif', np.zeros((40, 50), np.uint16))
    for name in ('big.png', 'big.tif'):
        with pytest.raises(
            DataError,
            match=re.escape(name) + r': 40x50 pixels '
            r'exceeds max_pixels=1999',
        ):
            read_image(tmp_path / name, max_pixels=1999)
        assert read_image(tmp_path / name, max_pixels=2000).shape == (40, 50)


def test_pixel_limit_counts_all_frames(tmp_path):
    tifffile.imwrite(tmp_path / 's.tif', np.zeros((3, 10, 10), np.uint8), photometric='minisblack')
    assert read_image(tmp_path / 's.tif', max_pixels=100).shape == (10, 10)
    with pytest.raises(DataError, match=r'10x10 pixels x 3 frames exceeds max_pixels=299'):
        read_image(tmp_path / 's.tif', frames='all', max_pixels=299)


def test_unknown_extension_and_bad_options(tmp_path):
    (tmp_path / 'a.xyz').write_bytes(b'123')
    with pytest.raises(DataError, match=r"a\.xyz: unsupported extension '\.xyz'"):
        read_image(tmp_path / 'a.xyz')
    Image.fromarray(_gradient()).save(tmp_path / 'a.png')
    with pytest.raises(DataError, match='frames must be'):
        read_image(tmp_path / 'a.png', frames='last')
    with pytest.raises(DataError, match='percentiles must be'):
        read_image(tmp_path / 'a.png', percentiles=(90, 10))


@pytest.mark.parametrize('suffix', ['.dm3', '.dm4', '.mrc', '.emd', '.ser'])
def test_tem_formats_without_rosettasciio_name_the_extra(tmp_path, suffix):
    try:
        import rsciio  # noqa: F401

        pytest.skip('rosettasciio is installed')
    except ImportError:
        pass
    (tmp_path / f'scan{suffix}').write_bytes(b'\x00' * 64)
    with pytest.raises(DataError, match=r'scan\.\w+: reading .* needs rosettasciio.*\[tem\]'):
        read_image(tmp_path / f'scan{suffix}')


def test_mrc_with_rosettasciio(tmp_path):
    pytest.importorskip('rsciio')
    mrcfile = pytest.importorskip('mrcfile')
    values = np.arange(48, dtype=np.float32).reshape(6, 8)
    with mrcfile.new(tmp_path / 'a.mrc') as mrc:
        mrc.set_data(values)
    image = read_image(tmp_path / 'a.mrc', percentiles=(0, 100))
    np.testing.assert_allclose(image, values / 47.0, atol=1e-6)


def test_emd_stack_written_by_rosettasciio(tmp_path):
    emd = pytest.importorskip('rsciio.emd')
    data = np.arange(3 * 6 * 8, dtype=np.uint16).reshape(3, 6, 8)
    axes = [
        dict(name=name, size=size, offset=0.0, scale=1.0, units='nm', navigate=navigate, index_in_array=i)
        for i, (name, size, navigate) in enumerate([('t', 3, True), ('y', 6, False), ('x', 8, False)])
    ]
    emd.file_writer(
        str(tmp_path / 'stack.emd'),
        dict(
            data=data,
            axes=axes,
            original_metadata={},
            metadata={'General': {'title': 'stack'}, 'Signal': {'signal_type': ''}},
        ),
    )
    every = read_image(tmp_path / 'stack.emd', frames='all', percentiles=None)
    np.testing.assert_allclose(every, data / 65535.0, atol=1e-7)
    assert read_image(tmp_path / 'stack.emd').shape == (6, 8)


def test_corrupt_dm4_with_rosettasciio(tmp_path):
    pytest.importorskip('rsciio.digitalmicrograph')
    (tmp_path / 'bad.dm4').write_bytes(b'garbage' * 20)
    with pytest.raises(DataError, match=r'bad\.dm4: cannot decode \.dm4 file'):
        read_image(tmp_path / 'bad.dm4')


# --- masks ---


def test_binary_mask_values_0_1_and_255(tmp_path):
    mask = np.zeros((6, 6), np.uint8)
    mask[1:3, 2:5] = 255
    mask[4, 4] = 1
    Image.fromarray(mask).save(tmp_path / 'm.png')
    out = read_mask(tmp_path / 'm.png', expected_shape=(6, 6))
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out, (mask > 0).astype(np.uint8))


def test_mask_with_other_values(tmp_path):
    mask = np.zeros((6, 6), np.uint8)
    mask[2, 2] = 128
    Image.fromarray(mask).save(tmp_path / 'm.png')
    with pytest.raises(DataError, match=r'm\.png: mask has values other than 0, 1 and 255 \(128'):
        read_mask(tmp_path / 'm.png')


def test_mask_size_differs_from_image(tmp_path):
    Image.fromarray(np.zeros((6, 7), np.uint8)).save(tmp_path / 'm.png')
    with pytest.raises(DataError, match=r'm\.png: mask is 6x7 but its image img\.png is 8x8'):
        read_mask(tmp_path / 'm.png', expected_shape=(8, 8), image_path='img.png')


def test_color_overlay_mask(tmp_path):
    gray = np.random.default_rng(5).integers(0, 256, (8, 8), np.uint8)
    overlay = np.stack([gray, gray, gray], axis=-1)
    overlay[2:4, 1:6] = (20, 40, 230)  # blue annotation over the micrograph
    Image.fromarray(overlay).save(tmp_path / 'o.png')
    expected = np.zeros((8, 8), np.uint8)
    expected[2:4, 1:6] = 1
    np.testing.assert_array_equal(read_mask(tmp_path / 'o.png', encoding='color_overlay'), expected)
    np.testing.assert_array_equal(read_mask(tmp_path / 'o.png', encoding='auto'), expected)
    with pytest.raises(DataError, match=r'o\.png: binary mask has differing colour channels'):
        read_mask(tmp_path / 'o.png')


def test_mask_as_jpg_is_refused(tmp_path):
    Image.fromarray(np.zeros((6, 6), np.uint8)).save(tmp_path / 'm.jpg')
    with pytest.raises(DataError, match=r'm\.jpg: masks must be lossless'):
        read_mask(tmp_path / 'm.jpg')


def test_planar_rgb_tif_becomes_luminance(tmp_path):
    rgb = np.random.default_rng(6).integers(0, 256, size=(4, 5, 3), dtype=np.uint8)
    tifffile.imwrite(
        tmp_path / 'planar.tif', np.moveaxis(rgb, -1, 0), photometric='rgb', planarconfig='separate'
    )
    np.testing.assert_allclose(read_image(tmp_path / 'planar.tif'), _luma_reference(rgb) / 255.0, atol=1e-5)
