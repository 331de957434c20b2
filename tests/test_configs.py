"""Every experiment config: the paper's settings, and a smoke run of its demo preset."""

import importlib

import pytest

from fewshot_jax.train import train_ssl

CONFIGS = ['barlow_tem', 'simclr_tem', 'barlow_imagenet', 'simclr_imagenet']


def load(name, arg=''):
    return importlib.import_module(f'configs.{name}').get_config(arg)


@pytest.mark.parametrize('name', CONFIGS)
def test_paper_settings(name):
    c = load(name)
    assert (c.model.depth, c.model.width, tuple(c.model.projector)) == (50, 64, (128, 64, 1024))
    assert (c.data.image_size, c.data.batch_size, c.data.subset) == (224, 64, 832)
    assert (c.optim.name, c.optim.lr, c.optim.momentum, c.train.epochs) == ('sgd', 0.2, 0.9, 200)
    assert c.data.source == 'folder' and c.data.root == ''
    if name.startswith('barlow'):
        assert c.loss.name == 'barlow_twins' and c.loss.lambd == 0.005
        assert c.augment.crop == 'random' and tuple(c.augment.crop_range) == (0.25, 0.5)
    else:
        assert c.loss.name == 'simclr' and c.loss.temperature == 0.1
        assert c.augment.crop == 'none'
    assert c.data.keep_color == name.endswith('imagenet')
    doc = importlib.import_module(f'configs.{name}').__doc__
    assert f'--config=configs/{name}.py' in doc and f'configs/{name}.py:demo' in doc


@pytest.mark.parametrize('name', CONFIGS)
def test_demo_preset_runs(name, tmp_path):
    c = load(name, 'demo')
    assert c.data.source.startswith('synthetic')
    c.model.width, c.model.projector = 4, (16, 16, 32)
    c.data.num_images, c.data.synthetic_size, c.data.image_size = 16, 40, 32
    c.data.batch_size, c.train.num_steps, c.train.progress = 8, 2, False
    c.num_devices = 1  # sharding is tested elsewhere; one device compiles faster
    summary = train_ssl(c, tmp_path)
    assert summary['step'] == 2 and summary['final_loss'] == summary['final_loss']  # not NaN
    assert (tmp_path / 'encoder' / 'encoder.json').exists()


def test_unknown_preset_is_named():
    with pytest.raises(ValueError, match="'big'"):
        load('barlow_tem', 'big')


def test_launch_reports_bad_data_root_without_traceback(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    result = subprocess.run(
        [sys.executable, str(repo / 'launch.py'), '--config=configs/barlow_tem.py',
         f'--workdir={tmp_path / "w"}', f'--config.data.root={tmp_path / "missing"}'],
        cwd=repo, capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    assert f'error: {tmp_path / "missing"}: data folder does not exist' in result.stderr
    assert 'Traceback' not in result.stderr
