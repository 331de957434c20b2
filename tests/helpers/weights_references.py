"""Weight files and reference forwards for the weight-import tests.

Files are written from random arrays in the layouts torchvision and Keras use;
the reference forwards are plain NumPy (float64) computed from the files' own
names, independently of ``resnet.py``: what the converter must reproduce is
what Keras / torchvision would compute with those weights.
"""

import h5py
import numpy as np

BLOCKS = {18: (2, 2, 2, 2), 50: (3, 4, 6, 3)}
BN_STATS = ('weight', 'bias', 'running_mean', 'running_var')
KERAS_BN = ('gamma', 'beta', 'moving_mean', 'moving_variance')


# ----------------------------------------------------------------------------- file contents


def random_bn(rng, ch):
    return [
        rng.uniform(0.5, 1.5, ch),
        rng.normal(0, 0.1, ch),
        rng.normal(0, 0.1, ch),
        rng.uniform(0.5, 1.5, ch),
    ]


def random_conv(rng, shape_hwio):
    fan_in = shape_hwio[0] * shape_hwio[1] * shape_hwio[2]
    return rng.normal(0, np.sqrt(2.0 / fan_in), shape_hwio)


def torchvision_state_dict(depth, width, seed=0):
    """A torchvision ResNet state dict with random values, keys written out by hand."""
    rng = np.random.default_rng(seed)
    sd = {}

    def conv(key, out_ch, in_ch, k):
        sd[key] = random_conv(rng, (k, k, in_ch, out_ch)).transpose(3, 2, 0, 1)

    def bn(prefix, ch):
        for stat, value in zip(BN_STATS, random_bn(rng, ch), strict=True):
            sd[f'{prefix}.{stat}'] = value
        sd[f'{prefix}.num_batches_tracked'] = np.array(7, np.int64)

    conv('conv1.weight', width, 3, 7)
    bn('bn1', width)
    in_ch = width
    bottleneck = depth == 50
    for stage, blocks in enumerate(BLOCKS[depth], start=1):
        mid = width * 2 ** (stage - 1)
        out = mid * 4 if bottleneck else mid
        for b in range(blocks):
            pre = f'layer{stage}.{b}'
            if bottleneck:
                conv(f'{pre}.conv1.weight', mid, in_ch, 1)
                conv(f'{pre}.conv2.weight', mid, mid, 3)
                conv(f'{pre}.conv3.weight', out, mid, 1)
                for i, ch in ((1, mid), (2, mid), (3, out)):
                    bn(f'{pre}.bn{i}', ch)
            else:
                conv(f'{pre}.conv1.weight', mid, in_ch, 3)
                conv(f'{pre}.conv2.weight', mid, mid, 3)
                bn(f'{pre}.bn1', mid)
                bn(f'{pre}.bn2', mid)
            if b == 0 and (stage > 1 or in_ch != out):
                conv(f'{pre}.downsample.0.weight', out, in_ch, 1)
                bn(f'{pre}.downsample.1', out)
            in_ch = out
    sd['fc.weight'] = rng.normal(size=(10, in_ch))
    sd['fc.bias'] = rng.normal(size=(10,))
    return {k: np.ascontiguousarray(v, np.float32) if v.dtype == np.float64 else v for k, v in sd.items()}


def keras_resnet50_arrays(width, seed=0):
    """{'conv1_conv/kernel': array, …} of a Keras applications ResNet50, names written by hand."""
    rng = np.random.default_rng(seed)
    arrays = {}

    def conv(layer, k, in_ch, out_ch):
        arrays[f'{layer}/kernel'] = random_conv(rng, (k, k, in_ch, out_ch))
        arrays[f'{layer}/bias'] = rng.normal(0, 0.1, out_ch)

    def bn(layer, ch):
        for leaf, value in zip(KERAS_BN, random_bn(rng, ch), strict=True):
            arrays[f'{layer}/{leaf}'] = value

    conv('conv1_conv', 7, 3, width)
    bn('conv1_bn', width)
    in_ch = width
    for stage, blocks in zip(range(2, 6), BLOCKS[50], strict=True):
        mid = width * 2 ** (stage - 2)
        for b in range(1, blocks + 1):
            name = f'conv{stage}_block{b}'
            if b == 1:
                conv(f'{name}_0_conv', 1, in_ch, 4 * mid)
                bn(f'{name}_0_bn', 4 * mid)
            conv(f'{name}_1_conv', 1, in_ch, mid)
            conv(f'{name}_2_conv', 3, mid, mid)
            conv(f'{name}_3_conv', 1, mid, 4 * mid)
            for i, ch in ((1, mid), (2, mid), (3, 4 * mid)):
                bn(f'{name}_{i}_bn', ch)
            in_ch = 4 * mid
    return {k: v.astype(np.float32) for k, v in arrays.items()}


def layers_of(arrays):
    out = {}
    for key, value in arrays.items():
        layer, leaf = key.split('/')
        out.setdefault(layer, {})[leaf] = value
    return out


def write_keras2_weights(path, arrays):
    """Keras 2 ``save_weights`` layout: /<layer>/<layer>/<weight>:0 plus name attributes."""
    with h5py.File(path, 'w') as f:
        layers = layers_of(arrays)
        f.attrs['layer_names'] = [b'input_1', b'conv1_pad'] + [n.encode() for n in layers]
        f.create_group('input_1').attrs['weight_names'] = []
        f.create_group('conv1_pad').attrs['weight_names'] = []
        for layer, leaves in layers.items():
            group = f.create_group(layer)
            group.attrs['weight_names'] = [f'{layer}/{leaf}:0'.encode() for leaf in leaves]
            for leaf, value in leaves.items():
                group.create_dataset(f'{layer}/{leaf}:0', data=value)


def write_keras2_nested_model(path, arrays):
    """Keras 2 ``model.save``: the ResNet as sub-model 'resnet50' of a model with a projector."""
    rng = np.random.default_rng(1)
    with h5py.File(path, 'w') as f:
        f.attrs['model_config'] = b'{"class_name": "Functional"}'
        weights = f.create_group('model_weights')
        weights.attrs['layer_names'] = [b'input_2', b'resnet50', b'dense']
        weights.create_group('input_2').attrs['weight_names'] = []
        resnet = weights.create_group('resnet50')
        resnet.attrs['weight_names'] = [f'{key}:0'.encode() for key in arrays]
        for key, value in arrays.items():
            resnet.create_dataset(f'{key}:0', data=value)
        dense = weights.create_group('dense')
        dense.create_dataset('dense/kernel:0', data=rng.normal(size=(8, 4)))
        dense.create_dataset('dense/bias:0', data=np.zeros(4))
        # Optimizer slots carry layer names too; they must not be taken for weights.
        opt = f.create_group('optimizer_weights')
        opt.create_dataset('SGD/conv1_conv/kernel/momentum:0', data=np.ones((7, 7, 3, 1)))
        opt.create_dataset('SGD/m/conv1_conv/kernel:0', data=np.ones((1,)))


def write_keras3_weights(path, arrays):
    """Keras 3 ``save_weights('*.weights.h5')``: /layers/<layer>/vars/<i> in creation order."""
    order = {'kernel': 0, 'bias': 1, 'gamma': 0, 'beta': 1, 'moving_mean': 2, 'moving_variance': 3}
    with h5py.File(path, 'w') as f:
        f.create_group('layers/input_layer/vars')
        for key, value in arrays.items():
            layer, leaf = key.split('/')
            f.create_dataset(f'layers/{layer}/vars/{order[leaf]}', data=value)
        f.create_group('optimizer/vars').create_dataset('0', data=np.zeros(()))


# ----------------------------------------------------------------------------- NumPy references


def np_conv(x, kernel_hwio, stride, pad, pad_value=0.0):
    """Zero (or pad_value) padding, then a VALID convolution as a loop over kernel taps."""
    kh, kw, _, out_ch = kernel_hwio.shape
    x = np.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)), constant_values=pad_value)
    h = (x.shape[1] - kh) // stride + 1
    w = (x.shape[2] - kw) // stride + 1
    out = np.zeros((x.shape[0], h, w, out_ch))
    for i in range(kh):
        for j in range(kw):
            patch = x[:, i : i + stride * (h - 1) + 1 : stride, j : j + stride * (w - 1) + 1 : stride, :]
            out += patch @ kernel_hwio[i, j]
    return out


def np_max_pool(x, pad_value):
    x = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)), constant_values=pad_value)
    h = (x.shape[1] - 3) // 2 + 1
    w = (x.shape[2] - 3) // 2 + 1
    out = np.full((x.shape[0], h, w, x.shape[3]), -np.inf)
    for i in range(3):
        for j in range(3):
            out = np.maximum(out, x[:, i : i + 2 * (h - 1) + 1 : 2, j : j + 2 * (w - 1) + 1 : 2, :])
    return out


def np_bn(x, scale, shift, mean, var, eps):
    return (x - mean) / np.sqrt(var + eps) * scale + shift


def relu(x):
    return np.maximum(x, 0)


def keras_reference_features(arrays, images, preprocess='caffe'):
    """What keras.applications.ResNet50 (include_top=False, pooling='avg') computes.

    images: RGB float in [0, 1]. preprocess='caffe': Keras' preprocess_input flips
    to BGR, scales to 0-255 and subtracts the BGR ImageNet mean (applications
    weights); 'unit': the images as they are (the paper's notebooks).
    """
    a = {k: v.astype(np.float64) for k, v in arrays.items()}

    def conv(x, layer, stride, pad):
        return np_conv(x, a[f'{layer}/kernel'], stride, pad) + a[f'{layer}/bias']

    def bn(x, layer):
        return np_bn(x, *(a[f'{layer}/{leaf}'] for leaf in KERAS_BN), eps=1.001e-5)

    if preprocess == 'caffe':
        x = images[..., ::-1].astype(np.float64) * 255.0 - np.array([103.939, 116.779, 123.68])
    else:
        x = images.astype(np.float64)
    x = relu(bn(conv(x, 'conv1_conv', 2, 3), 'conv1_bn'))  # ZeroPadding2D(3) + 7x7/2
    x = np_max_pool(x, pad_value=0.0)  # ZeroPadding2D(1) + 3x3/2
    for stage, blocks in zip(range(2, 6), BLOCKS[50], strict=True):
        for b in range(1, blocks + 1):
            name = f'conv{stage}_block{b}'
            stride = 2 if stage > 2 and b == 1 else 1
            shortcut = bn(conv(x, f'{name}_0_conv', stride, 0), f'{name}_0_bn') if b == 1 else x
            y = relu(bn(conv(x, f'{name}_1_conv', stride, 0), f'{name}_1_bn'))  # stride here (v1)
            y = relu(bn(conv(y, f'{name}_2_conv', 1, 1), f'{name}_2_bn'))  # 'same' 3x3
            y = bn(conv(y, f'{name}_3_conv', 1, 0), f'{name}_3_bn')
            x = relu(shortcut + y)
    return x.mean(axis=(1, 2))


def torchvision_reference_features(sd, images, depth):
    """What torchvision's resnet{depth} computes in eval mode (fc removed) on normalised images."""
    s = {k: np.asarray(v, np.float64) for k, v in sd.items()}

    def conv(x, key, stride, pad):
        return np_conv(x, s[key].transpose(2, 3, 1, 0), stride, pad)

    def bn(x, prefix):
        return np_bn(x, *(s[f'{prefix}.{stat}'] for stat in BN_STATS), eps=1e-5)

    mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
    x = (images.astype(np.float64) - mean) / std
    x = relu(bn(conv(x, 'conv1.weight', 2, 3), 'bn1'))
    x = np_max_pool(x, pad_value=-np.inf)
    for stage, blocks in enumerate(BLOCKS[depth], start=1):
        for b in range(blocks):
            pre = f'layer{stage}.{b}'
            stride = 2 if stage > 1 and b == 0 else 1
            if depth == 50:
                y = relu(bn(conv(x, f'{pre}.conv1.weight', 1, 0), f'{pre}.bn1'))
                y = relu(bn(conv(y, f'{pre}.conv2.weight', stride, 1), f'{pre}.bn2'))  # v1.5
                y = bn(conv(y, f'{pre}.conv3.weight', 1, 0), f'{pre}.bn3')
            else:
                y = relu(bn(conv(x, f'{pre}.conv1.weight', stride, 1), f'{pre}.bn1'))
                y = bn(conv(y, f'{pre}.conv2.weight', 1, 1), f'{pre}.bn2')
            shortcut = x
            if f'{pre}.downsample.0.weight' in s:
                shortcut = bn(conv(x, f'{pre}.downsample.0.weight', stride, 0), f'{pre}.downsample.1')
            x = relu(y + shortcut)
    return x.mean(axis=(1, 2))
