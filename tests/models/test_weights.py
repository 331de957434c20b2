"""Weight import/export: torchvision state dicts, Keras .h5 files, specs, initial_variables.

The weight files and the plain-NumPy reference forwards they are checked
against live in ``tests/helpers/weights_references.py``.
"""

import h5py
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from fewshot_jax import load_encoder
from fewshot_jax.models import make_ssl_model
from fewshot_jax.models.weights import (
    WeightsError,
    export_torchvision,
    initial_variables,
    load_weights,
    parse_spec,
)
from tests.conftest import tiny_ssl_config
from tests.helpers.weights_references import (
    BLOCKS,
    keras_reference_features,
    keras_resnet50_arrays,
    torchvision_reference_features,
    torchvision_state_dict,
    write_keras2_nested_model,
    write_keras2_weights,
    write_keras3_weights,
)


def test_references_reject_swapped_weights():
    """The references are sensitive to which weight goes where (else they prove nothing)."""
    images = np.random.default_rng(3).random((2, 32, 32, 3))
    arrays = keras_resnet50_arrays(4)
    swapped = dict(arrays)
    swapped['conv3_block2_2_conv/kernel'] = arrays['conv3_block3_2_conv/kernel']
    swapped['conv3_block3_2_conv/kernel'] = arrays['conv3_block2_2_conv/kernel']
    a, b = keras_reference_features(arrays, images), keras_reference_features(swapped, images)
    assert np.abs(a - b).max() > 1e-2 * np.abs(a).max()


# ----------------------------------------------------------------------------- torchvision


def close(actual, expected, tol=1e-4):
    scale = np.abs(expected).max()
    np.testing.assert_allclose(actual, expected, rtol=tol, atol=tol * scale)


@pytest.mark.parametrize('suffix', ['.safetensors', '.npz'])
def test_torchvision_round_trip_is_bit_exact(tmp_path, suffix):
    sd = torchvision_state_dict(50, 8)
    src = tmp_path / f'in{suffix}'
    if suffix == '.npz':
        np.savez(src, **sd)
    else:
        save_file(sd, str(src))
    loaded = load_weights(f'torchvision:{src}')
    assert loaded.model['depth'] == 50 and loaded.model['width'] == 8
    assert loaded.model['variant'] == 'v1.5'
    # The transpose is what it should be, on one named parameter.
    np.testing.assert_array_equal(
        loaded.variables['params']['layer2_0']['conv2']['kernel'],
        sd['layer2.0.conv2.weight'].transpose(2, 3, 1, 0),
    )
    np.testing.assert_array_equal(
        loaded.variables['batch_stats']['layer3_1']['bn3']['var'], sd['layer3.1.bn3.running_var']
    )

    out = export_torchvision(loaded.variables, tmp_path / 'out.safetensors')
    back = load_file(str(out))
    kept = {k: v for k, v in sd.items() if not k.startswith('fc.') and 'num_batches' not in k}
    assert sorted(back) == sorted(kept)
    for key, value in kept.items():
        assert back[key].dtype == np.float32
        np.testing.assert_array_equal(back[key], value, err_msg=key)


@pytest.mark.parametrize('depth', [18, 50])
def test_torchvision_import_matches_reference_forward(tmp_path, depth):
    sd = torchvision_state_dict(depth, 4, seed=depth)
    path = tmp_path / 'w.npz'
    np.savez(path, **sd)
    images = np.random.default_rng(0).random((3, 40, 40, 3)).astype(np.float32)
    features = load_encoder(path).encode(images)
    close(features, torchvision_reference_features(sd, images, depth))


def test_torchvision_prefix_and_wrapper_keys_are_handled(tmp_path):
    sd = torchvision_state_dict(18, 4)
    prefixed = {f'module.encoder.{k}': v for k, v in sd.items()}
    path = tmp_path / 'w.safetensors'
    save_file(prefixed, str(path))
    loaded = load_weights(path)
    np.testing.assert_array_equal(loaded.variables['params']['bn1']['scale'], sd['bn1.weight'])


def test_torchvision_missing_extra_and_misshapen_keys_are_all_reported(tmp_path):
    sd = torchvision_state_dict(18, 4)
    del sd['layer2.1.bn2.running_var']
    sd['layer1.0.attention.weight'] = np.zeros(3, np.float32)
    sd['layer3.0.conv1.weight'] = np.zeros((16, 8, 3, 1), np.float32)
    path = tmp_path / 'bad.npz'
    np.savez(path, **sd)
    with pytest.raises(WeightsError) as err:
        load_weights(f'torchvision:{path}')
    message = str(err.value)
    assert str(path) in message
    assert '1 missing: layer2.1.bn2.running_var' in message
    assert '1 unexpected: layer1.0.attention.weight' in message
    assert 'layer3.0.conv1.weight: file (16, 8, 3, 1)' in message and '(16, 8, 3, 3)' in message


def test_torchvision_file_of_another_network_is_refused(tmp_path):
    path = tmp_path / 'vgg.npz'
    np.savez(path, **{'features.0.weight': np.zeros((4, 3, 3, 3), np.float32)})
    with pytest.raises(WeightsError, match='not a torchvision ResNet state dict'):
        load_weights(path)
    sd = torchvision_state_dict(18, 4)
    sd['layer3.2.conv1.weight'] = sd['layer3.1.conv1.weight']  # a third block in stage 3
    np.savez(path, **sd)
    with pytest.raises(WeightsError, match=r'\(2, 2, 3, 2\) match no supported ResNet'):
        load_weights(path)


def test_export_refuses_keras_variant_and_ssl_trees(tmp_path):
    arrays = keras_resnet50_arrays(2)
    h5 = tmp_path / 'k.h5'
    write_keras2_weights(h5, arrays)
    with pytest.raises(WeightsError, match="variant='keras'"):
        export_torchvision(load_weights(h5).variables, tmp_path / 'x.safetensors')
    with pytest.raises(WeightsError, match="encoder's variables"):
        export_torchvision({'params': {'encoder': {}, 'projector': {}}}, tmp_path / 'x.safetensors')


# ----------------------------------------------------------------------------- Keras


@pytest.fixture(scope='module')
def keras_arrays():
    return keras_resnet50_arrays(4)


@pytest.mark.parametrize(
    ('writer', 'preprocess', 'channels'),
    [(write_keras2_weights, 'caffe', 'bgr'), (write_keras2_nested_model, 'unit', 'rgb')],
)
def test_keras_h5_import_matches_keras_reference_forward(
    tmp_path, keras_arrays, writer, preprocess, channels
):
    """Applications files see 'caffe' BGR inputs; notebook files (nested ResNet) RGB in [0, 1]."""
    path = tmp_path / 'barlow_resnet_batch64_project128_64_1024_seed42.h5'
    writer(path, keras_arrays)
    encoder = load_encoder(f'keras:{path}')
    assert encoder.config['variant'] == 'keras' and encoder.config['depth'] == 50
    assert encoder.config['normalization'] == preprocess and encoder.config['input_channels'] == channels
    assert encoder.name == 'barlow_resnet_batch64_project128_64_1024_seed42'
    # Channels that differ, so a wrong channel order shows.
    images = np.random.default_rng(1).random((3, 48, 48, 3)).astype(np.float32)
    close(encoder.encode(images), keras_reference_features(keras_arrays, images, preprocess))


def test_keras_spec_input_option_overrides_the_layout(tmp_path, keras_arrays):
    path = tmp_path / 'resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5'
    write_keras2_weights(path, keras_arrays)
    encoder = load_encoder(f'keras:{path}?input=unit&channels=rgb')
    assert encoder.config['normalization'] == 'unit' and encoder.config['input_channels'] == 'rgb'
    assert encoder.source.endswith('?channels=rgb&input=unit')
    images = np.random.default_rng(2).random((2, 48, 48, 3)).astype(np.float32)
    close(encoder.encode(images), keras_reference_features(keras_arrays, images, 'unit'))
    with pytest.raises(WeightsError, match=r"input='rgb' for .*notop.h5; expected one of \['imagenet'"):
        load_weights(f'keras:{path}?input=rgb')
    with pytest.raises(WeightsError, match='unknown option'):
        load_weights(f'keras:{path}?scale=unit')


def test_keras_file_of_neither_layout_is_refused(tmp_path, keras_arrays):
    path = tmp_path / 'odd.h5'
    with h5py.File(path, 'w') as f:
        for key, value in keras_arrays.items():
            # Half the layers at the top level, half inside a sub-model.
            group = 'resnet50/' if key.startswith(('conv4', 'conv5')) else f'{key.split("/")[0]}/'
            f.create_dataset(f'{group}{key}:0', data=value)
    with pytest.raises(WeightsError, match=r'odd.h5: ResNet layers in several groups .*expected a Keras'):
        load_weights(path)


@pytest.mark.parametrize('writer', [write_keras2_weights, write_keras2_nested_model, write_keras3_weights])
def test_keras_layouts_give_the_same_variables(tmp_path, keras_arrays, writer):
    path = tmp_path / 'w.h5'
    writer(path, keras_arrays)
    variables = load_weights(path).variables
    params, stats = variables['params'], variables['batch_stats']
    np.testing.assert_array_equal(
        params['layer1_0']['downsample_conv']['kernel'], keras_arrays['conv2_block1_0_conv/kernel']
    )
    np.testing.assert_array_equal(params['layer4_2']['bn3']['scale'], keras_arrays['conv5_block3_3_bn/gamma'])
    np.testing.assert_array_equal(
        stats['layer3_5']['bn2']['var'], keras_arrays['conv4_block6_2_bn/moving_variance']
    )
    # Stored as in the file; the channel order is the model's business (input_channels).
    np.testing.assert_array_equal(params['conv1']['kernel'], keras_arrays['conv1_conv/kernel'])


def test_keras_missing_layer_and_wrong_shape_are_reported(tmp_path, keras_arrays):
    arrays = dict(keras_arrays)
    del arrays['conv3_block2_2_bn/moving_mean']
    arrays['conv4_block1_1_conv/bias'] = np.zeros(5, np.float32)
    path = tmp_path / 'bad.h5'
    write_keras2_weights(path, arrays)
    with pytest.raises(WeightsError) as err:
        load_weights(path)
    assert 'missing: conv3_block2_2_bn/moving_mean' in str(err.value)
    assert 'conv4_block1_1_conv/bias: file (5,)' in str(err.value) and 'expects (16,)' in str(err.value)


def test_keras_files_of_other_architectures_are_refused(tmp_path):
    path = tmp_path / 'v2.h5'
    with h5py.File(path, 'w') as f:
        f.create_dataset('conv1_conv/conv1_conv/kernel:0', data=np.zeros((7, 7, 3, 4)))
        f.create_dataset('conv2_block1_preact_bn/conv2_block1_preact_bn/gamma:0', data=np.ones(4))
    with pytest.raises(WeightsError, match='ResNetV2'):
        load_weights(path)
    with h5py.File(path, 'w') as f:
        f.create_dataset('block1_conv1/block1_conv1/kernel:0', data=np.zeros((3, 3, 3, 4)))
    with pytest.raises(WeightsError, match=r'no Keras ResNet layers .*block1_conv1'):
        load_weights(f'keras:{path}')
    path.write_bytes(b'not hdf5')
    with pytest.raises(WeightsError, match='not a readable HDF5 file'):
        load_weights(path)


def test_keras_file_with_two_resnets_is_refused(tmp_path, keras_arrays):
    path = tmp_path / 'two.h5'
    write_keras2_weights(path, keras_arrays)
    with h5py.File(path, 'a') as f:
        f.create_dataset('resnet50_1/conv1_conv/kernel:0', data=keras_arrays['conv1_conv/kernel'])
    with pytest.raises(WeightsError, match='more than one ResNet'):
        load_weights(path)


# ----------------------------------------------------------------------------- specs and init


def test_parse_spec_kinds_and_errors(tmp_path):
    (tmp_path / 'run').mkdir()
    assert parse_spec('random') == ('random', None, None)
    assert parse_spec(f'checkpoint:{tmp_path}/run@40') == ('checkpoint', tmp_path / 'run', 40)
    assert parse_spec(tmp_path / 'run') == ('checkpoint', tmp_path / 'run', None)
    assert parse_spec('/m/enc.h5')[0] == 'keras'
    assert parse_spec('/m/r50.pth')[0] == 'torchvision'
    with pytest.raises(WeightsError, match='unknown kind'):
        parse_spec('tensorflow:/m/enc.ckpt')
    with pytest.raises(WeightsError, match='cannot tell the format'):
        parse_spec('/m/enc.ckpt')
    with pytest.raises(WeightsError, match='does not exist'):
        load_weights('keras:/nonexistent/enc.h5')
    with pytest.raises(WeightsError, match='workdirs only'):
        parse_spec('keras:/m/enc.h5@3')


def test_initial_variables_replaces_the_encoder_and_keeps_the_projector(tmp_path):
    config = tiny_ssl_config()
    model = make_ssl_model(config.model)
    # Random values stand in for model.init's (compiling init would take seconds).
    shapes = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((2, 32, 32, 3)))
    rng = np.random.default_rng(0)
    variables = jax.tree.map(lambda s: jnp.asarray(rng.normal(size=s.shape), s.dtype), shapes)
    assert initial_variables('random', config.model, variables) is variables

    sd = torchvision_state_dict(18, 4, seed=5)
    path = tmp_path / 'r18.safetensors'
    save_file(sd, str(path))
    out = initial_variables(f'torchvision:{path}', config.model, variables)
    assert jax.tree.structure(out) == jax.tree.structure(variables)
    np.testing.assert_array_equal(
        out['params']['encoder']['layer2_1']['bn1']['scale'], sd['layer2.1.bn1.weight']
    )
    np.testing.assert_array_equal(out['batch_stats']['encoder']['bn1']['mean'], sd['bn1.running_mean'])
    for a, b in zip(
        jax.tree.leaves(out['params']['projector']),
        jax.tree.leaves(variables['params']['projector']),
        strict=True,
    ):
        np.testing.assert_array_equal(a, b)

    config.model.width = 8
    with pytest.raises(WeightsError, match='set model.width=4'):
        initial_variables(f'torchvision:{path}', config.model, variables)
    config.model.width = 4
    config.model.variant = 'keras'
    with pytest.raises(WeightsError, match="set model.variant='v1.5'"):
        initial_variables(str(path), config.model, variables)


def test_torch_reference_resnet50_matches_encode(tmp_path):
    """A plain torch.nn ResNet50 (v1.5) built here, fed the same state dict, in eval mode."""
    torch = pytest.importorskip('torch')
    from torch import nn

    class Bottleneck(nn.Module):
        def __init__(self, in_ch, mid, stride):
            super().__init__()
            self.conv1 = nn.Conv2d(in_ch, mid, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(mid)
            self.conv2 = nn.Conv2d(mid, mid, 3, stride, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(mid)
            self.conv3 = nn.Conv2d(mid, mid * 4, 1, bias=False)
            self.bn3 = nn.BatchNorm2d(mid * 4)
            self.downsample = None
            if stride != 1 or in_ch != mid * 4:
                self.downsample = nn.Sequential(
                    nn.Conv2d(in_ch, mid * 4, 1, stride, bias=False), nn.BatchNorm2d(mid * 4)
                )

        def forward(self, x):
            y = torch.relu(self.bn1(self.conv1(x)))
            y = torch.relu(self.bn2(self.conv2(y)))
            y = self.bn3(self.conv3(y))
            return torch.relu(y + (x if self.downsample is None else self.downsample(x)))

    class ResNet50(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
            self.bn1 = nn.BatchNorm2d(64)
            in_ch = 64
            for stage, blocks in enumerate(BLOCKS[50], start=1):
                mid = 64 * 2 ** (stage - 1)
                layer = []
                for b in range(blocks):
                    layer.append(Bottleneck(in_ch, mid, 2 if stage > 1 and b == 0 else 1))
                    in_ch = mid * 4
                setattr(self, f'layer{stage}', nn.Sequential(*layer))
            self.fc = nn.Linear(2048, 10)

        def forward(self, x):
            x = nn.functional.max_pool2d(torch.relu(self.bn1(self.conv1(x))), 3, 2, 1)
            for stage in range(1, 5):
                x = getattr(self, f'layer{stage}')(x)
            return x.mean(dim=(2, 3))

    sd = torchvision_state_dict(50, 64, seed=11)
    sd['fc.weight'] = sd['fc.weight'][:, :2048]
    net = ResNet50().eval()
    net.load_state_dict({k: torch.from_numpy(np.asarray(v)) for k, v in sd.items()})
    path = tmp_path / 'resnet50.pth'
    torch.save(net.state_dict(), path)

    images = np.random.default_rng(2).random((2, 224, 224, 3)).astype(np.float32)
    mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
    with torch.no_grad():
        x = torch.from_numpy(((images - mean) / std).astype(np.float32).transpose(0, 3, 1, 2))
        expected = net(x).numpy()
    encoder = load_encoder(f'torchvision:{path}')
    close(encoder.encode(images), expected)

    # And back out through .pth, loadable strictly by the same torch module (fc aside).
    out = encoder.export_torchvision(tmp_path / 'back.pth')
    back = torch.load(out, weights_only=True)
    missing, unexpected = net.load_state_dict(back, strict=False)
    assert sorted(missing) == ['fc.bias', 'fc.weight'] and not unexpected
    for key, value in back.items():
        assert torch.equal(value, torch.from_numpy(sd[key])), key
