"""The encoder's 'micrograph' input normalisation (models/input_norm.py)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import ndimage

from fewshot_jax.errors import ConfigError
from fewshot_jax.models import make_encoder
from fewshot_jax.models.input_norm import flatten_micrograph, subtract_background


def _reference(gray: np.ndarray, background_sigma: float = 1 / 16) -> np.ndarray:
    """The same steps with scipy and plain numpy, one image at a time."""
    sigma = gray.shape[0] * background_sigma
    x = gray - ndimage.gaussian_filter(gray.astype(np.float64), sigma, mode='reflect', truncate=3.0)
    x = x / (x.std() + 1e-6)
    if np.mean(x**3) < 0:
        x = -x
    return np.clip(x, -4, 4)


def _micrographs(n=3, size=48, seed=0):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    images = []
    for _ in range(n):
        image = 0.2 + 0.5 * xx * rng.random() + 0.05 * rng.random((size, size))
        for _ in range(4):  # a few sparse dark blobs
            cy, cx = rng.integers(4, size - 4, 2)
            image[cy - 2 : cy + 2, cx - 2 : cx + 2] -= 0.3
        images.append(np.clip(image, 0, 1))
    return np.stack(images).astype(np.float32)


def test_flatten_matches_a_scipy_reference():
    gray = _micrographs()
    out = np.asarray(flatten_micrograph(jnp.asarray(np.repeat(gray[..., None], 3, axis=-1))))
    assert out.shape == gray.shape + (3,)
    np.testing.assert_array_equal(out[..., 0], out[..., 2])
    for got, image in zip(out[..., 0], gray, strict=True):
        np.testing.assert_allclose(got, _reference(image), atol=2e-4)


def test_a_wider_background_matches_the_reference_and_keeps_more_of_the_objects():
    gray = _micrographs()
    wide = np.asarray(flatten_micrograph(jnp.asarray(gray[..., None]), background_sigma=0.25))[..., 0]
    for got, image in zip(wide, gray, strict=True):
        np.testing.assert_allclose(got, _reference(image, 0.25), atol=2e-4)
    assert not np.allclose(
        wide, np.asarray(flatten_micrograph(jnp.asarray(gray[..., None])))[..., 0], atol=1e-2
    )


def test_the_encoder_flattens_with_its_configured_background():
    x = jnp.asarray(np.repeat(_micrographs(2, 64)[..., None], 3, axis=-1))
    wide = make_encoder({'depth': 18, 'width': 4, 'input_norm': 'micrograph', 'background_sigma': 0.25})
    narrow = make_encoder({'depth': 18, 'width': 4, 'input_norm': 'micrograph'})
    assert (wide.background_sigma, narrow.background_sigma) == (0.25, 1 / 16)
    variables = wide.init(jax.random.PRNGKey(0), x)
    assert not np.allclose(np.asarray(wide.apply(variables, x)[0]), np.asarray(narrow.apply(variables, x)[0]))


@pytest.mark.parametrize('value', [0, -0.1, 1.5, 'wide', True])
def test_a_background_outside_the_image_is_a_config_error(value):
    with pytest.raises(ConfigError, match='model.background_sigma'):
        make_encoder({'depth': 18, 'width': 4, 'input_norm': 'micrograph', 'background_sigma': value})


def test_flatten_ignores_polarity_contrast_and_offset():
    gray = jnp.asarray(_micrographs()[..., None])
    base = np.asarray(flatten_micrograph(gray))
    np.testing.assert_allclose(np.asarray(flatten_micrograph(1.0 - gray)), base, atol=1e-4)
    np.testing.assert_allclose(np.asarray(flatten_micrograph(0.3 * gray + 0.4)), base, atol=1e-3)
    # The sparse blobs come out bright: the flattened image is positively skewed.
    assert (np.mean(base**3, axis=(1, 2, 3)) > 0).all()


def test_micrograph_encoder_sees_inverted_images_alike():
    model = make_encoder({'depth': 18, 'width': 4, 'input_norm': 'micrograph'})
    x = jnp.asarray(np.repeat(_micrographs(2, 64)[..., None], 3, axis=-1))
    variables = model.init(jax.random.PRNGKey(0), x)
    pooled, _ = model.apply(variables, x)
    pooled_inverted, _ = model.apply(variables, 1.0 - x)
    np.testing.assert_allclose(np.asarray(pooled_inverted), np.asarray(pooled), atol=1e-4)
    plain = make_encoder({'depth': 18, 'width': 4})
    assert not np.allclose(
        np.asarray(plain.apply(variables, 1.0 - x)[0]), np.asarray(plain.apply(variables, x)[0]), atol=1e-4
    )


def test_unknown_input_norm_is_a_config_error():
    with pytest.raises(ConfigError, match='model.input_norm'):
        make_encoder({'depth': 18, 'width': 4, 'input_norm': 'zscore'})


def test_micrograph_unet_sees_inverted_images_alike():
    from fewshot_jax.segment.model import build_unet

    model = build_unet({'depth': 18, 'width': 4, 'input_norm': 'micrograph'}, decoder='unet')
    x = jnp.asarray(np.repeat(_micrographs(2, 64)[..., None], 3, axis=-1))
    variables = model.init(jax.random.PRNGKey(0), x)
    logits = np.asarray(model.apply(variables, x))
    # Encoder features and the decoder's full-resolution image skip are both normalised.
    np.testing.assert_allclose(np.asarray(model.apply(variables, 1.0 - x)), logits, atol=1e-4)


def _background_reference(gray: np.ndarray, background_sigma: float, std: float) -> np.ndarray:
    """'background' with scipy and plain numpy, one image at a time: no rescaling, no clip."""
    sigma = gray.shape[0] * background_sigma
    x = gray - ndimage.gaussian_filter(gray.astype(np.float64), sigma, mode='reflect', truncate=3.0)
    if np.mean(x**3) < 0:
        x = -x
    return x / std


def test_subtract_background_matches_a_scipy_reference():
    gray = _micrographs()
    out = np.asarray(subtract_background(jnp.asarray(gray[..., None]), 1 / 16, 0.25))[..., 0]
    for got, image in zip(out, gray, strict=True):
        np.testing.assert_allclose(got, _background_reference(image, 1 / 16, 0.25), atol=2e-4)


def test_subtract_background_keeps_each_object_s_contrast_whatever_the_crop_holds():
    # One dark blob on a flat field, alone or beside a second one: 'micrograph' rescales the
    # first blob by the image's spread, 'background' leaves it as it is.
    size = 48
    alone = np.full((size, size), 0.8, np.float32)
    alone[6:18, 6:18] = 0.4
    crowded = alone.copy()
    crowded[30:42, 30:42] = 0.4
    pair = jnp.asarray(np.stack([alone, crowded])[..., None])
    kept = np.asarray(subtract_background(pair, 1 / 16))[..., 0]
    rescaled = np.asarray(flatten_micrograph(pair))[..., 0]
    np.testing.assert_allclose(kept[0, 6:18, 6:18], kept[1, 6:18, 6:18], atol=1e-5)
    assert not np.allclose(rescaled[0, 6:18, 6:18], rescaled[1, 6:18, 6:18], atol=1e-2)
    assert kept[0, 12, 12] > 0  # the dark blob comes out bright


def test_the_background_encoder_divides_by_its_input_std_and_ignores_polarity():
    x = np.repeat(_micrographs(2, 64)[..., None], 3, axis=-1)
    encoder = make_encoder({'depth': 18, 'width': 4, 'input_norm': 'background', 'input_std': (0.5,) * 3})
    variables = encoder.init(jax.random.PRNGKey(0), jnp.asarray(x))
    pooled = np.asarray(encoder.apply(variables, jnp.asarray(x))[0])
    turned = np.asarray(encoder.apply(variables, jnp.asarray(1.0 - x))[0])
    np.testing.assert_allclose(turned, pooled, rtol=1e-4, atol=1e-5)
