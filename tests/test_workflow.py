"""The whole study as one task: the :tiny preset end to end, skipping, force, resume, report."""

import base64
import importlib
import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from unittest.mock import ANY

import pytest
from PIL import Image

from fewshot_jax import tasks, workflow
from fewshot_jax.analysis import browser_check, report

REPO = Path(__file__).resolve().parents[1]


def tiny():
    c = importlib.import_module('configs.workflow').get_config('tiny')
    c.grid.sweep = ()  # the grid has its own test below
    return c


def test_tiny_workflow_runs_every_stage_then_skips_them(tmp_path, capsys):
    summary = tasks.run('workflow', tiny(), tmp_path)
    for unit in ('pretrain/bt_tem', 'pretrain/simclr_tem', 'probe/nanowires', 'segment/nanowires'):
        assert (tmp_path / unit / workflow.DONE).is_file(), unit
    page = Path(summary['report']).read_text()
    for heading in ('Pretraining', 'Few-shot classification', 'Segmentation'):
        assert heading in page
    assert page.count('<img src="data:image/png;base64,') >= 5
    if browser_check.find_browser():  # a real browser renders every figure (where one is installed)
        rendered = browser_check.check_report(tmp_path / 'report.html')
        assert rendered['images'] >= 5 and rendered['broken'] == 0, rendered
    # The probe table holds the pretrained encoders beside the baselines, same architecture.
    probe = json.loads((tmp_path / 'probe/nanowires/probe/summary.json').read_text())
    names = {e['name'] for e in probe['encoders']}
    baselines = {'random-init', 'BN stats only', 'raw pixels', 'texture', 'intensity'}
    assert {'Barlow Twins TEM', 'SimCLR TEM'} | baselines <= names
    assert {e['dim'] for e in probe['encoders'] if e['name'] not in ('raw pixels', 'intensity')} == {32}
    # Random init is the weights the first encoder's pretraining started from; the BN-statistics
    # control is the same weights with statistics of the probe's images.
    specs = {e['name']: e['spec'] for e in probe['encoders']}
    assert specs['random-init'] == f'checkpoint:{tmp_path / "pretrain" / "bt_tem"}@0'
    assert specs['BN stats only'] == f'bn-stats:checkpoint:{tmp_path / "pretrain" / "bt_tem"}@0'
    # The gap table pairs the first encoder (whose init is listed) and the control with that init.
    gap_rows = {row['encoder'] for row in probe['gaps']['logistic']}
    assert gap_rows == {'Barlow Twins TEM', 'BN stats only'}
    assert 'paired gap over each encoder' in page and 'BN stats only (init weights' in page
    segmented = json.loads((tmp_path / 'segment/nanowires/segment/summary.json').read_text())
    assert {g['encoder'] for g in segmented['groups']} >= {'bt_tem', 'random'}
    # The U-Net's gaps pair the first encoder with each other entry (one draw: no interval).
    assert {g['versus'] for g in segmented['gaps']} >= {'random', 'otsu'}
    assert 'bt_tem − random' in page

    report_mtime = (tmp_path / 'report.html').stat().st_mtime
    capsys.readouterr()
    tasks.run('workflow', tiny(), tmp_path)
    out = capsys.readouterr().out
    assert out.count('done earlier (skipped)') == 4
    assert (tmp_path / 'report.html').stat().st_mtime >= report_mtime  # rewritten

    # A finished unit is not reused under another config: the run stops, naming the fields.
    changed = tiny()
    changed.segment.nanowires.segment.shots = (1,)
    stale = r'segment/nanowires was finished.*segment\.shots'
    with pytest.raises(workflow.WorkflowStaleUnitError, match=stale):
        tasks.run('workflow', changed, tmp_path)
    assert (tmp_path / 'segment' / 'nanowires' / workflow.DONE).is_file()  # nothing removed
    # A unit finished before configs were recorded is reused, and the terminal says it was not compared.
    (tmp_path / 'segment' / 'nanowires' / workflow.UNIT_CONFIG).unlink()
    capsys.readouterr()
    tasks.run('workflow', changed, tmp_path)
    assert 'segment/nanowires: done earlier (skipped; its config was not recorded' in capsys.readouterr().out

    forced = tiny()
    forced.force = 'probe'
    forced.stages = ('probe', 'report')
    tasks.run('workflow', forced, tmp_path)
    assert 'probe/nanowires: nanowires' in capsys.readouterr().out


def test_random_init_baselines_are_the_starting_weights_of_the_first_encoder(tmp_path):
    config = tiny()
    start = f'checkpoint:{tmp_path / "pretrain" / "bt_tem"}@0'
    ((_, _, probe),) = workflow.stage_units('probe', config, tmp_path)
    assert f'random-init={start}' in probe.probe.encoders
    ((_, _, segment),) = workflow.stage_units('segment', config, tmp_path)
    assert f'random={start}' in segment.segment.encoders
    assert not [e for e in segment.segment.encoders if e.endswith('=random')]


def test_demo_full_preset_is_the_measured_pretraining_and_unet(tmp_path):
    """:demo-full = SimCLR's :cpu pretraining, the probes' :demo presets, the :cpu U-Net at k = 8."""
    config = importlib.import_module('configs.workflow').get_config('demo-full')
    ssl = importlib.import_module('configs.ssl_base').ssl_config('simclr', 'tem', 'cpu')
    unet = importlib.import_module('configs.unet_nanowire').get_config('cpu')
    assert list(config.pretrain) == ['simclr_tem']
    assert config.pretrain.simclr_tem.to_dict() == ssl.to_dict()
    ((_, _, segment),) = workflow.stage_units('segment', config, tmp_path)
    assert segment.segment.shots == (8,)
    assert segment.segment.loss == unet.segment.loss == 'dice'
    for key in ('resolutions', 'epochs', 'num_steps', 'crop', 'decoder', 'decoder_width', 'test_flips'):
        assert segment.segment[key] == unet.segment[key], key
    start = f'checkpoint:{tmp_path / "pretrain" / "simclr_tem"}'
    assert segment.segment.encoders == (f'simclr_tem={start}', f'random={start}@0', 'none=none')
    probes = list(workflow.stage_units('probe', config, tmp_path))
    assert sorted(task for task, _, _ in probes) == ['nanoparticles', 'nanowires', 'viruses']
    assert all(p.probe.shots == (1, 2, 4, 8, 16) and p.probe.split_seeds == 20 for _, _, p in probes)


def test_demo_preset_is_the_demo_sized_pretraining_and_unet(tmp_path):
    """:demo = SimCLR's :demo pretraining, the same probes, the :demo U-Net at k = 8."""
    config = importlib.import_module('configs.workflow').get_config('demo')
    ssl = importlib.import_module('configs.ssl_base').ssl_config('simclr', 'tem', 'demo')
    unet = importlib.import_module('configs.unet_nanowire').get_config('demo')
    assert config.pretrain.to_dict() == {'simclr_tem': ssl.to_dict()}
    ((_, _, segment),) = workflow.stage_units('segment', config, tmp_path)
    assert segment.segment.shots == (8,) and segment.segment.resolutions == (128,)
    for key in ('epochs', 'loss', 'decoder', 'decoder_width', 'test_flips'):
        assert segment.segment[key] == unet.segment[key], key
    probes = {task: p.to_dict() for task, _, p in workflow.stage_units('probe', config, tmp_path)}
    full = importlib.import_module('configs.workflow').get_config('demo-full')
    assert probes == {task: p.to_dict() for task, _, p in workflow.stage_units('probe', full, tmp_path)}
    start = f'checkpoint:{tmp_path / "pretrain" / "simclr_tem"}@0'
    for p in probes.values():
        assert f'random-init={start}' in p['probe']['encoders']
        assert f'BN stats only=bn-stats:{start}' in p['probe']['encoders']
        assert 'intensity=intensity' in p['probe']['encoders']
    assert 'none=none' in segment.segment.encoders


def test_killed_during_probe_resumes_without_redoing_pretraining(tmp_path):
    args = [
        sys.executable,
        str(REPO / 'launch.py'),
        '--config=configs/workflow.py:tiny',
        f'--workdir={tmp_path}',
        '--config.stages=("pretrain","probe")',
        '--config.grid.sweep=()',
    ]
    env = dict(os.environ, XLA_FLAGS='--xla_force_host_platform_device_count=1')
    proc = subprocess.Popen(args, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    try:
        while not (tmp_path / 'probe' / 'nanowires').exists():
            assert proc.poll() is None, 'the workflow ended before reaching the probe'
            assert time.time() < deadline, 'the workflow did not reach the probe in time'
            time.sleep(0.2)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert not (tmp_path / 'probe' / 'nanowires' / workflow.DONE).exists()
    pretrained = (tmp_path / 'pretrain/bt_tem/DONE.json').stat().st_mtime
    result = subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.count('done earlier (skipped)') == 2  # both pretrainings
    assert (tmp_path / 'probe/nanowires' / workflow.DONE).is_file()
    assert (tmp_path / 'pretrain/bt_tem/DONE.json').stat().st_mtime == pretrained


def test_grid_pretrains_each_setting_and_compares_them_by_cross_validation(tmp_path):
    c = importlib.import_module('configs.workflow').get_config('tiny')
    c.stages = ('grid', 'report')
    c.pretrain = {'bt_tem': c.pretrain.bt_tem}
    c.grid.sweep = ('data.batch_size=8,16',)
    c.grid.seeds = (0, 1)
    tasks.run('workflow', c, tmp_path)
    assert sorted(p.name for p in (tmp_path / 'grid').iterdir()) == [
        'data.batch_size-16-seed0',
        'data.batch_size-16-seed1',
        'data.batch_size-8-seed0',
        'data.batch_size-8-seed1',
        'tuning',
    ]
    tuning = json.loads((tmp_path / 'grid/tuning/probe/summary.json').read_text())
    assert tuning['mode'] == 'tuning'
    # Every setting beside its runs' own inits: one gap row per setting, over its two seeds.
    gaps = {row['encoder']: row for row in tuning['gaps']['logistic']}
    assert set(gaps) == {'data.batch_size 8', 'data.batch_size 16'}
    assert {(row['by_k']['cv']['seeds'], row['by_k']['cv']['over']) for row in gaps.values()} == {
        (2, 'seeds')
    }
    page = (tmp_path / 'report.html').read_text()
    assert 'Pretraining settings' in page and 'setting − its @0 init' in page
    assert page.count('@0 of ') == 0  # the inits are not settings


def test_paper_preset_lists_missing_data_before_any_stage(tmp_path):
    c = importlib.import_module('configs.workflow').get_config('')
    with pytest.raises(workflow.WorkflowDataError) as err:
        tasks.run('workflow', c, tmp_path)
    message = str(err.value)
    for name in ('generic_tem', 'nanowires', 'nanoparticles', 'viruses', 'zenodo.6377140'):
        assert name in message
    assert not (tmp_path / 'pretrain').exists()


def test_bad_sweep_and_unknown_stage_are_named():
    with pytest.raises(workflow.ConfigError, match='section.field=v1'):
        workflow._parse_sweep('batch_size')
    assert workflow._parse_sweep('model.projector=(8,8),(16,16)') == ('model.projector', [[8, 8], [16, 16]])
    c = tiny()
    c.stages = ('pretrain', 'evaluate')
    with pytest.raises(workflow.ConfigError, match="'evaluate'"):
        workflow.run_workflow(c, '/nonexistent/never-created')


def test_report_needs_a_workflow_workdir(tmp_path):
    with pytest.raises(report.ReportError, match='workflow.json'):
        report.write_report(tmp_path)


@pytest.mark.skipif(browser_check.find_browser() is None, reason='no Chromium/Chrome on PATH')
def test_browser_check_counts_figures_that_do_not_render(tmp_path):
    buffer = io.BytesIO()
    Image.new('RGB', (4, 3), (200, 30, 30)).save(buffer, format='PNG')
    good = base64.b64encode(buffer.getvalue()).decode()
    page = tmp_path / 'page.html'
    page.write_text(
        f'<html><body><img src="data:image/png;base64,{good}">'
        '<img src="data:image/png;base64,AAAAnotapng"></body></html>'
    )
    assert browser_check.check_report(page) == {'images': 2, 'broken': 1, 'browser': ANY}
    with pytest.raises(FileNotFoundError, match='no such report file'):
        browser_check.check_report(tmp_path / 'missing.html')


def test_segment_headline_keeps_three_decimals_of_the_median_dice():
    groups = [
        {'encoder': enc, 'k': k, 'resolution': 256, 'median_dice': dice}
        for enc, k, dice in [('simclr_tem', 8, 0.7964), ('random', 8, 0.7541), ('simclr_tem', 2, 0.5)]
    ]
    line = workflow.headline('segment', 'nanowires', {'groups': groups})
    assert line == 'nanowires median Dice, k=8, 256 px: simclr_tem 0.796; random 0.754'


def test_probe_headline_ends_with_the_gap_over_the_init():
    cell = {'median': 0.5, 'ci95': [0.4, 0.6], 'mean': 0.5, 'runs': 20}
    accuracy = {'logistic': {'SimCLR TEM': {'8': cell}, 'random-init': {'8': cell}}}
    gap = {'mean': 0.123, 'ci95': [0.05, 0.2], 'seeds': 1, 'draws': 20, 'over': 'draws'}
    gaps = {
        'logistic': [
            {'encoder': 'BN stats only', 'kind': 'bn-stats', 'by_k': {'8': gap}},
            {'encoder': 'SimCLR TEM', 'kind': 'pretrained', 'by_k': {'8': gap}},
        ]
    }
    line = workflow.headline(
        'probe', 'nanowires', {'heads': ['logistic'], 'accuracy': accuracy, 'gaps': gaps}
    )
    assert line.endswith('; gap SimCLR TEM − init +0.12 [+0.05, +0.20]')
    assert 'gap' not in workflow.headline('probe', 'nanowires', {'heads': ['logistic'], 'accuracy': accuracy})
