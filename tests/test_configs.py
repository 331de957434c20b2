"""Every experiment config: the paper's settings, and a smoke run of its demo preset."""

import ast
import importlib
import re
from pathlib import Path

import pytest
from absl import flags
from ml_collections import config_flags

from fewshot_jax import tasks
from fewshot_jax.pretrain.task import check_config
from tests.helpers.benchmarks import load_benchmark

REPO = Path(__file__).resolve().parents[1]

CONFIGS = ['barlow_tem', 'simclr_tem', 'barlow_imagenet', 'simclr_imagenet']


def load(name, arg=''):
    return importlib.import_module(f'configs.{name}').get_config(arg)


@pytest.mark.parametrize('name', CONFIGS)
def test_paper_settings(name):
    c = load(name)
    assert (c.model.depth, c.model.width, tuple(c.model.projector)) == (50, 64, (128, 64, 1024))
    assert (c.data.image_size, c.data.batch_size, c.data.subset) == (224, 64, 832)
    # The notebook's run: plain SGD, Keras ResNet50 from ImageNet weights the user gives, fed
    # RGB in [0, 1], projector Dense -> ReLU -> BN on running statistics (docs/paper.md).
    assert (c.optim.name, c.optim.lr, c.optim.momentum, c.train.epochs) == ('sgd', 0.2, 0.0, 200)
    assert c.optim.schedule == 'cosine' and c.optim.decay_steps == 1000  # our fix stays the default
    assert (c.model.init, c.model.variant, c.model.input_channels) == ('required', 'keras', 'rgb')
    assert tuple(c.model.input_mean) == (0, 0, 0) and tuple(c.model.input_std) == (1, 1, 1)
    assert (c.model.projector_order, c.model.projector_bn) == ('paper', 'frozen')
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
    assert c.monitor.tasks  # every pretraining config names its online probe


@pytest.mark.parametrize('name', CONFIGS)
def test_demo_preset_uses_synthetic_data_and_monitors_the_synthetic_tasks(name):
    c = load(name, 'demo')
    assert c.data.source.startswith('synthetic')
    assert set(c.monitor.tasks) >= {'nanowires', 'nanoparticles'}
    check_config(c)


@pytest.mark.parametrize('name', CONFIGS)
def test_tiny_preset_runs(name, tmp_path):
    c = load(name, 'tiny')
    c.num_devices = 1  # sharding is tested elsewhere; one device compiles faster
    c.train.num_steps = 2
    summary = tasks.run('pretrain', c, tmp_path)
    assert summary['step'] == 2 and summary['final_loss'] == summary['final_loss']  # not NaN
    assert (tmp_path / 'encoder' / 'encoder.json').exists()


def documented_overrides():
    """Every ``--config.x=value`` written in the README and the config files' docstrings."""
    found = set()
    for path in [REPO / 'README.md', *sorted((REPO / 'configs').glob('*.py'))]:
        text = path.read_text()
        if path.suffix == '.py':
            text = ast.get_docstring(ast.parse(text)) or ''
        for match in re.finditer(r'--config\.([\w.]+)=([^\s`]+)', text):
            if match[1] != 'x':
                found.add((path.name, match[1], match[2]))
    return sorted(found)


def parse(config_file, *overrides):
    """The config as launch.py would build it from the command line."""
    values = flags.FlagValues()
    argv = ['launch.py', f'--config={REPO / "configs" / config_file}', *overrides]
    config_flags.DEFINE_config_file(
        'config', None, 'config', flag_values=values, lock_config=True, sys_argv=argv
    )
    values(argv)
    return values.config


@pytest.mark.parametrize(('where', 'key', 'value'), documented_overrides())
def test_documented_override_parses_and_validates(where, key, value):
    if value[:1] in ('"', "'") and len(value) > 1 and value[-1] == value[0]:
        value = value[1:-1]  # quoted for the shell (parentheses), as the shell passes it
    elif value.startswith(('"', "'")):
        pytest.skip('a shell-quoted value spanning spaces; its parse is tested with its config')
    config_file = where if where.endswith('.py') and where != 'ssl_base.py' else 'barlow_tem.py'
    if where == 'README.md' and key.split('.')[0] in ('force', 'roots', 'grid', 'stages', 'init'):
        config_file = 'workflow.py'
    if where == 'README.md' and key.split('.')[0] in ('probe', 'select', 'segment'):
        config_file = {'probe': 'probe_nanowire.py', 'select': 'select.py', 'segment': 'unet_nanowire.py'}[
            key.split('.')[0]
        ]
    if config_file not in {f'{n}.py' for n in CONFIGS} | {'workflow.py'}:
        pytest.skip(f'{config_file} is not a pretraining or workflow config')
    # The paper presets need model.init (the ImageNet weights) before anything else runs.
    init = [] if key == 'model.init' or config_file == 'workflow.py' else ['--config.model.init=random']
    config = parse(config_file, f'--config.{key}={value}', *init)
    node = config
    for part in key.split('.'):
        node = node[part]
    if value == 'None':
        assert node is None
    else:
        written = ast.literal_eval(value) if isinstance(node, tuple) else value
        assert str(node) == value.strip('"\'') or node == type(node)(written)
    placeholder = '/path' in value or '...' in value or value.startswith('/data')
    if not placeholder and key != 'model.variant' and config_file != 'workflow.py':
        check_config(config)  # (keras needs keras weights with model.variant)


@pytest.mark.parametrize(
    ('override', 'message'),
    [
        ('--config.loss.name=foo', "loss.name='foo'"),
        ('--config.data.batch_size=0', 'data.batch_size=0'),
        ('--config.model.dtype=float8', "model.dtype='float8'"),
        ('--config.model.stem=tiny', "model.stem='tiny'"),
        ('--config.augment.crop=0', 'augment.crop'),
        ('--config.data.subset=-3', 'data.subset=-3'),
        ('--config.train.log_every=-1', 'train.log_every=-1'),
        ('--config.data.source=web', "data.source='web'"),
    ],
)
def test_bad_values_are_project_errors_naming_the_key(override, message):
    from fewshot_jax.errors import ConfigError
    from fewshot_jax.pretrain.augment.views import AugmentConfigError

    with pytest.raises((ConfigError, AugmentConfigError)) as err:
        check_config(parse('barlow_tem.py', override, '--config.model.init=random'))
    assert message in str(err.value)
    assert type(err.value).__module__.startswith('fewshot_jax')  # launch.py: one line


@pytest.mark.parametrize('name', CONFIGS)
def test_paper_preset_stops_before_any_work_until_init_is_given(name, tmp_path):
    from fewshot_jax.errors import ConfigError

    config = load(name)
    config.data.source = 'synthetic'  # would generate images if the run got that far
    with pytest.raises(ConfigError) as err:
        tasks.run('pretrain', config, tmp_path / 'w')
    message = str(err.value)
    assert '\n' not in message and "model.init='required'" in message
    assert '--config.model.init=keras:/path/resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5' in message
    assert 'torchvision:/path.pth' in message and '--config.model.init=random' in message
    # Nothing written: a config error leaves no workdir (no data, no checkpoint, no log).
    assert not (tmp_path / 'w').exists()
    config.model.init = 'random'
    check_config(config)


def test_paper_preset_refuses_init_weights_of_another_architecture(tmp_path):
    from fewshot_jax.models.weights import WeightsError
    from tests.helpers.weights_references import keras_resnet50_arrays, write_keras2_weights

    path = tmp_path / 'narrow.h5'
    write_keras2_weights(path, keras_resnet50_arrays(4))  # a ResNet50 of width 4, not 64
    config = load('barlow_tem')
    config.model.init = f'keras:{path}'
    with pytest.raises(WeightsError) as err:
        check_config(config)
    assert str(path) in str(err.value) and 'set model.width=4' in str(err.value)
    assert '\n' not in str(err.value)
    config.model.init = f'keras:{tmp_path / "absent.h5"}'
    with pytest.raises(WeightsError, match='absent.h5 does not exist'):
        check_config(config)


def test_unknown_preset_is_named():
    with pytest.raises(ValueError, match="'big'"):
        load('barlow_tem', 'big')


def test_launch_reports_bad_data_root_without_traceback(tmp_path):
    import subprocess
    import sys

    repo = REPO
    result = subprocess.run(
        [
            sys.executable,
            str(repo / 'launch.py'),
            '--config=configs/barlow_tem.py',
            f'--workdir={tmp_path / "w"}',
            f'--config.data.root={tmp_path / "missing"}',
            '--config.model.init=random',
        ],
        cwd=repo,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1
    assert f'error: {tmp_path / "missing"}: data folder does not exist' in result.stderr
    assert 'Traceback' not in result.stderr


def load_ablation():
    """benchmarks/ssl_ablation.py."""
    return load_benchmark('ssl_ablation')


def flat_items(config, prefix=''):
    for key, value in config.items():
        if hasattr(value, 'items'):
            yield from flat_items(value, f'{prefix}{key}.')
        else:
            yield f'{prefix}{key}', tuple(value) if isinstance(value, (list, tuple)) else value


@pytest.mark.parametrize(
    ('method', 'preset', 'recipe'),
    [
        ('barlow_twins', 'demo', 'barlow_adam_rot_10000'),
        ('simclr', 'demo', 'simclr_combo_geom_rot_2000'),
        ('barlow_twins', 'cpu', 'barlow_adam_rot_10000'),
        ('simclr', 'cpu', 'simclr_combo_geom_rot_5000'),
    ],
)
def test_demo_and_cpu_presets_are_the_recipes_the_ablation_measured(method, preset, recipe, tmp_path):
    """The shipped presets' figures in the configs' docstrings come from benchmarks/ssl_ablation.py:
    the config it builds for the recipe must be the shipped preset."""
    from configs.ssl_base import ssl_config

    ablation = load_ablation()
    recipe_method, overrides = ablation.RECIPES[recipe]
    assert recipe_method == method
    measured = ablation.build_config(method, 'demo', overrides, seed=0, out=tmp_path)
    # What the ablation sets for its own bookkeeping (no monitor, progress bar or checkpoints:
    # none changes the weights), and fields inert where the recipe turns blur and noise off.
    ignored = {
        'augment.blur_sigma',
        'augment.noise_std',
        'monitor.tasks',
        'train.checkpoint_every',
        'train.log_every',
        'train.progress',
    }
    shipped = dict(flat_items(ssl_config(method, 'tem', preset)))
    differing = {
        k: (v, shipped.get(k)) for k, v in flat_items(measured) if k not in ignored and shipped.get(k) != v
    }
    assert not differing


def test_virus_probe_uses_the_papers_nine_viruses():
    c = load('probe_virus')
    # The paper's names, as the dataset's class folders spell them (Nairovirus = CCHF).
    assert c.data.classes == (
        'Astrovirus',
        'CCHF',
        'Cowpox',
        'Influenza',
        'Nipah virus',
        'Norovirus',
        'Orf',
        'Papilloma',
        'Rift Valley',
    )
    assert parse('probe_virus.py', '--config.data.classes=None').data.classes is None
    assert load('probe_virus', 'demo').data.classes is None


@pytest.mark.parametrize('name', ['probe_nanowire', 'probe_mnp', 'probe_virus'])
def test_probe_presets_list_the_papers_encoders_and_baselines(name):
    encoders = load(name).probe.encoders
    names = [e.partition('=')[0] for e in encoders]
    for method in ('Barlow-Twins_TEM', 'SimCLR_TEM', 'Barlow-Twins_ImageNet', 'SimCLR_ImageNet'):
        replicas = [n for n in names if n.startswith(method + ' ')]
        assert replicas == [f'{method} seed{s}' for s in range(42, 47)]
    baselines = {'SimCLR_SotA_ImageNet', 'ImageNet_supervised', 'random-init', 'raw pixels', 'texture'}
    assert baselines <= set(names)
    assert 'simclr_resnet_batch64_project128_64_1024_nocrop_seed46.h5' in ' '.join(encoders)
    assert all('{models}/' in e for e in encoders if ':' in e.partition('=')[2])


def test_probe_names_every_missing_encoder_file_before_reading_data(tmp_path):
    from fewshot_jax.models.weights import WeightsError

    config = load('probe_nanowire')
    config.data.root = str(tmp_path / 'no_data')  # never reached: the files are checked first
    config.probe.models_dir = str(tmp_path / 'models')
    with pytest.raises(WeightsError) as err:
        tasks.run('probe', config, tmp_path / 'w')
    message = str(err.value)
    assert '\n' not in message and '22 weight files do not exist' in message
    assert str(tmp_path / 'models' / 'barlow_resnet_batch64_project128_64_1024_seed42.h5') in message
    assert '--config.probe.models_dir=DIR' in message


def test_gpu_science_paper_part_builds_a_valid_config(tmp_path):
    """benchmarks/gpu_science.sh runs the paper preset through ssl_ablation.build_config on
    synthetic images: it must start from random weights rather than stop for model.init."""
    ablation = load_ablation()
    for method in ('barlow_twins', 'simclr'):
        config = ablation.build_config(method, '', {}, seed=0, out=tmp_path)
        assert config.model.init == 'random' and config.data.source == 'synthetic'
        check_config(config)


def test_first_command_as_typed_explains_itself(tmp_path):
    """No flags but --config: a default workdir, and no data root stops at once, nothing written."""
    import os
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, str(REPO / 'launch.py'), f'--config={REPO / "configs" / "barlow_tem.py"}'],
        cwd=tmp_path,
        env={**os.environ, 'PYTHONPATH': str(REPO), 'JAX_PLATFORMS': 'cpu'},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1 and 'Traceback' not in result.stderr
    assert 'workdir: runs/barlow_tem ' in result.stderr
    error = [line for line in result.stderr.splitlines() if line.startswith('error: ')]
    assert len(error) == 1
    for part in ('--config.data.root=DIR', 'barlow_tem.py:demo', 'synthetic', '--config.model.init=keras:'):
        assert part in error[0]
    assert 'no GPU, about 31 h' in error[0] and '1.5 pairs/s' in error[0]
    assert list(tmp_path.iterdir()) == []  # nothing generated, no workdir


def test_default_workdir_names_config_and_preset():
    from fewshot_jax.first_run import default_workdir

    assert default_workdir('configs/barlow_tem.py') == 'runs/barlow_tem'
    assert default_workdir('/x/configs/simclr_tem.py:demo') == 'runs/simclr_tem_demo'
