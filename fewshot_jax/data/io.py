"""Reading microscope image files into float arrays in [0, 1].

One entry point per kind of file content: `read_image` for intensity images
and `read_mask` for binary segmentation masks. Both return numpy arrays and
raise `DataError` (a `ValueError`) whose message names the file and what was
expected, so a bad file in a folder of thousands is found at once.

Formats: png, jpg, bmp and gif through Pillow; 8/16/32-bit and float tif
through tifffile; Gatan dm3/dm4, mrc, emd (Velox / Berkeley) and FEI ser
through rosettasciio, installed by the optional extra `tem`.
"""

from __future__ import annotations

import pathlib
from collections.abc import Sequence
from typing import Literal

import numpy as np
from PIL import Image, UnidentifiedImageError

PIL_EXTENSIONS = ('.png', '.jpg', '.jpeg', '.bmp', '.gif')
TIFF_EXTENSIONS = ('.tif', '.tiff')
# Extension -> rosettasciio plugin module that reads it.
TEM_READERS = {
    '.dm3': 'rsciio.digitalmicrograph',
    '.dm4': 'rsciio.digitalmicrograph',
    '.mrc': 'rsciio.mrc',
    '.emd': 'rsciio.emd',
    '.ser': 'rsciio.tia',
}
TEM_EXTENSIONS = tuple(TEM_READERS)
IMAGE_EXTENSIONS = PIL_EXTENSIONS + TIFF_EXTENSIONS + TEM_EXTENSIONS
TEM_EXTRA_HINT = "pip install 'fewshot_jax[tem]'"

# 8192 x 8192: far above any microscope frame in the supported datasets
# (2048 px) while a float32 copy still fits comfortably in memory.
DEFAULT_MAX_PIXELS = 8192 * 8192
DEFAULT_PERCENTILES = (0.5, 99.5)
# ITU-R BT.601 weights, the ones Pillow's 'L' conversion uses.
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)

Frames = Literal['first', 'all']
MaskEncoding = Literal['binary', 'color_overlay', 'auto']


class DataError(ValueError):
    """A data file, folder or array is missing or not what was expected."""


def read_image(
    path: str | pathlib.Path,
    *,
    frames: Frames = 'first',
    percentiles: tuple[float, float] | None = DEFAULT_PERCENTILES,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    keep_color: bool = False,
    min_size: int = 2,
) -> np.ndarray:
    """Reads an image file as float32 in [0, 1].

    8-bit data is divided by 255. Deeper integer and float data (16-bit tif,
    dm4, mrc, ...) is scaled robustly: the `percentiles` of the pixel values
    map to 0 and 1 and values beyond them are clipped, so a few hot pixels do
    not flatten the contrast. A constant deep image becomes all zeros.

    Args:
      path: The image file. Its extension picks the reader.
      frames: 'first' returns one frame (H, W); 'all' returns every frame of a
        multi-frame file as (N, H, W), N >= 1, scaled with one shared range.
      percentiles: (low, high) percentiles for deep data; None scales integer
        data by its dtype's range and float data by its min and max.
      max_pixels: Largest number of pixels decoded (H * W, times N for
        frames='all'); larger files raise DataError before decoding (after
        reading, for the rosettasciio formats).
      keep_color: Return colour files as (..., H, W, 3) instead of converting
        them to grayscale by luminance. Grayscale files stay (..., H, W).
      min_size: Smallest accepted height and width.

    Returns:
      A C-contiguous float32 array with values in [0, 1].

    Raises:
      DataError: The file is missing, empty, undecodable, too small or too
        large, holds non-finite values, or needs a reader not installed.
    """
    path = pathlib.Path(path)
    if frames not in ('first', 'all'):
        raise DataError(f"{path}: frames must be 'first' or 'all', got {frames!r}")
    _check_percentiles(percentiles, path)
    suffix = path.suffix.lower()
    if suffix not in IMAGE_EXTENSIONS:
        raise DataError(
            f'{path}: unsupported extension {path.suffix!r}; expected one of {", ".join(IMAGE_EXTENSIONS)}'
        )
    _check_file(path)
    limits = _Limits(max_pixels=max_pixels, min_size=min_size, frames=frames)
    if suffix in PIL_EXTENSIONS:
        stack = _read_pil(path, limits)
    elif suffix in TIFF_EXTENSIONS:
        stack = _read_tiff(path, limits)
    else:
        stack = _read_tem(path, limits)
    image = _to_unit_range(stack, percentiles, keep_color, path)
    return np.ascontiguousarray(image if frames == 'all' else image[0])


def read_mask(
    path: str | pathlib.Path,
    *,
    encoding: MaskEncoding = 'binary',
    expected_shape: tuple[int, int] | None = None,
    image_path: str | pathlib.Path | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> np.ndarray:
    """Reads a binary segmentation mask as uint8 (H, W) in {0, 1}.

    Args:
      path: A lossless single-frame file (png, bmp, tif).
      encoding: 'binary': one channel (or equal RGB channels) with values in
        {0, 1, 255}; 1 and 255 mean foreground. 'color_overlay': an RGB
        annotation drawn in colour over a grayscale image (the nanowire
        release's masks); foreground is every pixel whose channels are not
        all equal. 'auto': 'binary' when the channels are equal everywhere,
        else 'color_overlay'.
      expected_shape: (H, W) of the image the mask belongs to, if known.
      image_path: The image the mask belongs to, named in size errors.
      max_pixels: Largest number of pixels decoded.

    Returns:
      A C-contiguous uint8 array of 0 and 1.

    Raises:
      DataError: The file is unreadable, holds values outside {0, 1, 255},
        or its size differs from `expected_shape`.
    """
    path = pathlib.Path(path)
    if encoding not in ('binary', 'color_overlay', 'auto'):
        raise DataError(
            f"{path}: mask encoding must be 'binary', 'color_overlay' or 'auto', got {encoding!r}"
        )
    suffix = path.suffix.lower()
    if suffix not in PIL_EXTENSIONS + TIFF_EXTENSIONS or suffix in ('.jpg', '.jpeg'):
        raise DataError(f'{path}: masks must be lossless png, bmp, gif or tif files, got {path.suffix!r}')
    _check_file(path)
    limits = _Limits(max_pixels=max_pixels, min_size=1, frames='first')
    raw = _read_pil(path, limits) if suffix in PIL_EXTENSIONS else _read_tiff(path, limits)
    raw = raw[0]
    if raw.ndim == 3:
        channels_equal = bool(np.all(raw[..., :3] == raw[..., :1]))
        if encoding == 'color_overlay' or (encoding == 'auto' and not channels_equal):
            colored = np.any(raw[..., :3] != raw[..., :1], axis=-1)
            mask = colored.astype(np.uint8)
            return _check_mask_shape(mask, expected_shape, path, image_path)
        if not channels_equal:
            raise DataError(
                f'{path}: binary mask has differing colour channels; expected one '
                "channel with values in {0, 1, 255} (set data.mask_encoding='color_overlay', or "
                "encoding='color_overlay' in read_mask, "
                'for colour annotations drawn over an image)'
            )
        raw = raw[..., 0]
    elif encoding == 'color_overlay':
        raise DataError(f"{path}: encoding='color_overlay' needs an RGB mask, got one channel")
    values = np.unique(raw)
    bad = values[~np.isin(values, (0, 1, 255))]
    if bad.size:
        shown = ', '.join(str(v) for v in bad[:8].tolist())
        raise DataError(
            f'{path}: mask has values other than 0, 1 and 255 ({shown}'
            f'{", ..." if bad.size > 8 else ""}); expected a binary mask '
            '(lossless file, no anti-aliasing or resampling)'
        )
    mask = (raw != 0).astype(np.uint8)
    return _check_mask_shape(mask, expected_shape, path, image_path)


class _Limits:
    """Size limits checked from the header, before any pixel is decoded."""

    def __init__(self, *, max_pixels: int, min_size: int, frames: Frames):
        self.max_pixels = int(max_pixels)
        self.min_size = int(min_size)
        self.frames = frames

    def check(self, path: pathlib.Path, height: int, width: int, n_frames: int) -> None:
        if height < self.min_size or width < self.min_size:
            raise DataError(
                f'{path}: image is {height}x{width} pixels; expected at least {self.min_size}x{self.min_size}'
            )
        decoded = height * width * (n_frames if self.frames == 'all' else 1)
        if decoded > self.max_pixels:
            raise DataError(
                f'{path}: {height}x{width} pixels'
                f'{f" x {n_frames} frames" if self.frames == "all" else ""} exceeds '
                f'max_pixels={self.max_pixels}; raise the limit if the file is intended'
            )


def _check_percentiles(percentiles: Sequence[float] | None, path: pathlib.Path) -> None:
    if percentiles is None:
        return
    if len(percentiles) != 2 or not 0 <= percentiles[0] < percentiles[1] <= 100:
        raise DataError(
            f'{path}: percentiles must be (low, high) with 0 <= low < high <= 100, got {tuple(percentiles)!r}'
        )


def _check_file(path: pathlib.Path) -> None:
    if not path.exists():
        raise DataError(f'{path}: file does not exist')
    if not path.is_file():
        raise DataError(f'{path}: not a regular file')
    if path.stat().st_size == 0:
        raise DataError(f'{path}: file is empty (0 bytes)')


def _read_pil(path: pathlib.Path, limits: _Limits) -> np.ndarray:
    """Returns raw frames (N, H, W) or (N, H, W, C) in their stored dtype."""
    # Pillow's own decompression-bomb check runs inside open(); it only
    # matters when max_pixels is raised above Pillow's limit. (Silencing its
    # warning with warnings.catch_warnings would not be thread-safe, and Grain
    # reads from threads.)
    try:
        with Image.open(path) as img:
            n_frames = getattr(img, 'n_frames', 1)
            limits.check(path, img.height, img.width, n_frames)
            count = n_frames if limits.frames == 'all' else 1
            out = []
            for index in range(count):
                img.seek(index)
                out.append(_pil_frame_to_array(img))
    except DataError:
        raise
    except Image.DecompressionBombError as err:
        raise DataError(
            f"{path}: larger than Pillow's decompression-bomb limit "
            f'(PIL.Image.MAX_IMAGE_PIXELS); raise it if the file is trusted ({err})'
        ) from err
    except UnidentifiedImageError as err:
        raise DataError(
            f'{path}: not a readable {path.suffix.lstrip(".").upper()} image '
            '(Pillow cannot identify the content)'
        ) from err
    except (OSError, SyntaxError, ValueError, EOFError) as err:
        raise DataError(
            f'{path}: cannot decode {path.suffix.lstrip(".").upper()} image, the file '
            f'may be truncated or corrupt ({type(err).__name__}: {err})'
        ) from err
    return np.stack(out)


def _pil_frame_to_array(img: Image.Image) -> np.ndarray:
    mode = img.mode
    if mode in ('1', 'L', 'I', 'F') or mode.startswith('I;16'):
        return np.asarray(img)
    if mode == 'LA':
        return np.asarray(img.getchannel('L'))
    if mode in ('P', 'PA'):
        img = img.convert('RGBA')
    if img.mode == 'RGBA':
        # Alpha is not part of the intensity: drop it rather than composite.
        return np.asarray(img)[..., :3]
    return np.asarray(img.convert('RGB'))


def _read_tiff(path: pathlib.Path, limits: _Limits) -> np.ndarray:
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            series = tif.series[0]
            axes = series.axes
            shape = series.shape
            if 'Y' not in axes or 'X' not in axes:
                raise DataError(f'{path}: TIFF series has axes {axes!r}; expected Y and X')
            y, x = axes.index('Y'), axes.index('X')
            leading = zip(shape[:y], axes[:y], strict=True)
            n_frames = int(np.prod([n for n, axis in leading if axis != 'S']))
            limits.check(path, shape[y], shape[x], n_frames)
            data = series.asarray() if limits.frames == 'all' else tif.pages[0].asarray()
            page_axes = axes if limits.frames == 'all' else tif.pages[0].axes
    except DataError:
        raise
    except Exception as err:  # tifffile raises many types for corrupt files
        raise DataError(f'{path}: cannot decode TIFF ({type(err).__name__}: {err})') from err
    return _frames_from_axes(data, page_axes, path)


def _frames_from_axes(data: np.ndarray, axes: str, path: pathlib.Path) -> np.ndarray:
    """Reshapes an array with named axes into (N, H, W) or (N, H, W, C)."""
    if 'S' in axes and axes.index('S') < axes.index('Y'):
        # Planar-configuration RGB: move samples last, where chunky RGB has them.
        data = np.moveaxis(data, axes.index('S'), -1)
        axes = axes.replace('S', '') + 'S'
    y = axes.index('Y')
    trailing = axes[y + 2 :]
    if trailing and trailing not in ('S', 'C'):
        raise DataError(f'{path}: unsupported axis layout {axes!r} after Y, X')
    channels = data.shape[-1] if trailing else None
    if channels is not None and channels not in (1, 3, 4):
        raise DataError(f'{path}: {channels} samples per pixel; expected 1 (gray), 3 (RGB) or 4 (RGBA)')
    frame_shape = data.shape[y:]
    data = data.reshape((-1,) + frame_shape)
    if channels == 1:
        data = data[..., 0]
    elif channels == 4:
        data = data[..., :3]
    return data


def _read_tem(path: pathlib.Path, limits: _Limits) -> np.ndarray:
    import importlib

    module_name = TEM_READERS[path.suffix.lower()]
    try:
        reader = importlib.import_module(module_name)
    except ImportError as err:
        raise DataError(
            f'{path}: reading {path.suffix} files needs rosettasciio '
            f'(the optional extra `tem`): {TEM_EXTRA_HINT}'
        ) from err
    try:
        # Eager reading: lazy mode keeps file handles open until computed.
        signals = reader.file_reader(str(path))
    except Exception as err:  # the readers raise many types for corrupt files
        raise DataError(f'{path}: cannot decode {path.suffix} file ({type(err).__name__}: {err})') from err
    images = [s for s in signals if np.ndim(s['data']) >= 2]
    if not images:
        raise DataError(f'{path}: no image (2-D or higher) signal in the file')
    data = np.asarray(images[0]['data'])
    if data.dtype.names is not None:
        raise DataError(
            f'{path}: colour ({data.dtype}) images from {path.suffix} files are not '
            'supported; expected a grayscale image (export colour data as tif)'
        )
    height, width = data.shape[-2:]
    n_frames = int(np.prod(data.shape[:-2]))
    # The header is not parsed separately, so the limit applies after reading.
    limits.check(path, height, width, n_frames)
    if limits.frames == 'first':
        data = data[(0,) * (data.ndim - 2)]
    return data.reshape((-1, height, width))


def _to_unit_range(
    stack: np.ndarray,
    percentiles: tuple[float, float] | None,
    keep_color: bool,
    path: pathlib.Path,
) -> np.ndarray:
    """Maps raw frames to float32 [0, 1], colour to luminance unless kept."""
    dtype = stack.dtype
    if np.issubdtype(dtype, np.complexfloating):
        raise DataError(f'{path}: complex pixel data ({dtype}); expected real intensities')
    is_color = stack.ndim == 4
    values = stack.astype(np.float32)
    if is_color and not keep_color:
        values = values @ _LUMA
    if dtype == np.bool_:
        return values
    if dtype == np.uint8:
        return values / np.float32(255.0)
    finite = np.isfinite(values)
    if not finite.all():
        raise DataError(
            f'{path}: {int((~finite).sum())} non-finite pixel values (NaN or inf); '
            'expected finite intensities'
        )
    if percentiles is not None:
        low, high = np.percentile(values, percentiles)
    elif np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        low, high = float(info.min), float(info.max)
    else:
        low, high = float(values.min()), float(values.max())
    if high <= low:
        return np.zeros_like(values)
    scaled = (values - np.float32(low)) / np.float32(high - low)
    return np.clip(scaled, 0.0, 1.0, out=scaled)


def _check_mask_shape(
    mask: np.ndarray,
    expected_shape: tuple[int, int] | None,
    path: pathlib.Path,
    image_path: str | pathlib.Path | None,
) -> np.ndarray:
    if expected_shape is not None and mask.shape != tuple(expected_shape):
        owner = f'its image {image_path}' if image_path is not None else 'the image'
        raise DataError(
            f'{path}: mask is {mask.shape[0]}x{mask.shape[1]} but {owner} is '
            f'{expected_shape[0]}x{expected_shape[1]}; expected equal sizes'
        )
    return np.ascontiguousarray(mask)
