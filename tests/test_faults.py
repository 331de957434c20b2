"""Environment faults, injected on real files and processes: each ends in one line or is handled.

``launch.py`` runs in subprocesses on ``:tiny`` configs; the faults are the environment's
(a full disk at the file openers, a read-only workdir, SIGINT, damaged files on disk), never
patches of the code under test.
"""

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fewshot_jax.data import sources
from fewshot_jax.data.io import DataError

REPO = Path(__file__).resolve().parents[1]
INJECT = REPO / 'tests' / 'helpers' / 'inject_faults.py'
TINY_PRETRAIN = '--config=configs/barlow_tem.py:tiny'


def launch(*args, env=None, timeout=240, script=REPO / 'launch.py'):
    """Runs launch.py (or the fault injector around it) and returns the finished process."""
    full_env = dict(os.environ, XLA_FLAGS='--xla_force_host_platform_device_count=1', **(env or {}))
    return subprocess.run(
        [sys.executable, str(script), *args],
        cwd=REPO,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def one_error_line(result) -> str:
    """The run failed with exactly one line on stderr, starting 'error: '; returns it."""
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode != 0, result.stdout[-2000:]
    assert len(lines) == 1 and lines[0].startswith('error: '), result.stderr[-3000:]
    return lines[0]


@pytest.mark.parametrize(
    'args, expected',
    [
        (['--config.optim.lrr=0.1'], 'error: unknown config key optim.lrr (did you mean optim.lr?)'),
        (['--config.optimm.lr=0.1'], 'error: unknown config key optimm.lr (did you mean optim.lr?)'),
        (['--config=configs/barlow_tem.py:demoo'], "unknown preset 'demoo'"),
        (['--config=configs/no_such_file.py'], 'config file configs/no_such_file.py: No such file'),
        (['--config.train.num_steps=-1'], 'train.num_steps=-1: expected a positive integer'),
    ],
    ids=['misspelled-key', 'misspelled-section', 'unknown-preset', 'missing-config-file', 'bad-value'],
)
def test_config_errors_are_one_line_and_create_no_workdir(tmp_path, args, expected):
    workdir = tmp_path / 'w'
    result = launch(TINY_PRETRAIN, f'--workdir={workdir}', *args)
    assert result.returncode == 1
    assert expected in one_error_line(result)
    assert not workdir.exists()


def unwritable_folder(tmp_path: Path, kind: str) -> Path:
    """A workdir that cannot be written: under a read-only folder, or under a regular file."""
    if kind == 'under-a-file':
        (tmp_path / 'file').write_text('not a folder')
        return tmp_path / 'file' / 'w'
    folder = tmp_path / 'readonly'
    folder.mkdir()
    folder.chmod(0o555)
    try:
        (folder / 'probe').touch()
    except OSError:
        return folder / 'w'
    pytest.skip('chmod does not stop this user from writing (root)')


@pytest.mark.parametrize('kind', ['read-only', 'under-a-file'])
def test_unwritable_workdir_is_one_line(tmp_path, kind):
    workdir = unwritable_folder(tmp_path, kind)
    try:
        line = one_error_line(launch(TINY_PRETRAIN, f'--workdir={workdir}'))
    finally:
        (tmp_path / 'readonly').exists() and (tmp_path / 'readonly').chmod(0o755)
    assert line.startswith(f'error: workdir {workdir} is not writable')


def test_read_only_file_system_is_one_line_also_for_root(tmp_path):
    workdir = tmp_path / 'w'
    result = launch(TINY_PRETRAIN, f'--workdir={workdir}', env={'FAULT_EROFS': str(tmp_path)}, script=INJECT)
    assert (
        one_error_line(result)
        == f'error: workdir {workdir} is not writable (Read-only file system: {tmp_path})'
    )
    assert not workdir.exists()


def test_full_disk_during_a_checkpoint_names_the_step_and_where_a_rerun_resumes(tmp_path):
    # Steps 2, 4, 6 are saved; the disk is "full" for everything under checkpoints/4.
    result = launch(
        TINY_PRETRAIN, f'--workdir={tmp_path}', env={'FAULT_ENOSPC': '/checkpoints/4'}, script=INJECT
    )
    expected = f'error: no space left on device writing {tmp_path}/checkpoints/4; '
    assert one_error_line(result) == expected + 'free space and rerun to resume from step 2'
    assert result.returncode == 1
    assert 'No space left on device' in (tmp_path / 'log.txt').read_text()  # the traceback
    rerun = launch(TINY_PRETRAIN, f'--workdir={tmp_path}')
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert 'resumed_from: 2' in rerun.stdout


def _interrupt_when(args: list, marker: Path, timeout: float, signum=signal.SIGINT):
    """Runs ``args`` on one device, sends ``signum`` (Ctrl-C) once ``marker`` exists;
    (process, stderr)."""
    env = dict(os.environ, XLA_FLAGS='--xla_force_host_platform_device_count=1')
    pipe = subprocess.PIPE
    proc = subprocess.Popen(args, cwd=REPO, env=env, stdout=pipe, stderr=pipe, text=True)
    deadline = time.time() + timeout
    try:
        while not marker.exists():
            assert proc.poll() is None, proc.stderr.read()[-2000:]
            assert time.time() < deadline, f'{marker} did not appear within {timeout} s'
            time.sleep(0.1)
        proc.send_signal(signum)
        _, stderr = proc.communicate(timeout=120)
    finally:
        proc.kill()
    return proc, stderr


@pytest.mark.parametrize(('signum', 'status'), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_ctrl_c_or_sigterm_says_where_the_run_stopped_and_a_rerun_resumes(
    tmp_path, signum, status, default_sigint
):
    args = [sys.executable, str(REPO / 'launch.py'), TINY_PRETRAIN, f'--workdir={tmp_path}']
    args += ['--config.train.num_steps=100000']
    proc, stderr = _interrupt_when(args, tmp_path / 'checkpoints' / '4', 180, signum)
    assert proc.returncode == status, stderr[-3000:]
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr[-3000:]
    assert lines[0].startswith('error: interrupted at step ')
    assert f'in {tmp_path}; rerunning the same command resumes from step ' in lines[0]


def test_rerun_of_a_finished_pretraining_reports_its_recorded_loss(tmp_path):
    first = launch(TINY_PRETRAIN, f'--workdir={tmp_path}')
    assert first.returncode == 0, first.stderr[-2000:]
    again = launch(TINY_PRETRAIN, f'--workdir={tmp_path}')
    assert again.returncode == 0, again.stderr[-2000:]
    loss = [line for line in first.stdout.splitlines() if 'final_loss' in line]
    assert loss and loss == [line for line in again.stdout.splitlines() if 'final_loss' in line]
    assert 'nan' not in loss[0]
    assert 'already_finished: True' in again.stdout


# --- Folder scans: nothing dropped or unreadable in silence ---


def write_png(path: Path, value: int = 128, size=(8, 8), rgb=None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.full(size, value, np.uint8)
    if rgb is not None:
        pixels = np.stack([pixels] * 3, axis=-1)
        pixels[: size[0] // 2] = rgb  # a coloured stroke over the grey image
    Image.fromarray(pixels).save(path)
    return path


@pytest.mark.parametrize('layout', ['linked-subfolder', 'linked-class-folder', 'link-loop'])
def test_symlinked_folders_are_followed_and_loops_counted(tmp_path, layout):
    root, elsewhere = tmp_path / 'root', tmp_path / 'elsewhere'
    write_png(root / 'a' / 'x.png')
    write_png(elsewhere / 'y.png')
    if layout == 'linked-subfolder':
        (root / 'a' / 'more').symlink_to(elsewhere, target_is_directory=True)
        source = sources.UnlabeledFolderSource(root)
        assert [p.relative_to(root).as_posix() for p in source.paths] == ['a/more/y.png', 'a/x.png']
        assert source.skipped == {}
    elif layout == 'linked-class-folder':
        (root / 'b').symlink_to(elsewhere, target_is_directory=True)
        (elsewhere / 'deeper').symlink_to(tmp_path / 'third', target_is_directory=True)
        write_png(tmp_path / 'third' / 'z.png')
        source = sources.ClassFolderSource(root)
        assert source.class_names == ('a', 'b') and source.labels.tolist() == [0, 1, 1]
        assert [p.name for p in source.paths] == ['x.png', 'z.png', 'y.png']
    else:
        (root / 'a' / 'loop').symlink_to(root, target_is_directory=True)
        source = sources.UnlabeledFolderSource(root)
        assert [p.name for p in source.paths] == ['x.png']
        assert source.skipped == {sources.LINK_REVISIT: 1}  # counted, and logged as a warning


def damaged_folder(root: Path) -> list[str]:
    """18 png files, 3 of them unreadable in different ways; returns the bad names."""
    for i in range(15):
        write_png(root / f'good{i:02d}.png', value=10 * i)
    (root / 'a.png').write_text('a text file named like an image')
    truncated = write_png(root / 'b.png', size=(64, 64)).read_bytes()
    (root / 'b.png').write_bytes(truncated[: len(truncated) // 2])
    (root / 'c.png').write_bytes(b'')
    return ['a.png', 'b.png', 'c.png']


def test_every_unreadable_file_is_listed_before_training(tmp_path):
    bad = damaged_folder(tmp_path / 'images')
    with pytest.raises(DataError) as err:
        sources.UnlabeledFolderSource(tmp_path / 'images').check_readable('error')
    message = str(err.value)
    assert '3 of 18 files unreadable: a.png (not a readable PNG image' in message
    assert all(f'{name} (' in message for name in bad)
    assert "data.on_unreadable='skip'" in message and '\n' not in message


def test_on_unreadable_skip_counts_and_lists_them_on_the_console(tmp_path, caplog):
    damaged_folder(tmp_path / 'images')
    source = sources.UnlabeledFolderSource(tmp_path / 'images')
    with caplog.at_level(logging.WARNING):
        skipped = source.check_readable('skip')
    assert [p.name for p in skipped] == ['a.png', 'b.png', 'c.png']
    assert len(source) == 15 and source.skipped == {'(unreadable)': 3}
    assert '3 of 18 files unreadable: a.png' in caplog.text


def test_launch_lists_unreadable_files_in_one_line_and_creates_no_checkpoint(tmp_path):
    damaged_folder(tmp_path / 'images')
    result = launch(
        TINY_PRETRAIN,
        f'--workdir={tmp_path / "w"}',
        '--config.data.source=folder',
        f'--config.data.root={tmp_path / "images"}',
        '--config.data.subset=None',
    )
    assert '3 of 18 files unreadable: a.png (' in one_error_line(result)
    assert not (tmp_path / 'w' / 'checkpoints').exists()


@pytest.mark.parametrize('encoding', [None, 'color_overlay'])
def test_colour_masks_need_the_config_key_the_error_names(tmp_path, encoding):
    from configs.unet_nanowire import get_config
    from fewshot_jax.segment import data as segment_data

    for name in ('one', 'two'):
        write_png(tmp_path / 'wires' / f'{name}.png')
        write_png(tmp_path / 'wires' / f'{name}_mask.png', rgb=(255, 0, 0))
    cfg = get_config('tiny').data
    cfg.source, cfg.root, cfg.classes, cfg.mask_encoding = (
        'masked_folder',
        str(tmp_path),
        ('wires',),
        encoding,
    )
    if encoding is None:
        with pytest.raises(DataError, match="set data.mask_encoding='color_overlay'"):
            segment_data.load_mask_set(cfg)
        return
    masks = segment_data.load_mask_set(cfg).masks
    assert [m[:4].min() for m in masks] == [1, 1] and [m[4:].max() for m in masks] == [0, 0]


# --- Artefacts written and read back: a damaged file is named, never used ---


def flip_bit(path: Path, where: float = 0.5) -> None:
    data = bytearray(path.read_bytes())
    data[int(len(data) * where)] ^= 0x10
    path.write_bytes(bytes(data))


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


DAMAGE = {'bit-flip': flip_bit, 'truncation': truncate}


@pytest.fixture(scope='module')
def saved_segmenter(tmp_path_factory):
    from fewshot_jax.segment.model import build_unet, init_variables
    from fewshot_jax.segment.segmenter import Segmenter

    model = {'depth': 18, 'width': 4}
    variables = init_variables(build_unet(model, 'paper', 1), None, seed=0)
    return Segmenter(variables, model, resolution=64).save(tmp_path_factory.mktemp('seg') / 'model')


@pytest.mark.parametrize('damage', sorted(DAMAGE))
@pytest.mark.parametrize('name', ['decoder.msgpack', 'encoder.msgpack', 'segmenter.json'])
def test_a_damaged_segmenter_file_is_named_not_used(saved_segmenter, tmp_path, name, damage):
    from fewshot_jax.segment.segmenter import load_segmenter

    folder = tmp_path / 'model'
    shutil.copytree(saved_segmenter, folder)
    DAMAGE[damage](folder / name)
    with pytest.raises(Exception) as err:
        load_segmenter(folder)
    assert type(err.value).__module__.startswith('fewshot_jax')  # launch.py: one line
    assert str(folder / name) in str(err.value) and 'rerun the segmentation' in str(err.value)


def test_a_segmenter_saved_without_checksums_still_loads_and_says_so(saved_segmenter, tmp_path, caplog):
    from fewshot_jax.segment.segmenter import load_segmenter

    folder = tmp_path / 'model'
    shutil.copytree(saved_segmenter, folder)
    meta = json.loads((folder / 'segmenter.json').read_text())
    del meta['sha256'], meta['meta_sha256']  # as written before checksums were recorded
    (folder / 'segmenter.json').write_text(json.dumps(meta))
    with caplog.at_level(logging.WARNING):
        image = np.random.default_rng(0).random((40, 40)).astype(np.float32)
        assert load_segmenter(folder).predict(image[None]).shape == (1, 40, 40)
    assert 'decoder.msgpack has no recorded checksum' in caplog.text


@pytest.fixture(scope='module')
def pretrained(tmp_path_factory):
    from configs.ssl_base import ssl_config
    from fewshot_jax import tasks

    workdir = tmp_path_factory.mktemp('pretrained')
    tasks.run('pretrain', ssl_config('barlow_twins', 'tem', 'tiny'), workdir)
    return workdir


@pytest.mark.parametrize('damage', sorted(DAMAGE))
@pytest.mark.parametrize('folder', ['encoder', 'encoder_init'])
def test_a_damaged_encoder_export_is_named_not_used(pretrained, tmp_path, folder, damage):
    from fewshot_jax import integrity, load_encoder

    workdir = tmp_path / 'w'
    shutil.copytree(pretrained, workdir)
    files = sorted(p for p in (workdir / folder / 'variables').rglob('*') if p.is_file())
    largest = max(files, key=lambda p: p.stat().st_size)  # the array data
    DAMAGE[damage](largest)
    spec = f'checkpoint:{workdir}' + ('@0' if folder == 'encoder_init' else '')
    with pytest.raises(integrity.IntegrityError, match=f'{workdir / folder / "variables"} is damaged'):
        load_encoder(spec)


def test_an_encoder_exported_without_a_checksum_still_loads_and_says_so(pretrained, tmp_path, caplog):
    from fewshot_jax import load_encoder

    workdir = tmp_path / 'w'
    shutil.copytree(pretrained, workdir)
    meta = json.loads((workdir / 'encoder' / 'encoder.json').read_text())
    del meta['sha256'], meta['meta_sha256']  # as written before checksums were recorded
    (workdir / 'encoder' / 'encoder.json').write_text(json.dumps(meta))
    with caplog.at_level(logging.WARNING):
        encoder = load_encoder(f'checkpoint:{workdir}')
    assert encoder.encode(np.zeros((1, 32, 32), np.float32)).shape[0] == 1
    assert 'has no recorded checksum' in caplog.text


@pytest.mark.parametrize('damage', sorted(DAMAGE))
def test_a_damaged_feature_cache_is_named_and_recomputed(tmp_path, damage, caplog):
    from fewshot_jax.probe import features

    images = np.random.default_rng(0).integers(0, 255, (6, 8, 8), np.uint8)
    extractor = features.Extractor('pixels', 'pixels', 'fp', lambda x: x.reshape(len(x), -1) / 255.0)
    first = features.compute_features(extractor, images, [0, 1] * 3, ('a', 'b'), cache_dir=tmp_path)
    flip_bit(first.path, where=0.3) if damage == 'bit-flip' else truncate(first.path)
    with caplog.at_level(logging.WARNING):
        again = features.compute_features(extractor, images, [0, 1] * 3, ('a', 'b'), cache_dir=tmp_path)
    assert not again.cached and np.array_equal(again.features, first.features)
    assert f'{first.path} is unreadable or damaged' in caplog.text
    assert features.compute_features(extractor, images, [0, 1] * 3, ('a', 'b'), cache_dir=tmp_path).cached


# --- Errors that say what would fix them ---


@pytest.mark.parametrize(
    'per_class, min_test, needed', [(1, 1, 2), (5, 2, 8), (7, 2, 8)], ids=['one-image', 'probe-5', 'probe-7']
)
def test_a_small_class_is_told_how_many_images_the_split_needs(per_class, min_test, needed):
    from fewshot_jax.data import splits

    labels = np.repeat([0, 1], [per_class, 20])
    with pytest.raises(
        DataError, match=f"class 0 \\('a'\\) has {per_class} image.*at least {needed} images per class"
    ):
        splits.stratified_split(labels, 0.2, 0, class_names=('a', 'b'), min_test=min_test)
    assert splits.min_images_per_class(0.2, min_test) == needed
    full = np.repeat([0, 1], [needed, 20])
    _, test = splits.stratified_split(full, 0.2, 0, min_test=min_test)
    assert (full[test] == 0).sum() >= min_test


@pytest.mark.parametrize(
    'override, expected',
    [
        (
            '--config.pretrain.bt_tem.train.num_steps=-1',
            'error: pretrain.bt_tem.train.num_steps=-1: expected',
        ),
        (
            '--config.segment.nanowires.segment.shots=(0,)',
            'error: segment.nanowires.segment.shots=0: expected',
        ),
    ],
    ids=['pretrain-unit', 'segment-unit'],
)
def test_workflow_config_errors_name_the_full_key_before_any_unit_runs(tmp_path, override, expected):
    workdir = tmp_path / 'w'
    result = launch('--config=configs/workflow.py:tiny', f'--workdir={workdir}', override)
    assert one_error_line(result).startswith(expected)
    assert not workdir.exists()


@pytest.mark.parametrize('artefact', ['segmenter', 'encoder'])
def test_a_changed_value_in_json_metadata_is_seen(saved_segmenter, pretrained, tmp_path, artefact):
    """A bit flip that leaves valid JSON (0.5 -> 0.4) changes what is loaded: it is caught too."""
    from fewshot_jax import integrity, load_encoder
    from fewshot_jax.segment.segmenter import load_segmenter

    if artefact == 'segmenter':
        shutil.copytree(saved_segmenter, tmp_path / 'model')
        path, field, load = (
            tmp_path / 'model' / 'segmenter.json',
            'threshold',
            lambda: load_segmenter(path.parent),
        )
    else:
        shutil.copytree(pretrained, tmp_path / 'w')
        path = tmp_path / 'w' / 'encoder' / 'encoder.json'
        load = lambda: load_encoder(f'checkpoint:{tmp_path / "w"}')  # noqa: E731
    meta = json.loads(path.read_text())
    if artefact == 'segmenter':
        meta[field] -= 0.1
    else:
        meta['model']['input_norm'] = 'micrograph'  # would normalise inputs another way
    path.write_text(json.dumps(meta))
    with pytest.raises(integrity.IntegrityError, match=f'{path} is damaged'):
        load()


def test_verbosity_1_shows_the_traceback_above_the_error_line(tmp_path):
    result = launch(
        TINY_PRETRAIN, f'--workdir={tmp_path / "w"}', '--config.train.num_steps=-1', '--verbosity=1'
    )
    assert result.returncode == 1
    assert 'Traceback (most recent call last)' in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith('error: train.num_steps=-1')


def test_ctrl_c_in_a_workflow_unit_names_the_unit(tmp_path, default_sigint):
    args = [
        sys.executable,
        str(REPO / 'launch.py'),
        '--config=configs/workflow.py:tiny',
        f'--workdir={tmp_path}',
    ]
    args += ['--config.stages=("pretrain","probe")', '--config.grid.sweep=()']
    proc, stderr = _interrupt_when(args, tmp_path / 'probe' / 'nanowires', 300)
    assert proc.returncode == 130, stderr[-3000:]
    lines = [line for line in stderr.splitlines() if line.strip()]
    # Warnings of the finished units may come first; the error is the last line, no traceback.
    assert 'Traceback' not in stderr
    assert lines[-1] == (
        'error: interrupted in probe/nanowires; rerunning the same command resumes (finished units are kept)'
    )


def test_a_unit_recorded_without_the_new_data_fields_is_still_reused(tmp_path):
    import importlib

    from fewshot_jax import workflow

    config = importlib.import_module('configs.workflow').get_config('tiny')
    ((unit, _, sub),) = workflow.stage_units('segment', config, tmp_path)
    current = workflow._portable_config(sub, tmp_path)
    recorded = json.loads(json.dumps(current))
    del recorded['data']['on_unreadable'], recorded['data']['mask_encoding']
    (tmp_path / workflow.UNIT_CONFIG).write_text(json.dumps(recorded))
    assert workflow._check_unchanged(tmp_path, f'segment/{unit}', current)
    current['data']['on_unreadable'] = 'skip'  # a real change is still one
    with pytest.raises(workflow.WorkflowStaleUnitError, match='data.on_unreadable'):
        workflow._check_unchanged(tmp_path, f'segment/{unit}', current)
