"""Grouped splits: images derived from one original never straddle a k-shot set and its test part.

A nanowire-layout folder is written to disk with the release's rotation names
(``<stem>_1/_2/_3.jpg`` beside ``<stem>.jpg``), read by the layout, and every split, draw and
fold of the probe's plans is checked image pair by image pair against the originals worked
out here from the file names.
"""

import pathlib

import numpy as np
import pytest
from PIL import Image

from fewshot_jax.data import layouts, splits
from fewshot_jax.data.io import DataError
from fewshot_jax.data.sources import ClassFolderSource
from fewshot_jax.probe import grid


def write_jpg(path: pathlib.Path, value: int = 128) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((8, 8), value, np.uint8)).save(path)


@pytest.fixture(scope='module')
def nanowires(tmp_path_factory):
    root = tmp_path_factory.mktemp('nanowires')
    for cls in ('bundle', 'dispersed', 'network'):
        for i in range(10):
            write_jpg(root / cls / f'{cls}_{i + 4}.jpg')
    # A name that looks like a rotation but has no original beside it: a group of its own.
    write_jpg(root / 'dispersed' / 'lonely_2.jpg')
    for i in range(6):
        write_jpg(root / 'singular' / f'wire{i}.jpg')
        for r in (1, 2, 3):
            write_jpg(root / 'singular' / f'wire{i}_{r}.jpg')
    return root


def original_of(path: pathlib.Path) -> str:
    """The reference rule, written out: strip one _1/_2/_3 if the unrotated file exists."""
    stem = path.stem
    if stem[-2:] in ('_1', '_2', '_3') and (path.parent / f'{stem[:-2]}{path.suffix}').exists():
        stem = stem[:-2]
    return f'{path.parent.name}/{stem}'


def test_nanowire_layout_groups_rotations_with_their_original(nanowires):
    source = layouts.nanowire_morphology(nanowires)
    expected = [original_of(p) for p in source.paths]
    for a in range(len(source)):
        for b in range(len(source)):
            assert (source.groups[a] == source.groups[b]) == (expected[a] == expected[b])
    assert len(set(expected)) == 3 * 10 + 1 + 6


def test_rotations_never_straddle_a_split_draw_holdout_or_fold(nanowires):
    source = layouts.nanowire_morphology(nanowires)
    original = [original_of(p) for p in source.paths]
    labels = source.labels.astype(np.int64)
    for seed in range(40):
        runs = grid.protocol_plan(
            labels,
            shots=(1, 2),
            split_seeds=[seed],
            draws=3,
            shot_seed=seed,
            holdout_per_class=1,
            groups=source.groups,
        )
        runs += grid.tuning_plan(labels, split_seeds=[seed], folds=2, groups=source.groups)
        for run in runs:
            sides = {'train': run.train, 'test': run.test, 'holdout': run.holdout}
            for name_a, side_a in sides.items():
                for name_b, side_b in sides.items():
                    if name_a >= name_b:
                        continue
                    for i in side_a:
                        for j in side_b:
                            assert original[i] != original[j], (seed, name_a, name_b, original[i])


def test_ungrouped_split_can_straddle_so_the_check_has_teeth(nanowires):
    source = layouts.nanowire_morphology(nanowires)
    labels = source.labels.astype(np.int64)
    codes = splits.group_ids(source.groups, labels)
    straddled = 0
    for seed in range(20):
        train, test = splits.stratified_split(labels, 0.2, seed)
        if np.intersect1d(codes[train], codes[test]).size:
            straddled += 1
            with pytest.raises(DataError, match='share 1 group|share [0-9]+ group'):
                splits.check_disjoint(train=train, test=test, groups=codes)
    assert straddled > 0


def test_grouped_split_keeps_the_class_balance(nanowires):
    source = layouts.nanowire_morphology(nanowires)
    labels = source.labels.astype(np.int64)
    train, test = splits.stratified_split(labels, 0.2, 3, groups=source.groups)
    assert np.array_equal(np.sort(np.concatenate([train, test])), np.arange(len(labels)))
    singular = source.class_names.index('singular')
    assert np.sum(labels[test] == singular) == 4  # 20 % of 24 images, one group of 4


def test_groups_csv_for_any_class_folder_source(tmp_path):
    for cls in ('a', 'b'):
        for i in range(4):
            write_jpg(tmp_path / cls / f'{i}.jpg')
    (tmp_path / 'groups.csv').write_text('file,group\na/0.jpg,x\na/1.jpg,x\nb/2.jpg,y\n')
    source = ClassFolderSource(tmp_path)
    groups = dict(zip((p.relative_to(tmp_path).as_posix() for p in source.paths), source.groups, strict=True))
    assert groups['a/0.jpg'] == groups['a/1.jpg'] == 'x' and groups['a/2.jpg'] == 'a/2.jpg'
    assert source.skipped == {}  # groups.csv is not an image outside the class folders

    (tmp_path / 'groups.csv').write_text('a/0.jpg,x\na/9.jpg,x\n')
    with pytest.raises(DataError, match=r"groups.csv:2: 'a/9.jpg' is not an image of this data set"):
        ClassFolderSource(tmp_path)
    (tmp_path / 'groups.csv').write_text('a/0.jpg,x\nb/1.jpg,y\na/0.jpg,z\n')
    with pytest.raises(DataError, match=r"groups.csv:3: 'a/0.jpg' is given group 'z' and, earlier, 'x'"):
        ClassFolderSource(tmp_path)
    (tmp_path / 'groups.csv').write_text('a/0.jpg,x\nb/0.jpg,x\n')
    source = ClassFolderSource(tmp_path)
    with pytest.raises(DataError, match="group 'x' holds images of class 0 and class 1"):
        splits.stratified_split(source.labels.astype(np.int64), 0.25, 0, groups=source.groups)
