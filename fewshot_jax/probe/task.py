"""The ``probe`` task: the paper's few-shot protocol for several encoders, with its figures.

``python launch.py --config=configs/probe_nanowire.py --workdir=runs/probe_nw`` runs

1. the labeled images (``config.data``, see ``probe_data``);
2. the features of every encoder in ``config.probe.encoders`` — weight specs
   with display names, plus the ``random-init`` and encoder-free baselines —
   computed once and cached in ``workdir/features/`` (``features.py``);
3. the grid of classifiers (``probe_grid``): ``probe.mode='protocol'`` —
   every encoder × split seed × draw × k, tested on the split's test part — or
   ``'tuning'`` — 4-fold cross-validation inside the training part of each
   split (paper Fig. 8), for every head in ``probe.head``;
4. ``workdir/probe/results.csv`` (one row per run), ``workdir/probe/summary.json``
   (median accuracy and the distribution-free 95 % CI of the median per
   head × encoder × k; the paired gap of every encoder over its own ``@0`` init
   in the list with its 95 % intervals, ``gaps.py``) and ``workdir/figures/*.png`` (accuracy boxes, mean
   confusion matrices, t-SNE of the best and worst runs, the one-shot anchor
   analysis when the data have masks).

``probe.draw`` adds training sets chosen from each encoder's unlabeled features by a
selection strategy beside the random draws (``probe/draws.py``): rows
``'<encoder> (<strategy>)'`` and, in the summary and ``figures/selection_gap_<head>.png``,
each strategy's paired gap to random draws with a 95 % interval over splits.

Re-running with the same config finds ``summary.json`` and returns it.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from fewshot_jax import probe
from fewshot_jax.errors import ConfigError
from fewshot_jax.models.weights import WeightsError, parse_spec
from fewshot_jax.probe import bn_stats
from fewshot_jax.probe import data as probe_data
from fewshot_jax.probe import draws as draw_lib
from fewshot_jax.probe import features as features_lib
from fewshot_jax.probe import gaps as gaps_lib
from fewshot_jax.probe import grid as probe_grid
from fewshot_jax.train_lib.checkpoint import WorkdirLock

log = logging.getLogger(__name__)

MODES = ('protocol', 'tuning')
_CSV_FIELDS = (
    'mode',
    'head',
    'encoder',
    'spec',
    'split_seed',
    'draw',
    'selection',
    'k',
    'fold',
    'n_train',
    'n_extra_labels',
    'n_test',
    'accuracy',
    'precision',
    'recall',
    'f1',
    'train_hash',
    'n_iter',
    'converged',
    'grad_norm',
    'epochs',
    'best_epoch',
    'l2',
    'confusion',
)


def run_probe(config, workdir) -> dict:
    """Runs the probe task; returns the summary written to ``workdir/probe/summary.json``.

    Raises:
        ConfigError: unusable ``probe.*`` values.
        fewshot_jax.probe.features.FeatureError, fewshot_jax.data.io.DataError,
        fewshot_jax.models.weights.WeightsError: bad encoders or data, before any training.
    """
    workdir = Path(workdir)
    cfg = config.probe
    mode = cfg.get('mode', 'protocol')
    if mode not in MODES:
        raise ConfigError(f'probe.mode={mode!r}: expected one of {MODES}')
    heads = _heads(cfg.get('head', 'logistic'))
    draws = draw_lib.parse_draws(cfg.get('draw', 'random'))
    if len(draws) > 1 and mode != 'protocol':
        raise ConfigError(f'probe.draw={cfg.draw!r} applies to probe.mode=protocol, not {mode!r}')
    check_encoder_files(config)
    config_hash = hashlib.sha256(config.to_json_best_effort(sort_keys=True).encode()).hexdigest()
    summary_path = workdir / 'probe' / 'summary.json'
    with WorkdirLock(workdir):
        if summary_path.is_file():
            previous = json.loads(summary_path.read_text())
            if previous.get('config_hash') == config_hash:
                log.info('probe: %s is complete for this config; nothing to do', summary_path)
                return previous
        started = time.perf_counter()
        data = probe_data.load_labeled(config.data)
        num_classes = len(data.class_names)
        log.info('probe: %d images of %d classes (%s)', len(data.labels), num_classes, data.description)
        # The plan needs only the labels: k too large or too few test images fail before encoding.
        plan = make_plan(cfg, mode, data)
        feature_sets = encode_all(build_extractors(config), data, workdir, cfg.get('layer', 'pooled'))
        encoded = time.perf_counter()
        matrices = {s.name: s.features for s in feature_sets}
        selected = selected_plans(cfg, mode, data, matrices, draws[1:])
        results, fit_timings = classify(config, heads, matrices, data.labels, num_classes, plan, selected)
        timings = {'features_s': round(encoded - started, 3), **fit_timings}
        specs = {draw_lib.label(s.name, m): s.spec for s in feature_sets for m in draws}
        rows = [row for head in heads for row in result_rows(mode, head, results[head], specs)]
        out = workdir / 'probe'
        out.mkdir(parents=True, exist_ok=True)
        write_csv(out / 'results.csv', rows)
        summary = {
            'config_hash': config_hash,
            'mode': mode,
            'heads': list(heads),
            'data': {
                'description': data.description,
                'images': int(len(data.labels)),
                'class_names': list(data.class_names),
                'image_size': int(data.images.shape[1]),
            },
            'encoders': [
                {'name': s.name, 'spec': s.spec, 'dim': int(s.features.shape[1]), 'cached': s.cached}
                for s in feature_sets
            ],
            'runs_per_head': len(plan) * len(feature_sets) * len(draws),
            'accuracy': summarize_rows(rows),
            # Each encoder minus its own @0 init, paired per draw (and per seed where listed).
            'gaps': gaps_lib.gap_table(rows, specs, seed=int(config.get('seed', 0))),
            'timings': timings,
        }
        summary['figures'], summary['anchors'] = make_figures(
            config, workdir / 'figures', mode, heads, results, rows, data, feature_sets
        )
        if selected:
            summary['draws'] = list(draws)
            summary['selection'] = draw_lib.paired_gaps(rows)
            summary['figures'] += [
                str(draw_lib.gap_figure(gaps, workdir / 'figures' / f'selection_gap_{head}.png', title=head))
                for head, gaps in summary['selection'].items()
            ]
        summary['timings']['total_s'] = round(time.perf_counter() - started, 3)
        summary_path.write_text(json.dumps(summary, indent=1))
    return summary


def selected_plans(cfg, mode: str, data, matrices: dict, methods) -> dict:
    """{(encoder, strategy): plan}: per encoder and selection strategy, the training sets
    that strategy chooses from that encoder's features (the test sets stay the plan's)."""
    shots = [int(k) for k in cfg.shots]
    seed = int(cfg.get('shot_seed', 42))
    num_classes = len(data.class_names)
    return {
        (name, method): make_plan(
            cfg, mode, data, choose=draw_lib.chooser(matrix, shots, num_classes, method, seed), method=method
        )
        for name, matrix in matrices.items()
        for method in methods
    }


def encode_all(extractors, data, workdir: Path, layer: str) -> list:
    """The features of every extractor on ``data`` (cached under ``workdir/features``),
    checked to cover the same images."""
    feature_sets = []
    dataset = features_lib.dataset_fingerprint(data.images, data.labels, data.class_names)
    for extractor in extractors:
        t = time.perf_counter()
        feature_sets.append(
            features_lib.compute_features(
                extractor,
                data.images,
                data.labels,
                data.class_names,
                cache_dir=workdir / 'features',
                layer=layer,
                dataset=dataset,
            )
        )
        log.info(
            'probe: features of %s %s in %.1f s',
            extractor.name,
            'read' if feature_sets[-1].cached else 'computed',
            time.perf_counter() - t,
        )
    features_lib.check_feature_sets(feature_sets, data.names)
    return feature_sets


def classify(
    config, heads, matrices: dict, labels, num_classes: int, plan, selected: dict
) -> tuple[dict, dict]:
    """Every head's classifiers over the plan's draws and the selected training sets.

    Returns ``({head: GridResult}, {'<head>_s': seconds})``.
    """
    chunk_values = int(config.probe.get('chunk_values', probe_grid.DEFAULT_CHUNK_VALUES))
    results, timings = {}, {}
    for head in heads:
        t = time.perf_counter()
        options = head_options(config, head)
        results[head] = probe_grid.evaluate_grid(
            matrices,
            labels,
            plan,
            num_classes=num_classes,
            head=head,
            options=options,
            chunk_values=chunk_values,
        )
        if selected:
            chosen = [
                draw_lib.evaluate_selected(
                    matrices[name],
                    labels,
                    runs,
                    name=name,
                    num_classes=num_classes,
                    head=head,
                    options=options,
                    chunk_values=chunk_values,
                )
                for (name, _), runs in selected.items()
            ]
            results[head] = draw_lib.merge([results[head], *chosen], list(matrices))
        timings[f'{head}_s'] = round(time.perf_counter() - t, 3)
        log.info('probe: %d %s classifiers in %.1f s', len(results[head].runs), head, timings[f'{head}_s'])
    return results, timings


def _heads(value) -> tuple[str, ...]:
    heads = tuple(h.strip() for h in (value.split(',') if isinstance(value, str) else value))
    unknown = [h for h in heads if h not in probe.HEADS]
    if not heads or unknown:
        raise ConfigError(f'probe.head={value!r}: expected one or more of {probe.HEADS}')
    return heads


def head_options(config, head: str) -> dict:
    """The ``probe.fit`` options of ``head`` from ``config.probe``."""
    cfg = config.probe
    if head == 'logistic':
        return {'C': float(cfg.C), 'tol': float(cfg.tol), 'max_iter': int(cfg.max_iter)}
    if head == 'ridge':
        l2 = cfg.ridge_l2
        return {'l2': tuple(l2) if isinstance(l2, (tuple, list)) else float(l2)}
    if head == 'knn':
        return {'neighbors': int(cfg.knn_neighbors), 'temperature': float(cfg.knn_temperature)}
    adam = cfg.adam
    return {
        'lr': float(adam.lr),
        'batch_size': int(adam.batch_size),
        'max_epochs': int(adam.max_epochs),
        'patience': int(adam.patience),
        'early_stopping': adam.early_stopping,
        'seed': int(config.get('seed', 0)),
    }


def encoder_entries(config) -> list[tuple[str, str]]:
    """``(display name, spec)`` of every ``probe.encoders`` entry, ``{models}`` replaced by
    ``probe.models_dir``."""
    entries = config.probe.encoders
    if isinstance(entries, str):
        entries = [e for e in entries.split(',') if e.strip()]
    models_dir = str(config.probe.get('models_dir', '') or '')
    parsed = [features_lib.parse_entry(e) for e in entries]
    return [(name, spec.replace('{models}', models_dir.rstrip('/'))) for name, spec in parsed]


def check_encoder_files(config) -> None:
    """Names every weight file or workdir of ``probe.encoders`` that does not exist, at once.

    Runs before the data are read: the paper presets list 22 files under a placeholder
    folder (``probe.models_dir``), and one error naming them all beats one per run.

    Raises:
        WeightsError: one line with the missing paths and how to point at them.
    """
    missing = []
    for name, spec in encoder_entries(config):
        if spec.startswith(features_lib.RANDOM_INIT) or spec in features_lib.BASELINES:
            continue
        spec = bn_stats.base_spec(spec) or spec  # the BatchNorm-only control reads its base spec
        try:
            _, path, _ = parse_spec(spec)
        except WeightsError as err:
            raise WeightsError(f'encoder {name!r} ({spec}): {err}') from err
        if path is not None and not path.exists():
            missing.append(str(path))
    if missing:
        shown = ', '.join(missing[:4]) + (f', … ({len(missing)} in all)' if len(missing) > 4 else '')
        hint = (
            f'; probe.models_dir={config.probe.models_dir!r} is a placeholder: '
            '--config.probe.models_dir=DIR (the folder holding the files)'
            if 'models_dir' in config.probe
            else ''
        )
        raise WeightsError(f'probe.encoders: {len(missing)} weight files do not exist: {shown}{hint}')


def build_extractors(config) -> list[features_lib.Extractor]:
    """The extractors of ``config.probe.encoders``, pretrained ones loaded first.

    ``'random-init'`` takes the architecture of the first pretrained encoder in
    the list (``config.model`` when there is none); ``'random-init:<name>'``
    that of the encoder displayed as <name>. Its weights come from ``config.seed``.
    """
    parsed = encoder_entries(config)
    if not parsed:
        raise ConfigError(
            'probe.encoders is empty: list weight specs, e.g. '
            "('BT=checkpoint:runs/bt_tem', 'random-init', 'raw-pixels', 'texture')"
        )
    kwargs = {
        'layer': config.probe.get('layer', 'pooled'),
        'batch_size': int(config.probe.get('encode_batch', 64)),
        'average_orientations': bool(config.probe.get('average_orientations', False)),
        'pooling': str(config.probe.get('pooling', 'average')),
    }
    built: dict[str, features_lib.Extractor] = {}
    for name, spec in parsed:
        if not spec.startswith(features_lib.RANDOM_INIT) and spec not in features_lib.BASELINES:
            try:
                built[name] = features_lib.make_extractor(spec, name=name, **kwargs)
            except WeightsError as err:
                raise WeightsError(f'encoder {name!r} ({spec}): {err}') from err
    pretrained = list(built.values())
    for name, spec in parsed:
        if spec in features_lib.BASELINES:
            built[name] = features_lib.make_extractor(spec, name=name, **kwargs)
        elif spec.startswith(features_lib.RANDOM_INIT):
            _, _, like = spec.partition(':')
            if like:
                if like not in built or built[like].model is None:
                    raise ConfigError(
                        f'encoder {name!r}={spec!r}: no pretrained encoder named {like!r} in probe.encoders'
                    )
                model = built[like].model
            elif pretrained:
                model = pretrained[0].model
            elif 'model' in config:
                model = config.model.to_dict()
            else:
                raise ConfigError(
                    f"encoder {name!r}: 'random-init' needs a pretrained encoder "
                    'in probe.encoders or a config.model to copy'
                )
            built[name] = features_lib.make_extractor(
                features_lib.RANDOM_INIT, name=name, model=model, seed=int(config.get('seed', 0)), **kwargs
            )
    return [built[name] for name, _ in parsed]


def make_plan(
    cfg, mode: str, data: probe_data.LabeledImages, *, choose=None, method: str = 'random'
) -> list[probe_grid.RunSpec]:
    """The runs of the protocol or of tuning mode for ``data`` (``choose``: ``protocol_plan``'s)."""
    seeds = cfg.split_seeds
    seeds = list(range(seeds)) if isinstance(seeds, int) else [int(s) for s in seeds]
    if mode == 'tuning':
        tuning_seeds = cfg.get('tuning_splits', 5)
        tuning_seeds = list(range(tuning_seeds)) if isinstance(tuning_seeds, int) else list(tuning_seeds)
        return probe_grid.tuning_plan(
            data.labels,
            split_seeds=tuning_seeds,
            folds=int(cfg.get('tuning_folds', 4)),
            test_fraction=float(cfg.test_fraction),
            class_names=data.class_names,
            groups=data.groups,
        )
    heads = _heads(cfg.get('head', 'logistic'))
    early = 'adam' in heads and cfg.adam.early_stopping == 'holdout'
    return probe_grid.protocol_plan(
        data.labels,
        shots=tuple(int(k) for k in cfg.shots),
        split_seeds=seeds,
        draws=int(cfg.draws),
        test_fraction=float(cfg.test_fraction),
        shot_seed=int(cfg.get('shot_seed', 42)),
        holdout_per_class=int(cfg.adam.holdout_per_class) if early else 0,
        fixed_split=data.fixed_split,
        class_names=data.class_names,
        choose=choose,
        method=method,
        groups=data.groups,
    )


def result_rows(mode: str, head: str, result: probe_grid.GridResult, specs) -> list[dict]:
    """One CSV row (a dict of :data:`_CSV_FIELDS`) per (encoder, run)."""
    rows = []
    for name, run, metrics, diag in zip(
        result.encoders, result.runs, result.metrics, result.diagnostics, strict=True
    ):
        rows.append(
            {
                'mode': mode,
                'head': head,
                'encoder': name,
                'spec': specs[name],
                'split_seed': run.split_seed,
                'draw': run.draw,
                'selection': run.method,
                'k': run.k,
                'fold': run.fold,
                'n_train': len(run.train),
                'n_extra_labels': len(run.holdout),
                'n_test': len(run.test),
                'accuracy': metrics['accuracy'],
                'precision': metrics['precision'],
                'recall': metrics['recall'],
                'f1': metrics['f1'],
                'train_hash': run.train_hash,
                'n_iter': diag.get('n_iter', ''),
                'converged': diag.get('converged', ''),
                'grad_norm': diag.get('grad_norm', ''),
                'epochs': diag.get('epochs', ''),
                'best_epoch': diag.get('best_epoch', ''),
                'l2': diag.get('l2', ''),
                'confusion': json.dumps(metrics['confusion'].tolist()),
            }
        )
    return rows


def write_csv(path: Path, rows: Sequence[dict]) -> None:
    with open(path, 'w', newline='') as handle:
        writer = csv.DictWriter(handle, fieldnames=_CSV_FIELDS)
        writer.writeheader()
        writer.writerows(rows)


def summarize_rows(rows: Sequence[dict]) -> dict:
    """{head: {encoder: {k: {median, ci95, mean, runs}}}} (k 'cv' in tuning mode)."""
    groups: dict = {}
    for row in rows:
        k = 'cv' if row['mode'] == 'tuning' else str(row['k'])
        groups.setdefault(row['head'], {}).setdefault(row['encoder'], {}).setdefault(k, []).append(
            row['accuracy']
        )
    out: dict = {}
    for head, by_encoder in groups.items():
        for encoder, by_k in by_encoder.items():
            for k, values in by_k.items():
                low, high = probe_grid.median_ci(values)
                out.setdefault(head, {}).setdefault(encoder, {})[k] = {
                    'median': float(np.median(values)),
                    'ci95': [low, high],
                    'mean': float(np.mean(values)),
                    'runs': len(values),
                }
    return out


def make_figures(config, folder: Path, mode, heads, results, rows, data, feature_sets):
    """Writes the PNG figures; returns (their paths, the anchor summary or None)."""
    from fewshot_jax.probe.figures import draw_all

    return draw_all(config, folder, mode, heads, results, rows, data, feature_sets)
