"""Tests for fewshot_jax.data.sources on real folders written to tmp_path."""

import logging
import pathlib
import pickle

import grain.python as grain
import numpy as np
import pytest
from PIL import Image

from fewshot_jax.data import layouts, sources
from fewshot_jax.data.arrays import ArraySource
from fewshot_jax.data.io import DataError
from fewshot_jax.data.sources import (
    ClassFolderSource,
    MaskedImageSource,
    UnlabeledFolderSource,
)


def _write(path: pathlib.Path, value: int = 0, size=(8, 8), mode='L'):
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.full(size + ((3,) if mode == 'RGB' else ()), value, np.uint8)
    Image.fromarray(pixels).save(path)
    return path


def _write_mask(path: pathlib.Path, size=(8, 8), values=(0, 255)):
    path.parent.mkdir(parents=True, exist_ok=True)
    mask = np.full(size, values[0], np.uint8)
    mask[: size[0] // 2] = values[1]
    Image.fromarray(mask).save(path)
    return path


# --- UnlabeledFolderSource ---


def test_unlabeled_nested_folder_sorted_and_skips_counted(tmp_path, caplog):
    _write(tmp_path / 'b.png', 10)
    _write(tmp_path / 'a.png', 20)
    _write(tmp_path / 'sub' / 'c.jpg', 30)
    _write(tmp_path / 'sub' / 'deeper' / 'd.TIF', 40)
    (tmp_path / 'readme.txt').write_text('x')
    (tmp_path / 'sub' / 'notes.txt').write_text('x')
    (tmp_path / 'LICENSE').write_text('x')
    (tmp_path / '.DS_Store').write_bytes(b'x')
    _write(tmp_path / '.ipynb_checkpoints' / 'a-checkpoint.png')
    with caplog.at_level(logging.INFO, logger=sources.__name__):
        source = UnlabeledFolderSource(tmp_path)
    rel = [p.relative_to(tmp_path).as_posix() for p in source.paths]
    assert rel == ['a.png', 'b.png', 'sub/c.jpg', 'sub/deeper/d.TIF']
    assert source.skipped == {'(hidden)': 2, '(no extension)': 1, '.txt': 2}
    assert 'skipped 5 file(s)' in caplog.text
    assert len(source) == 4
    record = source[0]
    assert set(record) == {'image'}
    assert record['image'].dtype == np.float32 and record['image'].shape == (8, 8)
    np.testing.assert_allclose(record['image'], 20 / 255.0, atol=1e-6)


def test_unlabeled_not_recursive(tmp_path):
    _write(tmp_path / 'a.png')
    _write(tmp_path / 'sub' / 'b.png')
    assert [p.name for p in UnlabeledFolderSource(tmp_path, recursive=False).paths] == ['a.png']


def test_unlabeled_subset_is_deterministic_and_seed_dependent(tmp_path):
    for i in range(30):
        _write(tmp_path / f'img{i:02d}.png', i)
    first = UnlabeledFolderSource(tmp_path, subset=10, seed=3).paths
    again = UnlabeledFolderSource(tmp_path, subset=10, seed=3).paths
    other = UnlabeledFolderSource(tmp_path, subset=10, seed=4).paths
    assert first == again and first != other
    assert len(set(first)) == 10 and first == sorted(first)
    # The draw does not depend on the order the file system lists files in.
    reference = sorted(tmp_path.iterdir())
    chosen = np.sort(np.random.default_rng(3).choice(30, size=10, replace=False))
    assert first == [reference[i] for i in chosen]


def test_unlabeled_subset_larger_than_folder(tmp_path):
    _write(tmp_path / 'a.png')
    with pytest.raises(DataError, match=r'subset=5 but the folder has 1 images'):
        UnlabeledFolderSource(tmp_path, subset=5)


def test_missing_data_root(tmp_path):
    with pytest.raises(DataError, match=r'nowhere: data folder does not exist.*\.png'):
        UnlabeledFolderSource(tmp_path / 'nowhere')


def test_folder_without_images_names_extensions_and_skips(tmp_path):
    (tmp_path / 'a.txt').write_text('x')
    with pytest.raises(DataError, match=r'no image files found.*\.png.*\.dm4.*skipped 1 \.txt'):
        UnlabeledFolderSource(tmp_path)


def test_bad_file_raises_when_read_naming_it(tmp_path):
    _write(tmp_path / 'a.png')
    (tmp_path / 'b.png').write_bytes(b'')
    source = UnlabeledFolderSource(tmp_path)
    assert source[0]['image'].shape == (8, 8)
    with pytest.raises(DataError, match=r'b\.png: file is empty'):
        source[1]
    with pytest.raises(DataError, match=r'1 of 2 files unreadable: b\.png \(file is empty'):
        source.validate()


def test_index_out_of_range(tmp_path):
    _write(tmp_path / 'a.png')
    source = UnlabeledFolderSource(tmp_path)
    with pytest.raises(IndexError):
        source[1]
    assert source[np.int64(0)]['image'].shape == (8, 8)


def test_keep_color(tmp_path):
    _write(tmp_path / 'rgb.png', 50, mode='RGB')
    assert UnlabeledFolderSource(tmp_path, keep_color=True)[0]['image'].shape == (8, 8, 3)
    assert UnlabeledFolderSource(tmp_path)[0]['image'].shape == (8, 8)


def test_sources_are_grain_sources_and_pickle_small(tmp_path):
    for i in range(50):
        _write(tmp_path / f'{i}.png', i, size=(64, 64))
    source = UnlabeledFolderSource(tmp_path)
    assert isinstance(source, grain.RandomAccessDataSource)
    data = pickle.dumps(source)
    assert len(data) < 20_000  # paths only, no pixels (50 images are 200 kB)
    restored = pickle.loads(data)
    np.testing.assert_array_equal(restored[7]['image'], source[7]['image'])
    assert repr(restored) == repr(source)


def test_grain_map_dataset_reads_a_source(tmp_path):
    for i in range(6):
        _write(tmp_path / f'{i}.png', 10 * i)
    dataset = grain.MapDataset.source(UnlabeledFolderSource(tmp_path)).shuffle(seed=0)
    values = sorted(round(float(r['image'][0, 0]) * 255) for r in dataset)
    assert values == [0, 10, 20, 30, 40, 50]


# --- ArraySource ---


def test_array_source_records():
    images = np.random.default_rng(0).random((5, 4, 6)).astype(np.float32)
    masks = np.random.default_rng(1).random((5, 4, 6)) > 0.5
    source = ArraySource(images, labels=[0, 2, 1, 2, 0], masks=masks, class_names=('a', 'b', 'c'))
    assert len(source) == 5 and source.class_names == ('a', 'b', 'c')
    assert source.labels.dtype == np.int32
    record = source[3]
    assert set(record) == {'image', 'label', 'mask'}
    np.testing.assert_array_equal(record['image'], images[3])
    assert record['label'] == 2 and record['label'].dtype == np.int32
    assert record['mask'].dtype == np.uint8
    np.testing.assert_array_equal(record['mask'], masks[3].astype(np.uint8))
    assert isinstance(source, grain.RandomAccessDataSource)
    assert [p.as_posix() for p in source.paths[:2]] == ['array/000000', 'array/000001']


def test_array_source_uint8_and_default_class_names():
    source = ArraySource(np.full((3, 2, 2, 3), 255, np.uint8), labels=np.array([1, 1, 0]))
    assert source.class_names == ('0', '1')
    assert source[0]['image'].dtype == np.float32 and source[0]['image'].max() == 1.0
    assert set(ArraySource(np.zeros((2, 3, 3), np.float32))[1]) == {'image'}


@pytest.mark.parametrize(
    'kwargs, message',
    [
        (dict(images=np.zeros((2, 3))), r'shape \(2, 3\); expected \(N, H, W\)'),
        (dict(images=np.full((2, 3, 3), 2.0)), r'float values must be finite and in \[0, 1\]'),
        (dict(images=np.zeros((2, 3, 3), np.int64)), r'dtype int64; expected uint8'),
        (dict(images=np.zeros((2, 3, 3)), labels=[0]), r'labels: shape \(1,\)'),
        (
            dict(images=np.zeros((2, 3, 3)), labels=[0, 3], class_names=('a', 'b')),
            r'labels: values in \[0, 3\]; expected \[0, 2\)',
        ),
        (dict(images=np.zeros((2, 3, 3)), masks=np.zeros((2, 3, 4))), r'masks: shape \(2, 3, 4\)'),
        (dict(images=np.zeros((2, 3, 3)), masks=np.full((2, 3, 3), 7)), r'masks: values \[7\]'),
    ],
)
def test_array_source_bad_input(kwargs, message):
    with pytest.raises(DataError, match=message):
        ArraySource(**kwargs)


# --- ClassFolderSource ---


def test_class_folders_sorted_labels_without_reading_images(tmp_path):
    for cls, n in (('network', 2), ('bundle', 3), ('dispersed', 1)):
        for i in range(n):
            (tmp_path / cls).mkdir(exist_ok=True)
            # Unreadable content: labels must come from folder names alone.
            (tmp_path / cls / f'{i}.png').write_bytes(b'not decoded at construction')
    (tmp_path / 'README.txt').write_text('x')
    (tmp_path / 'bundle' / 'info.csv').write_text('x')
    source = ClassFolderSource(tmp_path)
    assert source.class_names == ('bundle', 'dispersed', 'network')
    assert source.labels.dtype == np.int32
    assert source.labels.tolist() == [0, 0, 0, 1, 2, 2]
    assert [p.parent.name for p in source.paths] == ['bundle'] * 3 + ['dispersed'] + ['network'] * 2
    assert source.skipped == {'(outside class folders)': 1, '.csv': 1}


def test_class_folder_records(tmp_path):
    _write(tmp_path / 'b' / 'x.png', 200)
    _write(tmp_path / 'a' / 'y.jpg', 100)
    source = ClassFolderSource(tmp_path)
    record = source[1]
    assert set(record) == {'image', 'label'}
    assert record['label'] == 1 and record['label'].dtype == np.int32
    np.testing.assert_allclose(record['image'], 200 / 255.0, atol=1e-6)


def test_class_subset_and_missing_class(tmp_path):
    for cls in ('a', 'b', 'c'):
        _write(tmp_path / cls / '0.png')
    source = ClassFolderSource(tmp_path, classes=('c', 'a'))
    assert source.class_names == ('a', 'c') and source.labels.tolist() == [0, 1]
    message = r"class folder\(s\) \['zebra'\] missing; found \['a', 'b', 'c'\]"
    with pytest.raises(DataError, match=message):
        ClassFolderSource(tmp_path, classes=('a', 'zebra'))


def test_empty_class_folder(tmp_path):
    _write(tmp_path / 'full' / '0.png')
    (tmp_path / 'empty').mkdir()
    (tmp_path / 'empty' / 'notes.txt').write_text('x')
    message = r"empty: class 'empty' has no image files.*skipped 1 \.txt"
    with pytest.raises(DataError, match=message):
        ClassFolderSource(tmp_path)


def test_root_without_class_folders(tmp_path):
    _write(tmp_path / '0.png')
    with pytest.raises(DataError, match='no class folders; expected one sub-folder per class'):
        ClassFolderSource(tmp_path)


# --- MaskedImageSource ---


def test_masks_beside_images_with_suffix(tmp_path):
    _write(tmp_path / 'a.png', 10)
    _write_mask(tmp_path / 'a_mask.png')
    _write(tmp_path / 'b.png', 20)
    _write_mask(tmp_path / 'b_mask.png', values=(0, 1))
    _write_mask(tmp_path / 'orphan_mask.png')
    source = MaskedImageSource(tmp_path)
    assert [p.name for p in source.paths] == ['a.png', 'b.png']
    assert [p.name for p in source.mask_paths] == ['a_mask.png', 'b_mask.png']
    assert source.skipped == {'(mask without image)': 1}
    record = source[1]
    assert set(record) == {'image', 'mask'}
    expected = np.zeros((8, 8), np.uint8)
    expected[:4] = 1
    np.testing.assert_array_equal(record['mask'], expected)


def test_masks_in_mirrored_folder(tmp_path):
    _write(tmp_path / 'img' / 'x' / 'a.tif', 10)
    _write_mask(tmp_path / 'masks' / 'x' / 'a.png')
    source = MaskedImageSource(tmp_path / 'img', mask_dir=tmp_path / 'masks', mask_suffix='.png')
    assert source.mask_paths == [tmp_path / 'masks' / 'x' / 'a.png']
    assert source[0]['mask'].sum() == 32


def test_nanowire_convention_png_masks_beside_jpg_in_class_folders(tmp_path):
    for cls in ('dispersed', 'network'):
        for i in range(2):
            _write(tmp_path / cls / f'{cls}{i}.jpg', 100)
            _write_mask(tmp_path / cls / f'{cls}{i}.png')
    source = MaskedImageSource(tmp_path, mask_suffix='.png', class_folders=True, extensions=('.jpg',))
    assert source.class_names == ('dispersed', 'network')
    assert source.labels.tolist() == [0, 0, 1, 1]
    assert source.skipped == {}
    record = source[2]
    assert set(record) == {'image', 'mask', 'label'} and record['label'] == 1


def test_image_without_mask_is_an_error(tmp_path):
    _write(tmp_path / 'a.png')
    _write_mask(tmp_path / 'a_mask.png')
    _write(tmp_path / 'lonely.png')
    message = r'(?s)1 image\(s\) .* have no mask.*lonely\.png -> .*lonely_mask\.png'
    with pytest.raises(DataError, match=message):
        MaskedImageSource(tmp_path)


def test_mask_size_differs_from_image_names_both(tmp_path):
    _write(tmp_path / 'a.png', size=(8, 8))
    _write_mask(tmp_path / 'a_mask.png', size=(8, 9))
    with pytest.raises(DataError, match=r'a_mask\.png: mask is 8x9 but its image .*a\.png is 8x8'):
        MaskedImageSource(tmp_path)[0]


def test_mask_with_bad_values_names_file(tmp_path):
    _write(tmp_path / 'a.png')
    _write_mask(tmp_path / 'a_mask.png', values=(0, 128))
    with pytest.raises(DataError, match=r'a_mask\.png: mask has values other than 0, 1 and 255'):
        MaskedImageSource(tmp_path)[0]


def test_mask_suffix_that_is_an_image_extension_needs_narrow_extensions(tmp_path):
    _write(tmp_path / 'a.png')
    with pytest.raises(DataError, match=r"mask_suffix '\.png' is also an accepted image extension"):
        MaskedImageSource(tmp_path, mask_suffix='.png')


# --- published layouts ---


def test_nanowire_layouts(tmp_path):
    for cls in layouts.NANOWIRE_CLASSES:
        for i in range(3):
            _write(tmp_path / cls / f'{i}.jpg', 50)
            if cls in ('dispersed', 'network'):
                gray = np.full((8, 8, 3), 50, np.uint8)
                gray[:2, :3] = (0, 0, 255)  # blue annotation, as the release's masks
                Image.fromarray(gray).save(tmp_path / cls / f'{i}.png')
    morphology = layouts.nanowire_morphology(tmp_path)
    assert morphology.class_names == ('bundle', 'dispersed', 'network', 'singular')
    assert len(morphology) == 12 and morphology.skipped == {'.png': 6}
    segmentation = layouts.nanowire_segmentation(tmp_path)
    assert segmentation.class_names == ('dispersed', 'network') and len(segmentation) == 6
    assert segmentation[0]['mask'].sum() == 6


def test_nanowire_layout_names_missing_class(tmp_path):
    for cls in ('bundle', 'dispersed', 'network'):
        _write(tmp_path / cls / '0.jpg')
    with pytest.raises(DataError, match=r"\['singular'\] missing"):
        layouts.nanowire_morphology(tmp_path)


def test_mnp_layout(tmp_path):
    for cls in layouts.MNP_CLASSES:
        _write(tmp_path / cls / '0.jpg')
    assert layouts.mnp_morphology(tmp_path).class_names == layouts.MNP_CLASSES


def test_tem_virus_layout_keeps_provided_splits(tmp_path):
    for split, n in (('train', 3), ('validation', 1), ('test', 2)):
        for cls in ('Orf', 'Astrovirus', 'Nipah'):
            for i in range(n):
                _write(tmp_path / split / cls / f'{i}.tif')
    splits = layouts.tem_virus(tmp_path)
    assert set(splits) == {'train', 'validation', 'test'}
    assert [len(splits[s]) for s in ('train', 'validation', 'test')] == [9, 3, 6]
    assert all(s.class_names == ('Astrovirus', 'Nipah', 'Orf') for s in splits.values())
    assert len(layouts.tem_virus(tmp_path, classes=('Orf', 'Nipah'))['test']) == 4
    import shutil

    shutil.rmtree(tmp_path / 'test' / 'Nipah')
    with pytest.raises(DataError, match=r"test: class folder\(s\) \['Nipah'\] missing"):
        layouts.tem_virus(tmp_path)


def test_cem500k_layout_draws_832_by_default(tmp_path):
    for i in range(840):
        (tmp_path / f'{i:04d}.png').write_bytes(b'lazy')
    source = layouts.cem500k(tmp_path, seed=1)
    assert len(source) == 832 and source.subset == 832
