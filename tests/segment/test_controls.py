"""The U-Net's no-encoder control ('none'): the same decoder fed zeros for the encoder's maps."""

import jax.numpy as jnp
import numpy as np
import pytest

from configs.unet_nanowire import get_config
from fewshot_jax import tasks
from fewshot_jax.models.unet import SKIP_LAYERS
from fewshot_jax.segment import SegmentConfigError, load_segmenter
from fewshot_jax.segment.model import build_unet, init_variables

TINY = {'depth': 18, 'width': 4, 'variant': 'v1.5', 'input_mean': [0.5] * 3, 'input_std': [0.25] * 3}


def test_no_encoder_unet_sees_only_the_image():
    images = jnp.asarray(np.random.default_rng(0).random((2, 64, 64, 3)), jnp.float32)
    model = build_unet(TINY, 'unet', encoder_features=False)
    one = init_variables(model, None, seed=0)
    other = init_variables(model, None, seed=1)
    # The same decoder under two different encoders: identical logits.
    swapped = {c: {'encoder': other[c]['encoder'], 'decoder': one[c]['decoder']} for c in one}
    logits = model.apply(one, images, train=False)
    np.testing.assert_array_equal(np.asarray(logits), np.asarray(model.apply(swapped, images, train=False)))
    # Exactly the decoder fed zeros in place of every encoder map, and the image itself.
    _, maps = model.encoder.apply({c: one[c]['encoder'] for c in one}, images, train=False)
    skips = {name: jnp.zeros_like(maps[name]) for name in SKIP_LAYERS}
    skips['image'] = images
    want = model.decoder.apply({c: one[c]['decoder'] for c in one}, skips, train=False)
    np.testing.assert_allclose(np.asarray(logits), np.asarray(want), rtol=1e-6, atol=1e-6)
    # With the encoder's features the same variables give other logits.
    with_features = build_unet(TINY, 'unet').apply(one, images, train=False)
    assert not np.allclose(np.asarray(logits), np.asarray(with_features))
    # And the image does matter.
    assert not np.allclose(np.asarray(logits), np.asarray(model.apply(one, images[::-1], train=False)))


def test_stage_on_tiny_scores_the_no_encoder_control(tmp_path):
    config = get_config('tiny')
    config.segment.decoder = 'unet'
    config.segment.encoders = ('random=random', 'none=none')
    config.segment.shots = (2,)
    summary = tasks.run('segment', config, tmp_path)
    assert {g['encoder'] for g in summary['groups']} == {'random', 'none', 'otsu'}
    seg = load_segmenter(tmp_path / 'segment', run='none_64px_k2')
    assert seg.encoder_features is False and seg.info['encoder'] == 'none'
    assert seg.info['encoder_source'].startswith('none')
    assert load_segmenter(tmp_path / 'segment', run='random_64px_k2').encoder_features is True
    images = (np.random.default_rng(1).random((1, 64, 64)) * 255).astype(np.uint8)
    assert seg.predict(images, progress=False).shape == (1, 64, 64)


def test_no_encoder_control_needs_the_decoder_with_the_image_skip(tmp_path):
    config = get_config('tiny')
    config.segment.encoders = ('random=random', 'none=none')
    assert config.segment.decoder == 'paper'
    with pytest.raises(
        SegmentConfigError, match=r"segment.decoder='paper': the no-encoder control \('none'\)"
    ):
        tasks.run('segment', config, tmp_path)
    assert not (tmp_path / 'segment').exists()


def test_cpu_sized_presets_list_the_control_and_call_otsu_weak():
    for preset in ('demo', 'cpu'):
        assert 'none=none' in get_config(preset).segment.encoders
    assert 'none=none' not in get_config('').segment.encoders  # the paper decoder has no image skip
    from fewshot_jax.segment.data import otsu_masks

    assert 'weak baseline' in otsu_masks.__doc__


def test_draw_gaps_pair_the_first_encoder_with_each_entry_per_draw():
    from fewshot_jax.segment.report import draw_gaps

    rng = np.random.default_rng(0)
    rows = [
        {'encoder': e, 'resolution': 64, 'k': 2, 'draw': d, 'dice': float(rng.random())}
        for d in range(3)
        for e in ('otsu', 'pretrained', 'random')
        for _ in range(5)
    ]
    gaps = {g['versus']: g for g in draw_gaps(rows)}
    assert set(gaps) == {'otsu', 'random'} and all(g['encoder'] == 'pretrained' for g in gaps.values())
    # Plain loop: per draw, the difference of medians; then mean and t-interval over the 3 draws.
    per_draw = []
    for d in range(3):
        mine = sorted(r['dice'] for r in rows if r['encoder'] == 'pretrained' and r['draw'] == d)
        theirs = sorted(r['dice'] for r in rows if r['encoder'] == 'random' and r['draw'] == d)
        per_draw.append(mine[2] - theirs[2])  # the median of 5 values
    mean = sum(per_draw) / 3
    sd = (sum((g - mean) ** 2 for g in per_draw) / 2) ** 0.5
    half = 4.302652729911275 * sd / 3**0.5  # t(0.975, 2 degrees of freedom)
    assert gaps['random']['draws'] == 3
    assert gaps['random']['mean_gap'] == pytest.approx(mean, abs=1e-4)
    assert gaps['random']['low'] == pytest.approx(mean - half, abs=1e-4)
    assert gaps['random']['high'] == pytest.approx(mean + half, abs=1e-4)
    one = draw_gaps([r for r in rows if r['draw'] == 0])
    assert all(g['draws'] == 1 and g['low'] is None for g in one)


def test_stage_scores_every_draw_on_its_own_split(tmp_path):
    config = get_config('tiny')
    config.segment.encoders = ('random=random',)
    config.segment.shots = (1,)
    config.segment.draws = 2
    summary = tasks.run('segment', config, tmp_path)
    runs = sorted(p.name for p in (tmp_path / 'segment' / 'runs').iterdir())
    assert runs == ['random_64px_k1', 'random_64px_k1_draw1']
    import csv

    with (tmp_path / 'segment' / 'results.csv').open() as f:
        rows = list(csv.DictReader(f))
    by_draw = {d: {r['image'] for r in rows if r['draw'] == d} for d in ('0', '1')}
    assert by_draw['0'] and by_draw['1'] and by_draw['0'] != by_draw['1']  # other test images
    assert [(g['versus'], g['draws']) for g in summary['gaps']] == [('otsu', 2)]
    assert summary['gaps'][0]['low'] is not None
    config.segment.first_draw = 1
    summary = tasks.run('segment', config, tmp_path)  # draw 1 is reused, draw 2 is new
    runs = sorted(p.name for p in (tmp_path / 'segment' / 'runs').iterdir())
    assert runs == ['random_64px_k1', 'random_64px_k1_draw1', 'random_64px_k1_draw2']
    assert summary['default_model'] == 'runs/random_64px_k1_draw1/model'
    config.segment.draws = 0
    with pytest.raises(SegmentConfigError, match='segment.draws'):
        tasks.run('segment', config, tmp_path / 'bad')
    config.segment.draws, config.segment.first_draw = 1, -1
    with pytest.raises(SegmentConfigError, match='segment.first_draw=-1'):
        tasks.run('segment', config, tmp_path / 'bad')
