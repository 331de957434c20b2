"""Tests for fewshot_jax.pretrain.augment.views: determinism, crop geometry, flips, jitter, sharding."""

import dataclasses
import math

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from fewshot_jax.pretrain import augment
from fewshot_jax.pretrain.augment.views import AugmentConfig

# One jitted entry point per public batch function; the config is static so
# each distinct config compiles once.
batch_fn = jax.jit(augment.augment_batch, static_argnums=2)
views_fn = jax.jit(augment.two_views, static_argnums=2)
crop_resize_fn = jax.jit(augment.crop_resize, static_argnums=4)

# Geometry-only settings: no flip, no colour change.
NO_JITTER = dict(flip_prob=0.0, jitter_prob=0.0)


def random_uint8(shape, seed=0):
    return np.random.default_rng(seed).integers(0, 256, size=shape, dtype=np.uint8)


def ramp_image(size):
    """Float image whose channel 0 is the column index / size and channel 1 the row index / size."""
    rows, cols = np.meshgrid(np.arange(size), np.arange(size), indexing='ij')
    return np.stack([cols / size, rows / size, np.full_like(cols, 0.5, float)], -1).astype(np.float32)


def recover_window(view, image_size):
    """Reads (top, left, side) back from a view of `ramp_image(image_size)` when upsampling.

    For linear interpolation of a ramp, output pixel u (of S) holds the input
    coordinate top + (u + 0.5) * side / S - 0.5 as long as that lies between
    the first and last pixel centres; pixels 1 and S-2 always do for the
    windows used here (side / S <= 1).
    """
    size = view.shape[0]
    col = np.asarray(view[size // 2, :, 0], np.float64) * image_size
    row = np.asarray(view[:, size // 2, 1], np.float64) * image_size
    windows = []
    for line in (row, col):
        step = (line[size - 2] - line[1]) / (size - 3)
        side = step * size
        start = line[1] - 1.5 * step + 0.5
        windows.append((start, side))
    (top, side_rows), (left, side_cols) = windows
    assert side_rows == pytest.approx(side_cols, abs=1e-3)
    return top, left, side_rows


def triangle_weights(start, side, in_size, out_size):
    """Plain-loop linear (triangle) resampling weights with antialiasing.

    Output pixel u samples input coordinate start + (u + 0.5) * side / S - 0.5
    (pixel centres at integer indices); when downsampling the triangle is
    stretched by side / S. Weights over the pixels that exist are normalised.
    """
    width = max(side / out_size, 1.0)
    weights = np.zeros((out_size, in_size))
    for u in range(out_size):
        centre = start + (u + 0.5) * side / out_size - 0.5
        for i in range(in_size):
            weights[u, i] = max(0.0, 1.0 - abs(centre - i) / width)
        weights[u] /= weights[u].sum()
    return weights


def bilinear_reference(image, top, left, side, out_size):
    """Textbook bilinear sampling with edge clamping (valid when upsampling)."""
    height, width, channels = image.shape
    out = np.zeros((out_size, out_size, channels))
    for u in range(out_size):
        y = min(max(top + (u + 0.5) * side / out_size - 0.5, 0.0), height - 1)
        y0 = int(math.floor(y))
        y1 = min(y0 + 1, height - 1)
        ty = y - y0
        for v in range(out_size):
            x = min(max(left + (v + 0.5) * side / out_size - 0.5, 0.0), width - 1)
            x0 = int(math.floor(x))
            x1 = min(x0 + 1, width - 1)
            tx = x - x0
            out[u, v] = (
                (1 - ty) * (1 - tx) * image[y0, x0]
                + (1 - ty) * tx * image[y0, x1]
                + ty * (1 - tx) * image[y1, x0]
                + ty * tx * image[y1, x1]
            )
    return out


# --- determinism ---------------------------------------------------------------------------


def test_same_key_gives_bitwise_identical_output():
    images = random_uint8((4, 40, 40, 3))
    cfg = AugmentConfig(output_size=32, brightness=0.3)
    first = np.asarray(batch_fn(jax.random.key(7), images, cfg))
    second = np.asarray(batch_fn(jax.random.key(7), images, cfg))
    np.testing.assert_array_equal(first, second)


def test_different_keys_give_different_output():
    images = random_uint8((4, 40, 40, 3))
    cfg = AugmentConfig(output_size=32, brightness=0.3)
    first = np.asarray(batch_fn(jax.random.key(7), images, cfg))
    second = np.asarray(batch_fn(jax.random.key(8), images, cfg))
    for a, b in zip(first, second, strict=True):
        assert np.abs(a - b).max() > 1e-3


def test_examples_in_a_batch_get_their_own_crops():
    # Identical images: only different draws can make the windows differ.
    images = np.repeat(ramp_image(64)[None], 8, axis=0)
    cfg = AugmentConfig(output_size=32, crop='random', crop_range=(0.25, 0.5), **NO_JITTER)
    views = np.asarray(batch_fn(jax.random.key(0), images, cfg))
    windows = [recover_window(view, 64) for view in views]
    for top, left, side in windows:
        assert 16 - 1e-3 <= side <= 32 + 1e-3
        assert -1e-3 <= top <= 64 - side + 1e-3
        assert -1e-3 <= left <= 64 - side + 1e-3
    for i in range(len(windows)):
        for j in range(i):
            assert np.abs(np.subtract(windows[i], windows[j])).max() > 1e-2, (i, j)


def test_two_views_are_independent_draws():
    images = random_uint8((4, 48, 48, 1), seed=3)
    cfg = AugmentConfig(output_size=32)
    view_a, view_b = views_fn(jax.random.key(1), images, cfg)
    assert view_a.shape == view_b.shape == (4, 32, 32, 3)
    for a, b in zip(np.asarray(view_a), np.asarray(view_b), strict=True):
        assert np.abs(a - b).max() > 1e-3


def test_paired_channels_draw_each_view_from_its_own_acquisition():
    first, second = random_uint8((3, 48, 48, 1), seed=4), random_uint8((3, 48, 48, 1), seed=5)
    pairs = np.concatenate([first, second, first], axis=-1)
    cfg = AugmentConfig(output_size=32, paired_channels=True)
    view_a, view_b = views_fn(jax.random.key(2), pairs, cfg)
    # The same keys two_views splits: view 1 is channel 0 augmented, view 2 channel 1.
    key_a, key_b = jax.random.split(jax.random.key(2))
    plain = dataclasses.replace(cfg, paired_channels=False)
    np.testing.assert_array_equal(view_a, batch_fn(key_a, first, plain))
    np.testing.assert_array_equal(view_b, batch_fn(key_b, second, plain))
    with pytest.raises(augment.AugmentInputError, match='paired_channels expects'):
        augment.two_views(jax.random.key(0), first, cfg)
    with pytest.raises(augment.AugmentConfigError, match='paired_channels must be True or False'):
        AugmentConfig(output_size=32, paired_channels=1)


# --- shapes, dtypes, channels --------------------------------------------------------------


@pytest.mark.parametrize(
    'shape, dtype',
    [
        ((2, 40, 40, 3), np.uint8),
        ((2, 40, 40, 3), np.float32),
        ((2, 40, 40, 1), np.uint8),
        ((2, 40, 40, 1), np.float32),
        ((2, 36, 48, 1), np.uint8),
    ],
)
def test_output_shape_dtype_and_range(shape, dtype):
    raw = random_uint8(shape, seed=5)
    images = raw if dtype == np.uint8 else raw.astype(np.float32) / 255.0
    cfg = AugmentConfig(output_size=24, brightness=0.5, contrast=(0.2, 3.0))
    out = np.asarray(batch_fn(jax.random.key(2), images, cfg))
    assert out.shape == (shape[0], 24, 24, 3)
    assert out.dtype == np.float32
    assert out.min() >= 0.0 and out.max() <= 1.0


def test_grayscale_is_replicated_and_matches_rgb_input():
    gray = random_uint8((3, 40, 40, 1), seed=9)
    cfg = AugmentConfig(output_size=32, brightness=0.2)
    from_gray = np.asarray(batch_fn(jax.random.key(4), gray, cfg))
    from_rgb = np.asarray(batch_fn(jax.random.key(4), np.repeat(gray, 3, axis=-1), cfg))
    np.testing.assert_allclose(from_gray, from_rgb, atol=1e-6)
    np.testing.assert_allclose(from_gray[..., 0], from_gray[..., 2], atol=1e-6)


def test_uint8_and_float_inputs_agree():
    raw = random_uint8((2, 40, 40, 3), seed=11)
    cfg = AugmentConfig(output_size=32)
    from_uint8 = np.asarray(batch_fn(jax.random.key(5), raw, cfg))
    from_float = np.asarray(batch_fn(jax.random.key(5), raw.astype(np.float32) / 255.0, cfg))
    np.testing.assert_allclose(from_uint8, from_float, atol=1e-6)


@pytest.mark.parametrize(
    'images, message',
    [
        (np.zeros((2, 16, 16, 3), np.int32), 'dtype int32'),
        (np.zeros((2, 16, 16, 2), np.uint8), r'\(16, 16, 2\)'),
        (np.zeros((16, 16, 3), np.uint8), r'\(N, H, W, C\)'),
    ],
)
def test_bad_images_raise_clear_errors(images, message):
    cfg = AugmentConfig(output_size=8)
    with pytest.raises(augment.AugmentInputError, match=message):
        augment.augment_batch(jax.random.key(0), images, cfg)


# --- crop geometry -------------------------------------------------------------------------


@pytest.mark.parametrize(
    'top, left, side, out_size',
    [
        (3.3, 1.7, 8.0, 16),  # upsampling, fractional corner
        (2.0, 4.5, 15.0, 6),  # downsampling: antialiased
        (0.0, 0.0, 20.0, 20),  # whole short side, unit scale
        (4.0, 0.0, 20.0, 13),  # touching the bottom and left edges
    ],
)
def test_crop_resize_matches_loop_reference(top, left, side, out_size):
    image = np.random.default_rng(2).random((24, 20, 3)).astype(np.float32)
    out = np.asarray(crop_resize_fn(image, top, left, side, out_size))
    rows = triangle_weights(top, side, 24, out_size)
    cols = triangle_weights(left, side, 20, out_size)
    expected = np.einsum('ui,vj,ijc->uvc', rows, cols, image.astype(np.float64))
    np.testing.assert_allclose(out, expected, atol=1e-5)
    if side <= out_size:
        np.testing.assert_allclose(out, bilinear_reference(image, top, left, side, out_size), atol=1e-5)


def test_integer_window_at_unit_scale_copies_pixels_exactly():
    image = random_uint8((48, 48, 3), seed=4)
    out = np.asarray(crop_resize_fn(image, 5.0, 11.0, 24.0, 24))
    np.testing.assert_allclose(out, image[5:29, 11:35] / 255.0, atol=1e-6)


@pytest.mark.parametrize('fraction', [0.25, 0.5])
def test_fixed_fraction_crop_stays_inside_its_window(fraction):
    image = ramp_image(64)
    images = np.repeat(image[None], 6, axis=0)
    cfg = AugmentConfig(output_size=32, crop=fraction, **NO_JITTER)
    views = np.asarray(batch_fn(jax.random.key(3), images, cfg))
    side = fraction * 64
    for view in views:
        top, left, recovered_side = recover_window(view, 64)
        assert recovered_side == pytest.approx(side, abs=1e-3)
        assert -1e-3 <= top <= 64 - side + 1e-3
        assert -1e-3 <= left <= 64 - side + 1e-3
        # Every sampled value comes from inside the window (pixel centres).
        assert view[..., 0].min() * 64 >= left - 0.5 - 1e-4
        assert view[..., 0].max() * 64 <= left + side - 0.5 + 1e-4
        assert view[..., 1].min() * 64 >= top - 0.5 - 1e-4
        assert view[..., 1].max() * 64 <= top + side - 0.5 + 1e-4
        # And the view is the window resampled, pixel for pixel.
        expected = bilinear_reference(image, top, left, side, 32)
        np.testing.assert_allclose(view, expected, atol=1e-4)


def test_crop_none_without_flip_or_jitter_equals_plain_resize():
    images = random_uint8((3, 36, 48, 1), seed=6)
    cfg = AugmentConfig(output_size=24, crop='none', **NO_JITTER)
    augmented = np.asarray(batch_fn(jax.random.key(0), images, cfg))
    resized = np.asarray(jax.jit(augment.resize_batch, static_argnums=1)(images, 24))
    np.testing.assert_allclose(augmented, resized, atol=1e-6)
    # The plain resize stretches the whole (non-square) image onto S x S.
    rows = triangle_weights(0.0, 36, 36, 24)
    cols = triangle_weights(0.0, 48, 48, 24)
    expected = np.einsum('ui,vj,nij->nuv', rows, cols, images[..., 0] / 255.0)
    np.testing.assert_allclose(resized[..., 0], expected, atol=1e-5)


# --- flip and jitter -----------------------------------------------------------------------


def test_flip_prob_one_flips_exactly():
    images = random_uint8((4, 40, 40, 3), seed=8)
    plain = AugmentConfig(output_size=32, crop=0.5, flip_prob=0.0, jitter_prob=0.0)
    flipped = dataclasses.replace(plain, flip_prob=1.0)
    a = np.asarray(batch_fn(jax.random.key(6), images, plain))
    b = np.asarray(batch_fn(jax.random.key(6), images, flipped))
    np.testing.assert_array_equal(b, a[:, :, ::-1])


def test_rotate90_turns_each_view_by_a_uniform_quarter_turn_and_leaves_other_draws():
    images = random_uint8((48, 40, 40, 3), seed=9)
    plain = AugmentConfig(output_size=32, crop=0.5, flip_prob=0.5, jitter_prob=0.0)
    turned = dataclasses.replace(plain, rotate90=True)
    a = np.asarray(batch_fn(jax.random.key(7), images, plain))
    b = np.asarray(batch_fn(jax.random.key(7), images, turned))
    turns = []
    for view, rotated in zip(a, b, strict=True):
        # The same crop and flip, then exactly one of the four quarter turns.
        matches = [k for k in range(4) if np.array_equal(rotated, np.rot90(view, k))]
        assert len(matches) == 1
        turns.append(matches[0])
    assert sorted(set(turns)) == [0, 1, 2, 3]


def test_jitter_prob_zero_is_identity():
    image = jnp.asarray(np.random.default_rng(1).random((16, 16, 3)), jnp.float32)
    cfg = AugmentConfig(output_size=16, jitter_prob=0.0, brightness=0.4)
    for seed in range(3):
        out = augment.color_jitter(jax.random.key(seed), image, cfg)
        np.testing.assert_array_equal(np.asarray(out), np.asarray(image))


def test_brightness_only_shifts_all_pixels_by_one_delta():
    image = jnp.asarray(0.3 + 0.4 * np.random.default_rng(1).random((16, 16, 3)), jnp.float32)
    cfg = AugmentConfig(
        output_size=16, jitter_prob=1.0, brightness=0.25, contrast=(1, 1), saturation=(1, 1), hue=0
    )
    deltas = []
    for seed in range(4):
        out = np.asarray(augment.color_jitter(jax.random.key(seed), image, cfg))
        shift = out - np.asarray(image)
        np.testing.assert_allclose(shift, shift.flat[0], atol=1e-6)
        assert -0.25 <= shift.flat[0] <= 0.25
        deltas.append(shift.flat[0])
    assert len(set(np.round(deltas, 6))) == 4


def test_contrast_only_scales_deviations_from_channel_means():
    image = np.float32(0.4 + 0.2 * np.random.default_rng(2).random((16, 16, 3)))
    cfg = AugmentConfig(output_size=16, jitter_prob=1.0, contrast=(0.5, 1.5), saturation=(1, 1), hue=0)
    out = np.asarray(augment.color_jitter(jax.random.key(0), jnp.asarray(image), cfg))
    mean = image.mean(axis=(0, 1))
    factor = (out[0, 0, 0] - mean[0]) / (image[0, 0, 0] - mean[0])
    assert 0.5 <= factor <= 1.5
    np.testing.assert_allclose(out, factor * (image - mean) + mean, atol=1e-5)


def test_jitter_prob_one_changes_colour_images():
    image = jnp.asarray(np.random.default_rng(3).random((16, 16, 3)), jnp.float32)
    cfg = AugmentConfig(output_size=16, jitter_prob=1.0)
    out = np.asarray(augment.color_jitter(jax.random.key(0), image, cfg))
    assert np.abs(out - np.asarray(image)).max() > 1e-2
    assert out.min() >= 0.0 and out.max() <= 1.0


# --- sharding ------------------------------------------------------------------------------


def test_sharded_batch_on_eight_devices_matches_unsharded():
    # tests/conftest.py gives this process 8 fake CPU devices.
    assert jax.device_count() == 8, jax.devices()
    mesh = jax.make_mesh((8,), ('data',), axis_types=(jax.sharding.AxisType.Auto,))
    data = NamedSharding(mesh, P('data'))
    images = np.random.default_rng(0).integers(0, 256, (16, 40, 40, 1), dtype=np.uint8)
    cfg = AugmentConfig(output_size=32, brightness=0.2)
    views = jax.jit(augment.two_views, static_argnums=2)
    sharded = views(jax.random.key(3), jax.device_put(images, data), cfg)
    single = views(jax.random.key(3), jax.device_put(images, jax.devices()[0]), cfg)
    for a, b in zip(sharded, single, strict=True):
        assert a.sharding.is_equivalent_to(data, a.ndim), a.sharding
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-5)


# --- config --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    'field, value',
    [
        ('output_size', 0),
        ('output_size', 32.0),
        ('crop', 'center'),
        ('crop', 0.0),
        ('crop', 1.5),
        ('crop_range', (0.5, 0.25)),
        ('crop_range', (0.0, 0.5)),
        ('crop_range', (0.25,)),
        ('flip_prob', 1.2),
        ('flip_prob', True),
        ('rotate90', 1),
        ('jitter_prob', -0.1),
        ('brightness', -0.1),
        ('contrast', (1.8, 0.2)),
        ('saturation', (-0.5, 1.0)),
        ('hue', 0.7),
    ],
)
def test_invalid_config_raises_value_error_naming_the_field(field, value):
    kwargs = {'output_size': 32, field: value}
    with pytest.raises(ValueError, match=field) as error:
        AugmentConfig(**kwargs)
    assert isinstance(error.value, augment.AugmentConfigError)
    assert repr(value) in str(error.value)


def test_config_from_ml_collections_fills_defaults_and_normalises():
    cfg = ml_collections.ConfigDict({'crop': '0.25', 'contrast': [0.5, 1.5], 'flip_prob': 0.0})
    built = augment.augment_config_from(cfg, output_size=48)
    assert built == AugmentConfig(output_size=48, crop=0.25, contrast=(0.5, 1.5), flip_prob=0.0)
    assert built.saturation == (0.2, 1.8) and built.jitter_prob == 0.8
    hash(built)  # static argument to jit


def test_config_from_rejects_unknown_keys_and_bad_values():
    with pytest.raises(augment.AugmentConfigError, match='flip_probability'):
        augment.augment_config_from(ml_collections.ConfigDict({'flip_probability': 0.5}), 32)
    with pytest.raises(augment.AugmentConfigError, match='crop'):
        augment.augment_config_from(ml_collections.ConfigDict({'crop': 'crop25'}), 32)
    with pytest.raises(augment.AugmentConfigError, match='hue'):
        augment.augment_config_from(ml_collections.ConfigDict({'hue': 0.9}), 32)


# --- area-fraction crops -------------------------------------------------------------------

AREA_WINDOWS = jax.jit(
    jax.vmap(augment.area_crop_window, in_axes=(0, None, None, None)), static_argnums=(1, 2, 3)
)


@pytest.mark.parametrize('height, width', [(48, 48), (36, 60)])
@pytest.mark.parametrize('area, ratio', [((0.08, 1.0), (3 / 4, 4 / 3)), ((0.2, 1.0), (0.5, 2.0))])
def test_area_windows_have_the_drawn_area_ratio_and_lie_inside(height, width, area, ratio):
    cfg = AugmentConfig(output_size=32, crop='area', crop_area=area, crop_ratio=ratio)
    keys = jax.random.split(jax.random.key(0), 400)
    top, left, box_h, box_w = (np.asarray(a, np.float64) for a in AREA_WINDOWS(keys, height, width, cfg))
    fraction = box_h * box_w / (height * width)
    assert fraction.min() >= area[0] - 1e-5 and fraction.max() <= area[1] + 1e-5
    # The ratio range holds wherever a box of the drawn area fits with such a ratio.
    aspect = box_w / box_h
    feasible_lo = np.maximum(ratio[0], fraction * width / height)
    feasible_hi = np.minimum(ratio[1], width / (fraction * height))
    assert np.all(aspect >= np.minimum(feasible_lo, feasible_hi) * (1 - 1e-4))
    assert np.all(aspect <= np.maximum(feasible_lo, feasible_hi) * (1 + 1e-4))
    assert np.all(top >= -1e-4) and np.all(top + box_h <= height + 1e-3)
    assert np.all(left >= -1e-4) and np.all(left + box_w <= width + 1e-3)
    # The draws spread over the range, not a point.
    assert fraction.max() - fraction.min() > 0.5 * (area[1] - area[0])
    assert aspect.max() / aspect.min() > 1.2


def recover_box(view, image_size):
    """(top, left, box_height, box_width) of an upsampled view of `ramp_image(image_size)`."""
    size = view.shape[0]
    out = []
    for line in (
        np.asarray(view[:, size // 2, 1], np.float64) * image_size,
        np.asarray(view[size // 2, :, 0], np.float64) * image_size,
    ):
        step = (line[size - 2] - line[1]) / (size - 3)
        out.append((line[1] - 1.5 * step + 0.5, step * size))
    (top, box_h), (left, box_w) = out
    return top, left, box_h, box_w


def rect_bilinear_reference(image, top, left, box_h, box_w, out_size):
    """Plain-loop bilinear sampling of a rectangular box (valid when upsampling)."""
    height, width, channels = image.shape
    out = np.zeros((out_size, out_size, channels))
    for u in range(out_size):
        y = min(max(top + (u + 0.5) * box_h / out_size - 0.5, 0.0), height - 1)
        y0 = int(math.floor(y))
        y1, ty = min(y0 + 1, height - 1), y - math.floor(y)
        for v in range(out_size):
            x = min(max(left + (v + 0.5) * box_w / out_size - 0.5, 0.0), width - 1)
            x0 = int(math.floor(x))
            x1, tx = min(x0 + 1, width - 1), x - math.floor(x)
            out[u, v] = (
                (1 - ty) * (1 - tx) * image[y0, x0]
                + (1 - ty) * tx * image[y0, x1]
                + ty * (1 - tx) * image[y1, x0]
                + ty * tx * image[y1, x1]
            )
    return out


def test_area_crop_views_are_their_boxes_resampled_one_box_per_example():
    image = ramp_image(32)
    images = np.repeat(image[None], 6, axis=0)
    cfg = AugmentConfig(output_size=40, crop='area', crop_area=(0.2, 1.0), **NO_JITTER)
    views = np.asarray(batch_fn(jax.random.key(5), images, cfg))
    boxes = [recover_box(view, 32) for view in views]
    for view, (top, left, box_h, box_w) in zip(views, boxes, strict=True):
        assert 0.2 - 1e-3 <= box_h * box_w / 32**2 <= 1.0 + 1e-3
        assert 3 / 4 - 1e-3 <= box_w / box_h <= 4 / 3 + 1e-3
        assert -1e-3 <= top <= 32 - box_h + 1e-3 and -1e-3 <= left <= 32 - box_w + 1e-3
        expected = rect_bilinear_reference(image, top, left, box_h, box_w, 40)
        np.testing.assert_allclose(view, expected, atol=1e-4)
    for i in range(len(boxes)):
        for j in range(i):
            assert np.abs(np.subtract(boxes[i], boxes[j])).max() > 1e-2, (i, j)


# --- micrograph ops: gamma, inversion, blur, noise -----------------------------------------
