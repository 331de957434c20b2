"""Tests for fewshot_jax.data.tfds_builders: tiny fake layouts, 16 px builds, no TensorFlow."""

import importlib.util
import pathlib
import sys

import numpy as np
import pytest
from PIL import Image

tfds = pytest.importorskip('tensorflow_datasets')

from fewshot_jax.data import layouts, tfds_builders  # noqa: E402
from fewshot_jax.data.io import DataError  # noqa: E402

SIZE = 16


def _image(path: pathlib.Path, value: int, shape=(40, 30)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full(shape, value, np.uint8)).save(path)


def _nanowire_copy(root: pathlib.Path) -> pathlib.Path:
    for c, cls in enumerate(layouts.NANOWIRE_CLASSES):
        for i in range(2):
            _image(root / cls / f'{cls}{i}.jpg', 40 * c + 10 * i)
            if cls in layouts.NANOWIRE_MASKED_CLASSES:
                mask = np.zeros((40, 30), np.uint8)
                mask[:10] = 255  # top quarter
                Image.fromarray(mask).save(root / cls / f'{cls}{i}.png')
    return root


def _by_file(source):
    return {p.as_posix(): i for i, p in enumerate(source.paths)}


def test_builds_and_reads_without_importing_tensorflow(tmp_path):
    if importlib.util.find_spec('tensorflow') is not None:
        pytest.skip('TensorFlow is installed; TFDS may import it')
    root = _nanowire_copy(tmp_path / 'copy')
    tfds_builders.prepare(
        'nanowire_segmentation', manual_dir=root, data_dir=tmp_path / 'tfds', resolution=SIZE
    )
    tfds_builders.TfdsSource(
        'nanowire_segmentation', split='train', data_dir=tmp_path / 'tfds', resolution=SIZE
    )[0]
    assert 'tensorflow' not in sys.modules


def test_builders_and_configs():
    assert set(tfds_builders.BUILDERS) == {
        'nanowire_morphology',
        'nanowire_segmentation',
        'mnp_morphology',
        'tem_virus',
        'cem500k',
    }
    for builder in tfds_builders.BUILDERS.values():
        assert [c.resolution for c in builder.BUILDER_CONFIGS] == [224, 384, 512, 768, 1024]
        assert builder.MANUAL_DOWNLOAD_INSTRUCTIONS.strip()
        assert issubclass(builder, tfds.core.GeneratorBasedBuilder)


def test_nanowire_morphology_roundtrip(tmp_path):
    root = _nanowire_copy(tmp_path / 'copy')
    builder = tfds_builders.prepare(
        'nanowire_morphology', manual_dir=root, data_dir=tmp_path / 'tfds', resolution=SIZE
    )
    assert builder.info.file_format.value == 'array_record'
    assert list((tmp_path / 'tfds').rglob('*.array_record*'))
    source = tfds_builders.TfdsSource(
        'nanowire_morphology', split='train', data_dir=tmp_path / 'tfds', resolution=SIZE
    )
    assert len(source) == 8
    assert source.class_names == layouts.NANOWIRE_CLASSES
    index = _by_file(source)
    assert set(index) == {f'{c}/{c}{i}.jpg' for c in layouts.NANOWIRE_CLASSES for i in (0, 1)}
    for c, cls in enumerate(layouts.NANOWIRE_CLASSES):
        for i in range(2):
            record = source[index[f'{cls}/{cls}{i}.jpg']]
            assert record['label'] == c and record['label'].dtype == np.int32
            assert source.labels[index[f'{cls}/{cls}{i}.jpg']] == c
            assert record['image'].shape == (SIZE, SIZE) and record['image'].dtype == np.float32
            # Constant images survive jpg + resize within jpg rounding.
            np.testing.assert_allclose(record['image'], (40 * c + 10 * i) / 255.0, atol=3 / 255)


def test_nanowire_segmentation_masks(tmp_path):
    root = _nanowire_copy(tmp_path / 'copy')
    tfds_builders.prepare(
        'nanowire_segmentation', manual_dir=root, data_dir=tmp_path / 'tfds', resolution=SIZE
    )
    source = tfds_builders.TfdsSource(
        'nanowire_segmentation', split='train', data_dir=tmp_path / 'tfds', resolution=SIZE
    )
    assert len(source) == 4 and source.class_names == ('dispersed', 'network')
    record = source[0]
    assert record['mask'].dtype == np.uint8 and record['mask'].shape == (SIZE, SIZE)
    # 40x30 -> 21x16 (shorter side 16), centre crop keeps rows 2..17 of 21:
    # the top-quarter mask (rows < 5.25 of 21) covers rows 0..2 of the crop.
    expected = np.zeros((SIZE, SIZE), np.uint8)
    resized = np.zeros((21, 16), np.uint8)
    for row in range(21):
        source_row = int((row + 0.5) * 40 / 21)  # nearest-neighbour sampling
        resized[row] = 1 if source_row < 10 else 0
    expected[:] = resized[2:18]
    np.testing.assert_array_equal(record['mask'], expected)


def test_tem_virus_keeps_provided_splits_and_reads_class_names(tmp_path):
    root = tmp_path / 'virus'
    for split, n in (('train', 3), ('validation', 1), ('test', 2)):
        for v, virus in enumerate(('Orf', 'Astrovirus')):
            for i in range(n):
                _image(root / split / virus / f'{i}.png', 100 * v, shape=(24, 24))
    tfds_builders.prepare('tem_virus', manual_dir=root, data_dir=tmp_path / 'tfds', resolution=SIZE)
    sizes = {}
    for split in ('train', 'validation', 'test'):
        source = tfds_builders.TfdsSource(
            'tem_virus', split=split, data_dir=tmp_path / 'tfds', resolution=SIZE
        )
        sizes[split] = len(source)
        assert source.class_names == ('Astrovirus', 'Orf')
        for i in range(len(source)):
            assert source.paths[i].parts[0] == split
            assert source.paths[i].parts[1] == source.class_names[source.labels[i]]
    assert sizes == {'train': 6, 'validation': 2, 'test': 4}


def test_class_subset_config(tmp_path):
    root = tmp_path / 'mnp'
    for cls in layouts.MNP_CLASSES:
        _image(root / cls / 'a.png', 50)
    tfds_builders.prepare(
        'mnp_morphology',
        manual_dir=root,
        data_dir=tmp_path / 'tfds',
        resolution=SIZE,
        classes=('separate_clusters', 'dispersed'),
    )
    source = tfds_builders.TfdsSource(
        'mnp_morphology',
        split='train',
        data_dir=tmp_path / 'tfds',
        config=f'res{SIZE}_dispersed-separate_clusters',
    )
    assert source.class_names == ('dispersed', 'separate_clusters') and len(source) == 2


def test_unlabeled_cem500k(tmp_path):
    for i in range(3):
        _image(tmp_path / 'cem' / f'{i}.png', 60 * i, shape=(20, 20))
    tfds_builders.prepare('cem500k', manual_dir=tmp_path / 'cem', data_dir=tmp_path / 'tfds', resolution=SIZE)
    source = tfds_builders.TfdsSource('cem500k', split='train', data_dir=tmp_path / 'tfds', resolution=SIZE)
    assert source.labels is None and source.class_names is None
    assert set(source[0]) == {'image'}
    values = sorted(round(float(source[i]['image'][8, 8]) * 255) for i in range(3))
    assert values == [0, 60, 120]


def test_bad_file_stops_the_build_and_leaves_no_dataset(tmp_path):
    root = _nanowire_copy(tmp_path / 'copy')
    (root / 'network' / 'broken.jpg').write_text('not a jpeg')
    with pytest.raises(DataError, match=r'broken\.jpg: not a readable JPG'):
        tfds_builders.prepare(
            'nanowire_morphology', manual_dir=root, data_dir=tmp_path / 'tfds', resolution=SIZE
        )
    assert not list((tmp_path / 'tfds').rglob('dataset_info.json'))
    assert not list((tmp_path / 'tfds').rglob('*.array_record*'))
    with pytest.raises(DataError, match='run tfds_builders.prepare first'):
        tfds_builders.TfdsSource(
            'nanowire_morphology', split='train', data_dir=tmp_path / 'tfds', resolution=SIZE
        )


def test_prepare_bad_arguments(tmp_path):
    with pytest.raises(DataError, match=r"unknown dataset 'mnist'"):
        tfds_builders.prepare('mnist', manual_dir=tmp_path, data_dir=tmp_path)
    with pytest.raises(DataError, match=r'(?s)missing: manual_dir does not exist.*Zenodo'):
        tfds_builders.prepare('nanowire_morphology', manual_dir=tmp_path / 'missing', data_dir=tmp_path)
    with pytest.raises(DataError, match='resolution must be an integer >= 8'):
        tfds_builders.prepare('cem500k', manual_dir=tmp_path, data_dir=tmp_path, resolution=4)


def test_square_uint8_geometry():
    image = np.zeros((10, 20), np.float32)
    image[:, 10:] = 1.0
    out = tfds_builders.square_uint8(image, 10, Image.Resampling.NEAREST)
    assert out.shape == (10, 10, 1) and out.dtype == np.uint8
    # The centre square of the 10x20 image: columns 5..14, half dark, half bright.
    np.testing.assert_array_equal(out[:, :5, 0], 0)
    np.testing.assert_array_equal(out[:, 5:, 0], 255)
