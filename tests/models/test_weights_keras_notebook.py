"""The paper's encoders as the paper ran them: our features of a notebook-saved ``.h5`` equal
tf_keras's on the notebook's own feature path.

The files are built the way the notebooks built them (SimCLR_Barlow_encoder_training.ipynb
cells 13, 14, 18: ``ResNet50(include_top=False)`` inside the projector model, whose
``save_weights`` nests the ResNet under a ``resnet50`` group) and re-loaded the way the probe
notebooks did (a fresh model, ``load_weights``, ``layers[1].trainable = False``, the GAP output
``layers[-9]``). Needs the ``keras-reference`` extra (tf_keras); skipped without it.
"""

import os

import numpy as np
import pytest

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
keras = pytest.importorskip('tf_keras')

from fewshot_jax import load_encoder  # noqa: E402
from fewshot_jax.probe import fit  # noqa: E402

SIZE = 64  # the notebooks used 224; any multiple of 32 exercises the same layers


def _notebook_model(resnet):
    """The notebook's SSL model: GAP, then (Dense → ReLU → BN(1e-3)) × 2, Dense → BN(1e-3)."""
    layers = keras.layers
    inputs = layers.Input((SIZE, SIZE, 3))
    h = layers.GlobalAveragePooling2D()(resnet(inputs, training=True))
    for units in (128, 64):
        h = layers.BatchNormalization(epsilon=0.001)(layers.Activation('relu')(layers.Dense(units)(h)))
    h = layers.BatchNormalization(epsilon=0.001)(layers.Dense(1024)(h))
    return keras.models.Model(inputs, h)


def _resnet50(seed):
    keras.utils.set_random_seed(seed)
    resnet = keras.applications.ResNet50(include_top=False, weights=None, input_shape=(SIZE, SIZE, 3))
    rng = np.random.default_rng(seed)
    # Non-trivial BatchNorm statistics, as after training: inference-mode BN then matters.
    for layer in resnet.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            c = layer.gamma.shape[0]
            layer.moving_mean.assign(rng.normal(0, 0.1, c).astype('f4'))
            layer.moving_variance.assign(rng.uniform(0.5, 2.0, c).astype('f4'))
            layer.gamma.assign(rng.uniform(0.5, 1.5, c).astype('f4'))
            layer.beta.assign(rng.normal(0, 0.1, c).astype('f4'))
    return resnet


def _close(actual, expected, tol=1e-4):
    scale = np.abs(expected).max()
    np.testing.assert_allclose(actual, expected, rtol=tol, atol=tol * scale)


@pytest.fixture(scope='module')
def images():
    # Three channels that differ, so a reversed channel order shows.
    return np.random.default_rng(0).random((24, SIZE, SIZE, 3)).astype(np.float32)


@pytest.fixture(scope='module')
def notebook_file(tmp_path_factory):
    path = tmp_path_factory.mktemp('nb') / 'barlow_resnet_batch64_project128_64_1024_seed42.h5'
    _notebook_model(_resnet50(1)).save_weights(str(path))
    return path


def _notebook_features(path, images):
    """NW c20: rebuild, load_weights, freeze the ResNet, take the GAP output."""
    resnet = keras.applications.ResNet50(include_top=False, weights=None, input_shape=(SIZE, SIZE, 3))
    model = _notebook_model(resnet)
    model.load_weights(str(path))
    model.layers[1].trainable = False
    features = keras.models.Model(model.input, model.layers[-9].output)
    return features.predict(images, batch_size=4, verbose=0)


def test_notebook_encoder_features_equal_tf_keras(notebook_file, images):
    encoder = load_encoder(f'keras:{notebook_file}')
    assert encoder.config['normalization'] == 'unit' and encoder.config['input_channels'] == 'rgb'
    ours = encoder.encode(images)
    theirs = _notebook_features(notebook_file, images)
    assert theirs.shape == ours.shape == (len(images), 2048)
    _close(ours, theirs)

    # The probe sees the same numbers, so it reaches the same accuracies.
    labels = np.arange(len(images)) % 3
    train, test = np.arange(12), np.arange(12, 24)
    acc = [
        float(np.mean(fit(f[train], labels[train]).predict(f[test]) == labels[test])) for f in (ours, theirs)
    ]
    assert acc[0] == acc[1]


def test_applications_file_keeps_caffe_and_the_bgr_stem(tmp_path, images):
    path = tmp_path / 'resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5'
    resnet = _resnet50(2)
    resnet.save_weights(str(path))
    encoder = load_encoder(f'keras:{path}')
    assert encoder.config['normalization'] == 'caffe' and encoder.config['input_channels'] == 'bgr'
    x = keras.applications.resnet50.preprocess_input(images[:6] * 255.0)
    theirs = resnet.predict(x, verbose=0).mean(axis=(1, 2))
    _close(encoder.encode(images[:6]), theirs)
