"""segment: fit / Segmenter.predict (tiled) / save-load, the stage through the task registry,
the predict CLI, and the bad-input errors."""

import json
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest
from PIL import Image

from configs.unet_nanowire import get_config
from fewshot_jax import tasks
from fewshot_jax.data import synthetic
from fewshot_jax.data.io import DataError
from fewshot_jax.segment import (
    SegmentConfigError,
    SegmentDataError,
    fit,
    load_segmenter,
    main,
    metrics,
    random_encoder,
)
from fewshot_jax.segment.model import build_unet, init_variables
from fewshot_jax.segment.segmenter import Segmenter, SegmenterError
from fewshot_jax.segment.task import check_config, stage_steps
from fewshot_jax.segment.tiles import blend_weights, tile_starts, tile_stride
from fewshot_jax.segment.train import BatchStream, make_mesh_for, paper_epochs, steps_for

TINY = {'depth': 18, 'width': 4}
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope='module')
def wires():
    data = synthetic.nanowires(4, 64, seed=0)
    keep = np.isin(data.labels, [1, 2])  # dispersed, network
    return data.images[keep], data.masks[keep]


@pytest.fixture(scope='module')
def fitted(wires, tmp_path_factory):
    images, masks = wires
    workdir = tmp_path_factory.mktemp('fit')
    seg = fit(
        random_encoder(TINY, seed=0),
        images,
        masks,
        steps=12,
        lr=3e-3,
        workdir=workdir,
        progress=False,
        tile_overlap=0.5,
    )
    return seg, workdir


def test_tile_starts_cover_the_image_on_the_32px_grid():
    for tile in (64, 96, 128):
        for overlap in (0, 16, 32, 48):
            for length in range(tile, 6 * tile + 1, 32):
                starts = tile_starts(length, tile, overlap)
                assert starts[0] == 0 and starts[-1] == length - tile
                assert all(s % 32 == 0 for s in starts)
                gaps = np.diff(starts)
                assert np.all(gaps > 0) and np.all(gaps <= tile_stride(tile, overlap))
    assert tile_starts(64, 64, 16) == [0]


def test_blend_weights_keep_every_pixel_covered():
    tile, overlap = 128, 64
    inner = blend_weights(tile, overlap)
    assert inner[: overlap // 4].max() == 0 and inner[overlap // 2 : -overlap // 2].min() == 1
    assert blend_weights(tile, overlap, first=True)[0] == 1
    starts = tile_starts(448, tile, overlap)
    total = np.zeros(448)
    for s in starts:
        total[s : s + tile] += blend_weights(tile, overlap, s == 0, s == starts[-1])
    assert total.min() > 0


def _local_segmenter(resolution=64, overlap=0.5):
    """A U-Net whose output sees only the stem (~10 px): its deepest path is cut off."""
    model = build_unet(TINY, 'paper', 1)
    variables = init_variables(model, None, seed=0)
    up3 = variables['params']['decoder']['up3']
    up3['kernel'] = np.zeros_like(up3['kernel'])
    return Segmenter(variables, TINY, resolution=resolution, tile_overlap=overlap)


def test_tiled_prediction_equals_whole_image_prediction_for_a_local_model():
    seg = _local_segmenter()
    images = np.random.default_rng(0).random((2, 200, 170)).astype(np.float32)
    tiled = seg.predict(images)
    whole = seg.predict(images, mode='whole')
    assert tiled.shape == whole.shape == (2, 200, 170)
    # Every kept tile pixel is > 8 px from its tile's cut edges, beyond this model's reach:
    # tiles and the whole image compute the same numbers.
    np.testing.assert_allclose(tiled, whole, atol=1e-5)


def test_tiled_prediction_of_a_trained_model_matches_whole_image_in_the_interior(fitted):
    seg, _ = fitted
    image = synthetic.nanowires(1, 192, seed=5).images[2]
    tiled = seg.predict(image)
    whole = seg.predict(image, mode='whole')
    assert tiled.shape == whole.shape == (192, 192)
    # A ResNet sees far beyond a 64-px tile, so tiles differ from the whole image by what
    # their cut-off context contributed. Stated tolerance: mean |difference| < 0.05 and
    # 99th percentile < 0.2 in the interior (16 px from the image border).
    diff = np.abs(tiled - whole)[16:-16, 16:-16]
    assert diff.mean() < 0.05 and np.percentile(diff, 99) < 0.2, (diff.mean(), diff.max())


def test_predict_takes_any_size_dtype_and_layout(fitted):
    seg, _ = fitted
    rng = np.random.default_rng(1)
    small = rng.random((40, 50)).astype(np.float32)  # smaller than a tile: padded
    wide = (rng.random((70, 150)) * 255).astype(np.uint8)
    deep = (rng.random((64, 64)) * 65535).astype(np.uint16)
    colour = rng.random((64, 80, 3)).astype(np.float32)
    out = seg.predict([small, wide, deep, colour])
    assert [o.shape for o in out] == [(40, 50), (70, 150), (64, 64), (64, 80)]
    assert all(o.dtype == np.float32 and 0 <= o.min() and o.max() <= 1 for o in out)
    assert seg.predict(small).shape == (40, 50)
    batch = seg.predict(np.stack([small, small])[..., None])
    assert batch.shape == (2, 40, 50)
    np.testing.assert_allclose(batch[0], out[0], atol=1e-6)
    # At half scale the image is segmented at 20x25 px and resized back to its own size.
    assert seg.predict(small, scale=0.5).shape == (40, 50)
    masks = seg.predict_masks([small, wide])
    assert masks[1].dtype == np.uint8 and set(np.unique(masks[1])) <= {0, 1}
    with pytest.raises(SegmenterError, match=r'image 0: float values over .*expected \[0, 1\]'):
        seg.predict(small * 2)
    with pytest.raises(SegmenterError, match='no images'):
        seg.predict([])
    with pytest.raises(SegmenterError, match="mode='grid'"):
        seg.predict(small, mode='grid')


def test_flips_average_the_eight_symmetries_and_make_predictions_equivariant(fitted):
    seg, _ = fitted
    image = np.random.default_rng(2).random((70, 96)).astype(np.float32)  # not square
    averaged = seg.predict(image, flips=True)
    # Reference: a plain loop over rotations and flips of the image, each undone.
    reference = np.zeros((70, 96))
    for turns in range(4):
        for flip in (False, True):
            view = np.rot90(image, turns)
            view = view[:, ::-1] if flip else view
            prob = seg.predict(np.ascontiguousarray(view))
            prob = prob[:, ::-1] if flip else prob
            reference += np.rot90(prob, -turns) / 8
    np.testing.assert_allclose(averaged, reference, atol=1e-6)
    # Equivariance: segmenting a turned or mirrored image gives the turned or mirrored map.
    np.testing.assert_allclose(seg.predict(np.rot90(image).copy(), flips=True), np.rot90(averaged), atol=1e-5)
    np.testing.assert_allclose(seg.predict(image[::-1].copy(), flips=True), averaged[::-1], atol=1e-5)
    assert not np.allclose(seg.predict(image), averaged, atol=1e-3)  # without flips: not equivariant
    batch = seg.predict([image, image[:40]], flips=True)
    np.testing.assert_allclose(batch[0], averaged, atol=1e-6)
    assert batch[1].shape == (40, 96)


def test_fit_trains_and_saves_a_loadable_segmenter(fitted, wires):
    seg, workdir = fitted
    images, masks = wires
    records = [json.loads(line) for line in (workdir / 'metrics.jsonl').read_text().splitlines()]
    assert records[-1]['step'] == 12 and np.isfinite(records[-1]['loss'])
    assert seg.resolution == 64 and seg.pixel_scale == 1.0 and seg.info['steps'] == 12
    loaded = load_segmenter(workdir / 'model')
    assert repr(loaded) == repr(seg)
    np.testing.assert_array_equal(loaded.predict(images[:2]), seg.predict(images[:2]))
    copy = seg.save(workdir / 'copy')
    assert (copy / 'encoder.msgpack').is_file()
    np.testing.assert_array_equal(load_segmenter(copy).predict(images[:1]), seg.predict(images[:1]))
    # The decoder was trained: its predictions differ from an untrained decoder's.
    untrained = Segmenter(init_variables(build_unet(TINY), None, 0), TINY, resolution=64)
    assert np.abs(untrained.predict(images[:2]) - seg.predict(images[:2])).max() > 1e-3


def test_fit_rejects_bad_masks_and_settings(wires):
    images, masks = wires
    encoder = random_encoder(TINY)
    with pytest.raises(SegmentDataError, match=r'image 1: mask of shape \(64, 60\)'):
        fit(encoder, images[:2], [masks[0], masks[1][:, :60]], steps=1)
    bad = masks[:2].copy()
    bad[1, 0, 0] = 255
    with pytest.raises(SegmentDataError, match=r'image 1: mask values \[0, 1, 255\].*binary'):
        fit(encoder, images[:2], bad, steps=1)
    with pytest.raises(SegmentConfigError, match='resolution: resolution 100 must be a multiple'):
        fit(encoder, images[:2], masks[:2], resolution=100, steps=1)
    with pytest.raises(SegmentDataError, match='2 images but 1 masks'):
        fit(encoder, images[:2], masks[:1], steps=1)
    with pytest.raises(SegmentDataError, match=r'image 0: float values over .*; expected \[0, 1\]'):
        fit(encoder, images[:2] * 255, masks[:2], steps=1)
    with pytest.raises(SegmentConfigError, match='crop=96: larger than the training resolution 64'):
        fit(encoder, images[:2], masks[:2], crop=96, steps=1)


def test_stage_steps_have_a_floor_in_the_small_data_presets():
    """The paper preset keeps the paper's epochs by k; :demo and :cpu never drop below their
    floor however few images a k gives (2 training images at k = 1, 16 at k = 8)."""
    expected = {
        '': {1: steps_for(120, 2, 4), 8: steps_for(60, 16, 4)},  # 60, 240: the paper's epochs
        'demo': {1: 240, 2: 240, 4: 240, 8: 240},
        'cpu': {1: 400, 2: 400, 4: 400, 8: 600},
    }
    for preset, steps in expected.items():
        seg = get_config(preset).segment
        for k, want in steps.items():
            assert stage_steps(seg, k, 2 * k) == want, (preset, k)
    seg = get_config('demo').segment
    seg.num_steps = 7  # an explicit budget is taken as given
    assert stage_steps(seg, 1, 2) == 7
    config = get_config('tiny')
    config.segment.min_steps = 0
    with pytest.raises(SegmentConfigError, match='segment.min_steps=0'):
        check_config(config)


def test_schedule_mesh_and_batch_stream():
    assert [paper_epochs(k) for k in (1, 2, 4, 8, 16, 32, 80)] == [120, 120, 120, 60, 40, 30, 20]
    assert steps_for(60, 16, 4) == 240 and steps_for(120, 2, 4) == 60
    assert make_mesh_for(4).devices.size == 4 and make_mesh_for(6).devices.size == 6
    assert make_mesh_for(5).devices.size == 5 and make_mesh_for(4, num_devices=1).devices.size == 1
    mesh = make_mesh_for(4, num_devices=1)
    images = np.arange(6, dtype=np.uint8)[:, None, None, None] * np.ones((1, 2, 2, 1), np.uint8)
    masks = np.zeros((6, 2, 2), np.uint8)

    def firsts(stream, n):
        return [np.asarray(next(stream)['image'])[:, 0, 0, 0].tolist() for _ in range(n)]

    stream = BatchStream(images, masks, 4, seed=3, mesh=mesh)
    seen = firsts(stream, 3)  # 12 images: exactly two epochs, each a permutation of 0..5
    flat = sum(seen, [])
    assert sorted(flat[:6]) == list(range(6)) and sorted(flat[6:]) == list(range(6))
    state = stream.get_state()
    rest = firsts(stream, 2)
    resumed = BatchStream(images, masks, 4, seed=3, mesh=mesh, state=json.loads(json.dumps(state)))
    assert firsts(resumed, 2) == rest


def test_crop_stream_cuts_aligned_windows_and_resumes_the_same_ones():
    mesh = make_mesh_for(4, num_devices=1)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (5, 96, 64, 1), dtype=np.uint8)
    masks = rng.integers(0, 2, (5, 96, 64), dtype=np.uint8)

    def find(window, mask_window):
        # A plain search: the image, row and column the window was cut from.
        hits = []
        for i in range(len(images)):
            for y in range(96 - 32 + 1):
                for x in range(64 - 32 + 1):
                    if np.array_equal(images[i, y : y + 32, x : x + 32], window):
                        hits.append((i, y, x))
        assert len(hits) == 1
        i, y, x = hits[0]
        assert np.array_equal(masks[i, y : y + 32, x : x + 32], mask_window)
        return hits[0]

    stream = BatchStream(images, masks, 4, seed=3, mesh=mesh, crop=32)
    whole = BatchStream(images, masks, 4, seed=3, mesh=mesh)
    cuts = []
    for _ in range(3):
        batch, full = next(stream), next(whole)
        assert batch['image'].shape == (4, 32, 32, 1) and batch['mask'].shape == (4, 32, 32)
        windows, mask_windows = np.asarray(batch['image']), np.asarray(batch['mask'])
        picks = [find(w, m) for w, m in zip(windows, mask_windows, strict=True)]
        # The same images, in the same order, as the uncropped stream.
        order = [int(np.argmax((images == f).all((1, 2, 3)))) for f in np.asarray(full['image'])]
        assert [i for i, _, _ in picks] == order
        cuts += picks
    assert len({(y, x) for _, y, x in cuts}) > 6  # corners vary over presentations
    state = stream.get_state()
    rest = [np.asarray(next(stream)['image']) for _ in range(2)]
    resumed = BatchStream(images, masks, 4, seed=3, mesh=mesh, state=json.loads(json.dumps(state)), crop=32)
    for expected in rest:
        assert np.array_equal(np.asarray(next(resumed)['image']), expected)


def test_stage_runs_through_the_task_registry_and_skips_finished_runs(tmp_path):
    config = get_config('tiny')
    summary = tasks.run('segment', config, tmp_path)
    stage = tmp_path / 'segment'
    lines = (stage / 'results.csv').read_text().splitlines()
    header = lines[0].split(',')
    assert header[:6] == ['encoder', 'resolution', 'k', 'draw', 'image', 'class']
    assert {
        'dice',
        'iou',
        'soft_dice',
        'percolates_true',
        'percolates_pred',
        'density_true',
        'density_pred',
    } <= set(header)
    # 2 test images (1 per class) x 2 shots x (random encoder + Otsu baseline).
    assert len(lines) - 1 == 2 * 2 * 2
    for name in ('dice_iou_vs_k.png', 'median_dice_vs_k.png', 'overlays_random.png'):
        assert (stage / 'figures' / name).stat().st_size > 1000
    groups = {(g['encoder'], g['k']) for g in summary['groups']}
    assert groups == {('random', 1), ('random', 2), ('otsu', 1), ('otsu', 2)}
    assert 'Dice (median [IQR])' in (stage / 'summary.txt').read_text()
    seg = load_segmenter(stage)  # the default model: first encoder, largest px and k
    assert seg.info['name'] == 'random_64px_k2' and seg.info['k'] == 2
    assert load_segmenter(tmp_path, run='random_64px_k1').info['k'] == 1
    assert not (stage / 'runs' / 'random_64px_k1' / 'checkpoints').exists()
    # The finished runs are skipped the second time: nothing is retrained.
    metrics_file = stage / 'runs' / 'random_64px_k1' / 'metrics.jsonl'
    before = metrics_file.stat().st_mtime_ns
    again = tasks.run('segment', config, tmp_path)
    assert metrics_file.stat().st_mtime_ns == before
    assert again['groups'] == summary['groups']
    with pytest.raises(SegmenterError, match="no finished segmentation run 'nope'"):
        load_segmenter(stage, run='nope')


def test_stage_trained_on_crops_predicts_whole_test_images_in_crop_tiles(tmp_path):
    config = get_config('tiny')
    config.segment.shots = (1,)
    config.segment.crop = 32
    summary = tasks.run('segment', config, tmp_path)
    seg = load_segmenter(tmp_path / 'segment')
    assert seg.resolution == 32 and seg.info['resolution'] == 64  # tiles of 32 on 64-px images
    assert seg.info['crop'] == 32
    # Every test image is scored at the stage's resolution, by U-Net and by Otsu.
    assert {(g['encoder'], g['resolution']) for g in summary['groups']} == {('random', 64), ('otsu', 64)}


@pytest.mark.parametrize(
    ('key', 'value', 'message'),
    [
        ('segment.resolutions', (64, 100), 'segment.resolutions: resolution 100 must be a multiple'),
        ('segment.encoders', ('random',), "segment.encoders entry 'random': expected"),
        ('segment.decoder', 'fcn', "segment.decoder='fcn': expected one of"),
        ('segment.loss', 'focal', "segment.loss='focal'"),
        ('segment.shots', (0, 2), 'segment.shots=0: expected a positive integer'),
        ('segment.epochs', 2.5, 'segment.epochs=2.5'),
        ('segment.bn_momentum', 1.5, r'segment.bn_momentum=1.5: expected a number in \[0, 1\)'),
        ('segment.num_classes', 3, 'segment.num_classes=3: the stage scores binary masks'),
        ('data.test_fraction', 0.0, r'data.test_fraction=0.0: expected a number in \(0, 1\)'),
        ('data.source', 'web', "data.source='web'"),
        ('segment.crop', 48, 'segment.crop: resolution 48 must be a multiple'),
        ('segment.crop', 128, 'segment.crop=128: larger than the training resolution 64'),
    ],
)
def test_stage_config_errors_name_the_key_before_any_work(key, value, message, tmp_path):
    config = get_config('tiny')
    section, field = key.split('.')
    config[section][field] = value
    with pytest.raises(SegmentConfigError, match=message):
        tasks.run('segment', config, tmp_path)
    assert not (tmp_path / 'segment').exists()


def test_optional_fields_parse_none_from_the_command_line():
    from absl import flags
    from ml_collections import config_flags

    values = flags.FlagValues()
    argv = [
        'launch.py',
        f'--config={REPO / "configs" / "unet_nanowire.py"}:tiny',
        '--config.segment.num_steps=None',
        '--config.segment.epochs=30',
        '--config.segment.decoder_width=16',
    ]
    config_flags.DEFINE_config_file(
        'config', None, 'config', flag_values=values, lock_config=True, sys_argv=argv
    )
    values(argv)
    config = values.config
    assert config.segment.num_steps is None and config.segment.epochs == 30
    assert config.segment.decoder_width == 16


def test_masked_folder_with_a_wrong_size_mask_names_the_file(tmp_path):
    for name in ('dispersed', 'network'):
        (tmp_path / name).mkdir()
        for i in range(3):
            Image.fromarray(np.full((40, 40), 100, np.uint8)).save(tmp_path / name / f'{i}.png')
            size = (30, 40) if (name, i) == ('network', 2) else (40, 40)
            Image.fromarray(np.zeros(size, np.uint8)).save(tmp_path / name / f'{i}_mask.png')
    config = get_config('tiny')
    config.data.source = 'masked_folder'
    config.data.root = str(tmp_path)
    with pytest.raises(DataError, match=r'network/2_mask.png: mask is 30x40 but its image'):
        tasks.run('segment', config, tmp_path / 'work')


def test_predict_cli_writes_native_size_masks(fitted, tmp_path):
    _, workdir = fitted
    images = tmp_path / 'images'
    (images / 'sub').mkdir(parents=True)
    rng = np.random.default_rng(2)
    Image.fromarray((rng.random((50, 90)) * 255).astype(np.uint8)).save(images / 'a.png')
    Image.fromarray((rng.random((130, 70)) * 255).astype(np.uint8)).save(images / 'sub' / 'b.tif')
    out = tmp_path / 'masks'
    assert (
        main(
            [
                'predict',
                '--model',
                str(workdir / 'model'),
                '--images',
                str(images),
                '--out',
                str(out),
                '--probabilities',
            ]
        )
        == 0
    )
    a, b = np.asarray(Image.open(out / 'a.png')), np.asarray(Image.open(out / 'sub' / 'b.png'))
    assert a.shape == (50, 90) and b.shape == (130, 70)
    assert set(np.unique(a)) <= {0, 255}
    prob = np.load(out / 'sub' / 'b.npy')
    np.testing.assert_array_equal(b, np.where(prob >= 0.5, 255, 0))


def test_predict_cli_on_a_folder_without_images_is_a_clear_error(fitted, tmp_path):
    _, workdir = fitted
    (tmp_path / 'empty').mkdir()
    (tmp_path / 'empty' / 'notes.txt').write_text('no images here')
    result = subprocess.run(
        [
            sys.executable,
            '-m',
            'fewshot_jax.segment',
            'predict',
            '--model',
            str(workdir / 'model'),
            '--images',
            str(tmp_path / 'empty'),
            '--out',
            str(tmp_path / 'out'),
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={'JAX_PLATFORMS': 'cpu', 'PATH': '/usr/bin:/bin'},
    )
    assert result.returncode == 2
    assert f'{tmp_path / "empty"}: no image files found' in result.stderr


def test_validation_split_keeps_the_best_step(wires, tmp_path):
    images, masks = wires
    seg = fit(
        random_encoder(TINY),
        images,
        masks,
        steps=4,
        workdir=tmp_path,
        validation_fraction=0.25,
        progress=False,
    )
    best = json.loads((tmp_path / 'best.json').read_text())
    assert seg.info['selected_step'] == best['step'] and 0 <= best['dice'] <= 1
    logged = [json.loads(line) for line in (tmp_path / 'metrics.jsonl').read_text().splitlines()]
    assert any('validation/dice' in r for r in logged)
    probs = seg.predict(images[:2])
    assert probs.shape == (2, 64, 64)
    assert np.all(np.isfinite(np.asarray(metrics.dice(probs, masks[:2]))))
    assert jax.device_count() == 8


def test_otsu_baseline_polarity_from_training_masks_or_per_image():
    from fewshot_jax.segment.data import otsu_masks, otsu_polarity

    side = 64
    mask = np.zeros((side, side), np.uint8)
    mask[30:33, 8:56] = 1  # a horizontal wire
    # Illumination falling from 230 to 90 across the image, a wire 60 grey levels darker:
    # a global threshold would cut the image in two halves, not find the wire.
    ramp = np.linspace(230, 90, side)[None, :].repeat(side, 0)
    dark_wire = np.clip(ramp - 60 * mask, 0, 255).astype(np.uint8)[..., None]
    bright_wire = 255 - dark_wire
    assert otsu_polarity(np.stack([dark_wire, dark_wire]), np.stack([mask, mask])) is False
    assert otsu_polarity(np.stack([bright_wire]), np.stack([mask])) is True
    assert otsu_polarity(np.stack([dark_wire, bright_wire]), np.stack([mask, mask])) is None
    both = np.stack([dark_wire, bright_wire])
    for polarity, expected in ((None, [mask, mask]), (False, [mask, None]), (True, [None, mask])):
        found = otsu_masks(both, polarity)
        for got, want in zip(found, expected, strict=True):
            if want is not None:
                dice = 2 * np.sum(got & want) / (got.sum() + want.sum())
                assert dice > 0.75, (polarity, dice)  # the blur's halo at the wire's edges costs a little
    # Without flattening, one global threshold splits the ramp instead of finding the wire.
    from skimage.filters import threshold_otsu

    naive = dark_wire[..., 0] <= threshold_otsu(dark_wire[..., 0])
    assert 2 * np.sum(naive & mask) / (naive.sum() + mask.sum()) < 0.3
