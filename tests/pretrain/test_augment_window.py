"""crop='window': views cut at the image's own pixel size, without resampling."""

import jax
import ml_collections
import numpy as np
import pytest

from fewshot_jax.pretrain import augment

batch_fn = jax.jit(augment.augment_batch, static_argnums=2)


def random_uint8(shape, seed=0):
    return np.random.default_rng(seed).integers(0, 256, size=shape, dtype=np.uint8)


def test_window_views_are_exact_pixel_windows_of_the_image_at_its_own_scale():
    """Every view of crop='window' is some 24 x 24 block of its 40-px image, pixel for pixel
    (found by a plain search over all corners; 1e-6 allows the float rounding of /255), and
    the corners vary across the batch."""
    cfg = augment.augment_config_from(
        ml_collections.ConfigDict({'crop': 'window', 'window': 0.6, 'flip_prob': 0.0, 'jitter_prob': 0.0}),
        output_size=40,
    )
    assert cfg.output_size == 24
    images = random_uint8((6, 40, 40, 1), seed=5)
    views = np.asarray(batch_fn(jax.random.key(2), images, cfg))
    assert views.shape == (6, 24, 24, 3)
    corners = []
    for image, view in zip(images, views, strict=True):
        gray = image[..., 0].astype(np.float32) / 255.0
        found = [
            (top, left)
            for top in range(40 - 24 + 1)
            for left in range(40 - 24 + 1)
            if np.allclose(gray[top : top + 24, left : left + 24], view[..., 0], rtol=0, atol=1e-6)
        ]
        assert len(found) == 1
        corners.append(found[0])
    assert len(set(corners)) > 1


def test_window_fraction_is_checked():
    with pytest.raises(augment.AugmentConfigError, match='augment.window must be a side fraction'):
        augment.augment_config_from(ml_collections.ConfigDict({'crop': 'window', 'window': 1.5}), 32)
