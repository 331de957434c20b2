"""The whole study as one task: pretrain → probe → segment → (grid) → report.

Every stage runs a registered task in its own sub-workdir; later stages name the
encoders of earlier ones by weight spec (``checkpoint:WORKDIR/pretrain/<name>``).
A stage's unit of work (one encoder's pretraining, one probe task, …) is done
when its ``DONE.json`` exists; rerunning skips it, ``config.force`` redoes whole
stages. Each finished unit keeps the config it ran with (``unit_config.json``): a rerun
whose config differs for that unit stops with the differing fields rather than reuse
results of another config (e.g. a workdir of an older demo preset).
``WORKDIR/workflow.json`` records the environment and each unit's wall time and
summary; the report reads it with the other workdir files.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import platform
import re
import shutil
import time
from pathlib import Path

import ml_collections

from fewshot_jax import tasks
from fewshot_jax.errors import ConfigError
from fewshot_jax.probe import features as features_lib
from fewshot_jax.train_lib import loop
from fewshot_jax.train_lib.checkpoint import WorkdirLock

log = logging.getLogger(__name__)

STAGES = ('pretrain', 'probe', 'segment', 'grid', 'report')
DONE = 'DONE.json'
UNIT_CONFIG = 'unit_config.json'
# Display name of the BatchNorm-statistics-only control beside the probe's random init.
BN_STATS_NAME = 'BN stats only'
# Display-name prefix of a grid run's @0 init in the tuning probe (the report leaves them out of
# the settings table and shows their gaps instead).
GRID_INIT_PREFIX = '@0 of '

# Where the paper's data sets are published (also in docs/datasets.md).
DATASETS = {
    'generic_tem': 'generic TEM images: a subset of CEM500K (EMPIAR-10592), 832 images per '
    'run; a flat folder of images',
    'everyday': 'everyday photographs: 832 ImageNet images; a flat folder of images',
    'nanowires': 'nanowire morphologies, Zenodo 10.5281/zenodo.6377140; one folder per class '
    '(singular, dispersed, network, bundle), masks beside the images',
    'nanoparticles': 'AutoDetect-mNP (nanoparticle assemblies); sorted into dispersed / '
    'separate clusters / percolating cluster folders',
    'viruses': 'TEM virus set (Matuszewski & Sintorn); train/validation/test folders per class',
}


class WorkflowDataError(ConfigError):
    """The paper preset names data folders that do not exist."""


class WorkflowStaleUnitError(ConfigError):
    """A finished unit of the workdir ran with another config than the one given now."""


def run_workflow(config: ml_collections.ConfigDict, workdir: str | os.PathLike) -> dict:
    """Runs (or resumes) every stage of ``config.stages`` in ``workdir``.

    Returns:
        The number of units and the report's path (each unit's headline is printed as it
        finishes; its full summary is in its ``DONE.json``).
    """
    workdir = Path(workdir).absolute()
    stages = tuple(config.stages)
    unknown = [s for s in stages if s not in STAGES]
    forced = [s.strip() for s in str(config.get('force', '')).split(',') if s.strip()]
    unknown += [s for s in forced if s not in STAGES]
    if unknown:
        raise ConfigError(
            f'workflow stages {unknown}: expected some of {STAGES} (config.stages, config.force)'
        )
    check_data_roots(config)
    check_units(config, workdir, stages)
    workdir.mkdir(parents=True, exist_ok=True)
    with WorkdirLock(workdir):
        return _run_stages(config, workdir, stages, forced)


def _run_stages(config, workdir: Path, stages, forced) -> dict:
    record_path = workdir / 'workflow.json'
    record = json.loads(record_path.read_text()) if record_path.is_file() else {}
    record['environment'] = environment()
    record.setdefault('units', {})
    summary = {}
    for stage in stages:
        if stage == 'report':
            continue
        if stage in forced and (workdir / stage).exists():
            log.warning('workflow: config.force redoes stage %s (its folder is removed)', stage)
            shutil.rmtree(workdir / stage)
            record['units'] = {k: v for k, v in record['units'].items() if not k.startswith(f'{stage}/')}
        for unit, task, sub_config in stage_units(stage, config, workdir):
            unit_dir = workdir / stage / unit
            done = unit_dir / DONE
            key = f'{stage}/{unit}'
            unit_config = _portable_config(sub_config, workdir)
            if done.is_file():
                checked = _check_unchanged(unit_dir, key, unit_config)
                result = json.loads(done.read_text())
                unchecked = '' if checked else '; its config was not recorded, so not compared'
                print(f'{key}: done earlier (skipped{unchecked})')
            else:
                started = time.time()
                with full_key_paths(stage, unit), _says_where_interrupted(key):
                    result = tasks.run(task, sub_config, unit_dir)
                seconds = round(time.time() - started, 1)
                result = _jsonable(result)
                (unit_dir / UNIT_CONFIG).write_text(json.dumps(unit_config, indent=1))
                done.write_text(json.dumps(result, indent=1))
                record['units'][key] = {'seconds': seconds, 'task': task}
                record_path.write_text(json.dumps(record, indent=1))
                print(f'{key}: {headline(stage, unit, result)} ({seconds:.0f} s)')
            summary['units'] = summary.get('units', 0) + 1
    record_path.write_text(json.dumps(record, indent=1))
    if 'report' in stages:
        from fewshot_jax.analysis import report

        path = report.write_report(workdir)
        summary['report'] = str(path)
        summary['next'] = f'open {path} in a browser'
    return summary


@contextlib.contextmanager
def _says_where_interrupted(key: str):
    """Ctrl-C inside a unit names the unit; the training loop's own message (step, checkpoint)
    is kept and prefixed."""
    try:
        yield
    except KeyboardInterrupt as err:
        if str(err):
            message = f'{key}: {err} (finished units are kept)'
        else:
            message = f'interrupted in {key}; rerunning the same command resumes (finished units are kept)'
        raise type(err)(message) from None


def check_units(config, workdir: Path, stages) -> None:
    """Runs every unit's cheap config check before any unit starts (or any folder is made).

    A bad value in the last stage's config fails in a second, not after the first
    pretraining, and leaves no workdir behind.
    """
    for stage in stages:
        if stage in ('report', 'grid'):
            continue
        for unit, task, sub_config in stage_units(stage, config, workdir):
            check = tasks.config_checker(task)
            if check is not None:
                with full_key_paths(stage, unit):
                    check(sub_config)


@contextlib.contextmanager
def full_key_paths(stage: str, unit: str):
    """Config errors inside a unit name the key as the workflow config spells it.

    A unit runs on its sub-config (``config.pretrain.bt_tem``), whose errors say
    ``train.num_steps``; the user set ``pretrain.bt_tem.train.num_steps``.
    """
    try:
        yield
    except Exception as err:
        if not _is_config_error(err) or getattr(err, 'workflow_prefixed', False):
            raise
        prefix = f'{stage}.{unit}.'
        message = _SECTION_KEY.sub(lambda m: prefix + m.group(0), str(err))
        try:
            renamed = type(err)(message)
        except Exception:  # noqa: BLE001 - an error type with another signature
            renamed = ConfigError(message)
        renamed.workflow_prefixed = True
        raise renamed from err


# A dotted config key at a word start (not inside a path): 'train.num_steps', 'data.root'.
_SECTION_KEY = re.compile(
    r'(?<![\w./-])(?:train|data|model|optim|augment|loss|monitor|probe|segment|eval)\.[A-Za-z_][\w.]*\w'
)


def _is_config_error(err: Exception) -> bool:
    return any(c.__name__.endswith('ConfigError') for c in type(err).__mro__)


def _portable_config(sub_config, workdir: Path) -> dict:
    """A unit's config as plain JSON values, the workdir written ``{workdir}`` (a moved
    workdir still matches its own finished units)."""
    text = json.dumps(sub_config.to_dict(), sort_keys=True, default=str)
    return json.loads(text.replace(json.dumps(str(workdir))[1:-1], '{workdir}'))


# Fields whose value here does what a config without the field did: a unit recorded without
# them still matches (reading a folder stops on an unreadable file; masks use the layout's
# own encoding).
NEUTRAL_DEFAULTS = {'data.on_unreadable': 'error', 'data.mask_encoding': None}


def _check_unchanged(unit_dir: Path, key: str, current: dict) -> bool:
    """Raises WorkflowStaleUnitError when the finished unit's recorded config differs.

    Returns:
        False when the unit has no recorded config (finished by an older version), True
        when it was checked and matches.
    """
    recorded_path = unit_dir / UNIT_CONFIG
    if not recorded_path.is_file():
        return False
    changed = [
        (k, old, new)
        for k, old, new in loop.config_changes(json.loads(recorded_path.read_text()), current)
        if old != loop.UNSET or NEUTRAL_DEFAULTS.get(k, loop.UNSET) != new
    ]
    if changed:
        shown = '; '.join(f'{k}: {old!r} -> {new!r}' for k, old, new in changed[:5])
        more = f' and {len(changed) - 5} more' if len(changed) > 5 else ''
        stage = key.split('/')[0]
        raise WorkflowStaleUnitError(
            f'{unit_dir} was finished with another config ({len(changed)} fields differ: {shown}{more}); '
            f'rerun with --config.force={stage} to redo the stage, or give a new --workdir'
        )
    return True


def stage_units(stage: str, config, workdir: Path):
    """``(unit name, task name, sub-config)`` for every unit of work of ``stage``."""
    pretrained = [(name, config.display_names.get(name, name)) for name in config.pretrain.keys()]
    encoder_specs = tuple(
        f'{display}=checkpoint:{workdir / "pretrain" / name}' for name, display in pretrained
    )
    base_model = config.pretrain[pretrained[0][0]] if pretrained else None
    # The random-init baselines are the weights the first encoder's pretraining started from
    # (step 0 of its run), so "pretrained vs random init" compares one init before and after.
    start = f'checkpoint:{workdir / "pretrain" / pretrained[0][0]}@0' if pretrained else None
    if stage == 'pretrain':
        for name, _ in pretrained:
            yield name, 'pretrain', config.pretrain[name]
    elif stage == 'probe':
        for task in config.probe.keys():
            sub = _matched(config.probe[task], base_model)
            baselines = []
            for e in sub.probe.encoders:
                if start and e == features_lib.RANDOM_INIT:
                    # The init, then the same weights with BatchNorm statistics of the probe's
                    # images: what pretraining at learning rate 0 would have given.
                    baselines += [f'{features_lib.RANDOM_INIT}={start}', f'{BN_STATS_NAME}=bn-stats:{start}']
                else:
                    baselines.append(e)
            sub.probe.encoders = encoder_specs + tuple(baselines)
            yield task, 'probe', sub
    elif stage == 'segment':
        for task in config.segment.keys():
            sub = _matched(config.segment[task], base_model, resolution=False)
            # Segmentation names folders after its encoders: the short unit names.
            specs = tuple(f'{name}=checkpoint:{workdir / "pretrain" / name}' for name, _ in pretrained)
            baselines = tuple(
                f'{e.partition("=")[0]}={start}' if start and e.partition('=')[2] == 'random' else e
                for e in sub.segment.encoders
            )
            sub.segment.encoders = specs + baselines
            yield task, 'segment', sub
    elif stage == 'grid':
        yield from grid_units(config, workdir)


def grid_units(config, workdir: Path):
    """One pretraining per swept value and seed, then the probe's tuning protocol over all."""
    grid = config.grid
    if not grid.sweep:
        return
    base = config.pretrain[grid.base]
    specs, inits = [], []
    for entry in grid.sweep:
        field, values = _parse_sweep(entry)
        for value in values:
            for seed in grid.seeds:
                sub = ml_collections.ConfigDict(base.to_dict())
                _set(sub, field, value)
                sub.seed = int(seed)
                sub.data.seed = int(seed)
                shown = str(value).replace(' ', '')
                unit = re.sub(r'[^A-Za-z0-9_.,()-]', '_', f'{field}-{shown}-seed{seed}')
                # The probe's display name: the setting, then ' seed<s>' (the report groups
                # the seeds of one setting by it).
                specs.append(f'{field} {shown} seed{seed}=checkpoint:{workdir / "grid" / unit}')
                # Each run's own start, so the probe pairs every setting and seed with its init.
                inits.append(
                    f'{GRID_INIT_PREFIX}{field} {shown} seed{seed}=checkpoint:{workdir / "grid" / unit}@0'
                )
                yield unit, 'pretrain', sub
    probe = _matched(config.probe[grid.probe_task], base)
    probe.probe.mode = 'tuning'
    probe.probe.encoders = tuple(specs) + tuple(inits)
    yield 'tuning', 'probe', probe


def _parse_sweep(entry: str):
    field, sep, values = str(entry).partition('=')
    if not sep or not field or not values:
        raise ConfigError(f'grid.sweep entry {entry!r}: expected "section.field=v1,v2,…"')
    parsed = []
    for text in _split_values(values):
        try:
            parsed.append(json.loads(text.replace('(', '[').replace(')', ']')))
        except json.JSONDecodeError:
            parsed.append(text)
    return field.strip(), parsed


def _split_values(text: str) -> list[str]:
    """Splits on commas outside parentheses: '16,32' and '(64,64),(128,128)'."""
    parts, depth, current = [], 0, ''
    for char in text:
        depth += char in '([' and 1 or (-1 if char in ')]' else 0)
        if char == ',' and depth == 0:
            parts.append(current.strip())
            current = ''
        else:
            current += char
    parts.append(current.strip())
    return [p for p in parts if p]


def _set(config, dotted: str, value) -> None:
    node = config
    *parents, leaf = dotted.split('.')
    for part in parents:
        if part not in node:
            raise ConfigError(f'grid.sweep field {dotted!r}: no section {part!r} in the pretraining config')
        node = node[part]
    if leaf not in node:
        raise ConfigError(f'grid.sweep field {dotted!r}: the pretraining config has no such field')
    node[leaf] = tuple(value) if isinstance(value, list) else value


def _matched(sub_config, base_model_config, resolution: bool = True):
    """A copy of a probe/segment config whose random-init baseline (and, for the probe, the
    image size) matches the pretrained encoders, so that comparisons are like for like."""
    sub = ml_collections.ConfigDict(sub_config.to_dict())
    if base_model_config is not None:
        for key in (
            'depth',
            'width',
            'variant',
            'stem',
            'input_mean',
            'input_std',
            'input_norm',
            'background_sigma',
            'input_channels',
        ):
            if key in base_model_config.model:
                sub.model[key] = base_model_config.model[key]
        if resolution and 'image_size' in sub.data:
            sub.data.image_size = base_model_config.data.image_size
    return sub


def check_data_roots(config) -> None:
    """Lists every missing data folder, with where its data set is published, before any stage.

    Raises:
        WorkflowDataError: some sub-config reads a folder that is unset or does not exist.
    """
    missing = []
    for stage in ('pretrain', 'probe', 'segment'):
        for unit in config.get(stage, {}).keys():
            data = config[stage][unit].data
            if str(data.get('source', '')).startswith('synthetic'):
                continue
            root = data.get('root') or ''
            if not root or not Path(root).is_dir():
                missing.append((stage, unit, root))
    if missing:
        lines = [
            f'  {stage}/{unit}: data.root={root!r} ' + ('is not set' if not root else 'does not exist')
            for stage, unit, root in missing
        ]
        needed = '\n'.join(f'  - {name}: {text}' for name, text in DATASETS.items())
        raise WorkflowDataError(
            'the workflow needs these data folders:\n'
            + '\n'.join(lines)
            + f'\nthe data sets (layouts in docs/datasets.md):\n{needed}\nset them with '
            '--config.roots.<name>=/path, or run the synthetic demo: --config=configs/'
            'workflow.py:demo'
        )


def headline(stage: str, unit: str, result: dict) -> str:
    """One line for the terminal: the figure a scientist looks at first."""
    if stage in ('pretrain', 'grid') and 'final_loss' in result:
        return f'pretrained {result.get("step")} steps, final loss {result["final_loss"]:.3g}'
    if stage in ('probe', 'grid') and 'accuracy' in result:
        return _probe_headline(unit, result)
    if stage == 'segment' and result.get('groups'):
        groups = result['groups']
        k = 8 if any(g['k'] == 8 for g in groups) else max(g['k'] for g in groups)
        res = max(g['resolution'] for g in groups)
        parts = [
            # Three decimals: the bar is 0.80, and 0.796 must not read as 0.80.
            f'{g["encoder"]} {g["median_dice"]:.3f}'
            for g in groups
            if g['k'] == k and g['resolution'] == res
        ]
        return f'{unit} median Dice, k={k}, {res} px: ' + '; '.join(parts)
    return 'done'


def _probe_headline(unit: str, result: dict) -> str:
    head = result.get('heads', ['logistic'])[0]
    table = result['accuracy'].get(head, {})
    if not table:
        return 'done'
    ks = sorted({k for by_k in table.values() for k in by_k}, key=lambda k: (k == 'cv', k))
    k = '8' if '8' in ks else ks[-1]
    parts = []
    for encoder, by_k in table.items():
        if k in by_k:
            cell = by_k[k]
            low, high = cell['ci95']
            parts.append(f'{encoder} {cell["median"]:.2f} [{low:.2f}, {high:.2f}]')
    label = 'cross-validated' if k == 'cv' else f'{k}-shot'
    line = f'{unit} {label} median accuracy: ' + '; '.join(parts)
    # The paired gap of the first pretrained encoder over its own init, where the list has one.
    for row in result.get('gaps', {}).get(head, []):
        cell = row['by_k'].get(k)
        if row['kind'] == 'pretrained' and cell and None not in cell['ci95']:
            low, high = cell['ci95']
            return line + f'; gap {row["encoder"]} − init {cell["mean"]:+.2f} [{low:+.2f}, {high:+.2f}]'
    return line


def environment() -> dict:
    """Versions and devices, for the report."""
    import jax

    return {
        'python': platform.python_version(),
        'jax': jax.__version__,
        'backend': jax.default_backend(),
        'devices': jax.device_count(),
        'device_kind': jax.devices()[0].device_kind,
        'processes': jax.process_count(),
        'host': platform.node(),
    }


def _jsonable(value):
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if hasattr(value, 'item'):
        return value.item()
    return str(value)
