"""Does self-supervised pretraining beat random init? Recipes x pretraining seeds, measured.

For each recipe (config overrides on top of ``configs/ssl_base.ssl_config(method, 'tem',
preset)``) and each pretraining seed this pretrains with ``fewshot_jax.pretrain.task.train_ssl``,
loads the encoder with ``fewshot_jax.encoder.load_encoder`` and probes it on the labeled
synthetic tasks (nanowires, nanoparticles, viruses): scikit-learn LogisticRegression on
standardised features, ``--shots`` labeled images per class, the rest of a ``--pool``
per class as the test set, median accuracy over ``--draws`` draws. Beside it, on the same
images and draws: a random-init encoder of the same architecture built from the same
seed (the weights pretraining started from) and the texture-feature baseline. Features:
``pooled`` and the global average of the ``stage2`` and ``stage3`` maps.

Reported per recipe: the per-seed gaps (pretrained - random), their mean and spread, for
each task and layer, and the wall time of pretraining. Results accumulate in
``OUT/results.jsonl`` (one line per recipe and seed; a finished pair is not re-run), and
``--report`` prints the markdown tables from it.

    python benchmarks/ssl_ablation.py --recipes=shipped,area02 --seeds=0,1,2 --out=/tmp/abl
    python benchmarks/ssl_ablation.py --tiny --out=/tmp/abl_tiny        # end-to-end smoke test
    python benchmarks/ssl_ablation.py --report --out=/tmp/abl           # tables only
    python benchmarks/ssl_ablation.py --list                            # the named recipes

``--shard=i/n`` runs every n-th (recipe, seed) pair, so n processes can share a GPU.
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import json
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from ssl_pools import TASK_SEED, TASKS, indomain_folder, task_pool  # noqa: E402
from ssl_recipes import MEASURED_BASE, RECIPES, TINY  # noqa: E402

LAYERS = ('pooled', 'stage2', 'stage3')


def parse_value(text: str):
    """A command-line value: a Python literal if it parses as one, else the string."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def parse_overrides(items) -> dict:
    out = {}
    for item in items:
        if '=' not in item:
            raise SystemExit(f'override {item!r}: expected dotted.key=value')
        key, value = item.split('=', 1)
        out[key] = parse_value(value)
    return out


def set_dotted(config, dotted: str, value) -> None:
    *parents, leaf = dotted.split('.')
    node = config
    for name in parents:
        if name not in node:
            raise SystemExit(f'override {dotted!r}: config has no section {name!r}')
        node = node[name]
    node[leaf] = value


def ensure_stem_wiring() -> None:
    """Until ``models.make_encoder`` reads ``model.stem``, pass it through (same ResNet)."""
    import dataclasses

    from fewshot_jax import encoder as encoder_module
    from fewshot_jax import models

    if models.make_encoder({'depth': 18, 'width': 4, 'stem': 'small'}).stem == 'small':
        return
    original = models.make_encoder

    def make_encoder(model_cfg):
        return dataclasses.replace(original(model_cfg), stem=model_cfg.get('stem', 'imagenet'))

    models.make_encoder = make_encoder
    encoder_module.make_encoder = make_encoder


# Pretraining folders of unlabeled in-domain scenes: data.source -> what the files hold.
INDOMAIN_KINDS = {
    'indomain': None,
    'indomain_images': 'images',
    'indomain_masks': 'masks',
    'indomain_paired': 'paired',
}


def build_config(
    method: str, preset: str, overrides: dict, seed: int, out: Path, kind: str = 'images', folder: bool = True
):
    """The recipe's config; folder=False leaves an in-domain folder unwritten (probe-only runs)."""
    from configs.ssl_base import ssl_config

    config = ssl_config(method, 'tem', preset)
    if preset == 'demo':
        for key, value in MEASURED_BASE[method].items():
            set_dotted(config, key, value)
    if preset == '':  # the paper's settings on the synthetic generic images
        config.data.source = 'synthetic'
        config.data.synthetic_size = 256
        # From random weights: the benchmark machines hold no ImageNet weight file (the
        # paper preset otherwise stops until model.init names one).
        config.model.init = 'random'
    config.seed = seed
    config.train.progress = False
    config.train.log_every = 50
    config.train.checkpoint_every = 0  # no checkpoints: the encoder is exported at the end
    if 'monitor' in config:  # the online probe would add its own time to the wall time
        config.monitor.tasks = ()
    config.model.stem = 'imagenet'
    for key, value in overrides.items():
        set_dotted(config, key, value)
    if config.data.source in INDOMAIN_KINDS:
        # 'indomain' pretrains on what the probe sees (--pool_kind); the others fix the kind:
        # indomain_paired files hold two acquisitions of one specimen (red, green), and
        # augment.paired_channels draws one view from each (the recipe must set it).
        # A 'fixed:...' probe pool pretrains (source 'indomain') on the drawn micrographs.
        kind = INDOMAIN_KINDS[config.data.source] or ('images' if kind.startswith('fixed:') else kind)
        config.data.keep_color = kind == 'paired'
        if folder:
            config.data.root = str(
                indomain_folder(out, config.data.num_images, config.data.synthetic_size, kind)
            )
        config.data.source = 'folder'
        config.data.subset = None
    return config


def probe_accuracy(x: np.ndarray, y: np.ndarray, shots: int, draw: int) -> float:
    """Accuracy of a standardised logistic regression on `shots` images per class (draw = seed)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    rng = np.random.default_rng(draw)
    train = np.concatenate([rng.choice(np.flatnonzero(y == c), shots, replace=False) for c in np.unique(y)])
    test = np.setdiff1d(np.arange(len(y)), train)
    scaler = StandardScaler().fit(x[train])
    clf = LogisticRegression(max_iter=3000).fit(scaler.transform(x[train]), y[train])
    return float((clf.predict(scaler.transform(x[test])) == y[test]).mean())


def median_accuracy(x, y, shots: int, draws: int, threads: int) -> float:
    """Median probe accuracy over `draws` draws; NaN when the features are not finite."""
    x = np.asarray(x, np.float64)  # float32 squares overflow for diverged encoders
    if not np.isfinite(x).all():
        print(f'warning: {np.size(x) - np.isfinite(x).sum()} non-finite feature values', flush=True)
        return float('nan')
    with ThreadPoolExecutor(threads) as pool:
        accs = list(pool.map(lambda d: probe_accuracy(x, y, shots, d), range(draws)))
    return float(np.median(accs))


def encoder_features(encoder, images: np.ndarray) -> dict:
    maps = encoder.encode(images, layer=LAYERS, batch_size=64, progress=False)
    return {name: (v if v.ndim == 2 else v.mean(axis=(1, 2))) for name, v in maps.items()}


def probe_encoder(encoder, args, image_size: int) -> dict:
    """{task: {layer: median accuracy}} for one encoder."""
    out = {}
    for task in TASKS:
        images, labels = task_pool(
            task, args.pool, args.task_size, image_size, args.pool_kind, args.pool_seed
        )
        feats = encoder_features(encoder, images)
        out[task] = {
            layer: median_accuracy(feats[layer], labels, args.shots, args.draws, args.threads)
            for layer in LAYERS
        }
    return out


def random_init_probe(config, args, out: Path) -> dict:
    """Probe of the encoder pretraining starts from (cached by architecture, seed and size)."""
    import jax
    import optax

    from fewshot_jax.encoder import Encoder
    from fewshot_jax.models import make_ssl_model
    from fewshot_jax.train_lib import sharding
    from fewshot_jax.train_lib.state import init_state

    model_cfg = {k: v for k, v in config.model.to_dict().items() if k not in ('projector', 'init')}
    ident = json.dumps(
        [model_cfg, config.seed, config.data.image_size, args.pool, args.task_size, args.shots, args.draws]
        + ([args.pool_kind] if args.pool_kind != 'images' else [])
        + ([args.pool_seed] if args.pool_seed != TASK_SEED else []),
        sort_keys=True,
        default=list,
    )
    path = out / 'random_init' / (hashlib.sha1(ident.encode()).hexdigest()[:16] + '.json')
    if path.exists():
        return json.loads(path.read_text())['probe']
    mesh = sharding.make_mesh(config.get('num_devices'))
    state = init_state(
        make_ssl_model(config.model), optax.sgd(0.1), config.seed, config.data.image_size, mesh
    )
    variables = jax.device_get(
        {'params': state.params['encoder'], 'batch_stats': state.batch_stats['encoder']}
    )
    probe = probe_encoder(
        Encoder(variables, config.model.to_dict(), name='random'), args, config.data.image_size
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(f'.{os.getpid()}')
    partial.write_text(json.dumps({'ident': ident, 'probe': probe}))
    partial.replace(path)
    return probe


_TEXTURE: dict = {}


def texture_probe(args, image_size: int) -> dict:
    """{task: median accuracy} of the texture-feature baseline on the encoders' pixels."""
    if (image_size, args.pool_kind, args.pool_seed) in _TEXTURE:
        return _TEXTURE[image_size, args.pool_kind, args.pool_seed]
    try:
        from fewshot_jax.probe.baselines import texture_features
    except ImportError:  # before fewshot_jax/probe/baselines.py existed
        from synthetic_calibration import texture_features
    out = {}
    for task in TASKS:
        images, labels = task_pool(
            task, args.pool, args.task_size, image_size, args.pool_kind, args.pool_seed
        )
        out[task] = median_accuracy(
            texture_features(images.astype(np.float32) / 255.0), labels, args.shots, args.draws, args.threads
        )
    _TEXTURE[image_size, args.pool_kind, args.pool_seed] = out
    return out


def trained_encoder(workdir: Path):
    """``load_encoder(workdir)``; for a 'small' stem, read the saved encoder directly as long
    as ``models.weights_common.encoder_shapes`` checks against the 'imagenet' stem's shapes."""
    from fewshot_jax.encoder import Encoder, load_encoder
    from fewshot_jax.models.weights.common import WeightsError
    from fewshot_jax.train_lib import checkpoint

    try:
        return load_encoder(str(workdir))
    except WeightsError as err:
        meta = json.loads(checkpoint.encoder_meta_path(workdir).read_text())
        if meta['model'].get('stem') != 'small' or 'conv1/kernel' not in str(err):
            raise
    import orbax.checkpoint as ocp

    variables = ocp.StandardCheckpointer().restore(checkpoint.encoder_variables_path(workdir))
    return Encoder(variables, meta['model'], name=workdir.name, step=meta['step'])


def run_one(name: str, method: str, overrides: dict, seed: int, args, out: Path) -> dict:
    import jax

    from fewshot_jax.pretrain.task import total_steps_of, train_ssl

    config = build_config(
        method, args.preset, overrides, seed, out, args.pool_kind, folder=not args.runs_from
    )
    workdir = Path(args.runs_from or out) / 'runs' / f'{name}_s{seed}'
    start = time.perf_counter()
    # --runs_from probes the encoders an earlier invocation pretrained (other pools).
    summary = {'final_loss': None} if args.runs_from else train_ssl(config, workdir)
    wall = time.perf_counter() - start
    pretrained = probe_encoder(trained_encoder(workdir), args, config.data.image_size)
    random = random_init_probe(config, args, out)
    steps = total_steps_of(config.train, config.data.num_images, config.data.batch_size)
    logged = [
        json.loads(line) for line in (workdir / 'metrics.jsonl').read_text().splitlines() if '"time"' in line
    ]
    # Steady-state step time: between the first and the last logged step (no compile).
    step_ms = (
        1000 * (logged[-1]['time'] - logged[0]['time']) / (logged[-1]['step'] - logged[0]['step'])
        if len(logged) > 1
        else None
    )
    return {
        'recipe': name,
        'method': method,
        'seed': seed,
        'overrides': overrides,
        'preset': args.preset,
        'steps': steps,
        'image_size': config.data.image_size,
        'wall_s': round(wall, 1),
        'step_ms': step_ms and round(step_ms, 1),
        'final_loss': summary['final_loss'],
        'pretrained': pretrained,
        'random': random,
        'texture': texture_probe(args, config.data.image_size),
        'device': str(jax.devices()[0].device_kind),
        'draws': args.draws,
        'shots': args.shots,
        'pool': args.pool,
        'pool_kind': args.pool_kind,
        'pool_seed': args.pool_seed,
    }


def load_results(out: Path) -> list[dict]:
    path = out / 'results.jsonl'
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def report(results: list[dict]) -> str:
    """Markdown: one summary table (pooled and best-stage gaps) and one per-seed table."""
    by_recipe: dict[str, list[dict]] = {}
    for r in results:
        # Runs probed on another pool than the tuning pool are their own rows.
        pool = r.get('pool_seed', TASK_SEED)
        by_recipe.setdefault(r['recipe'] + (f' (pool {pool})' if pool != TASK_SEED else ''), []).append(r)
    lines = [
        '| recipe | method | steps | px | seeds | pretrain wall s (mean) | step ms | '
        + ' | '.join(f'{t} pooled gap | {t} stage2 / stage3 gap | {t} pretrained pooled' for t in TASKS)
        + ' |',
        '|' + '---|' * (7 + 3 * len(TASKS)),
    ]
    detail = [
        '| recipe | seed | task | layer | pretrained | random | gap | texture |',
        '|---|---|---|---|---|---|---|---|',
    ]

    def gaps(runs, task, layer):
        return np.array([r['pretrained'][task][layer] - r['random'][task][layer] for r in runs])

    def fmt(g):
        return f'{g.mean():+.3f} ± {g.std():.3f} [{", ".join(f"{v:+.2f}" for v in g)}]'

    for name, runs in by_recipe.items():
        runs = sorted(runs, key=lambda r: r['seed'])
        cells = []
        for task in TASKS:
            pre = np.mean([r['pretrained'][task]['pooled'] for r in runs])
            tex = runs[0]['texture'][task]
            cells += [
                fmt(gaps(runs, task, 'pooled')),
                f'{gaps(runs, task, "stage2").mean():+.3f} / {gaps(runs, task, "stage3").mean():+.3f}',
                f'{pre:.3f} (texture {tex:.3f})',
            ]
        lines.append(
            f'| {name} | {runs[0]["method"]} | {runs[0]["steps"]} | '
            f'{runs[0]["image_size"]} | {len(runs)} | '
            f'{np.mean([r["wall_s"] for r in runs]):.0f} | '
            f'{np.mean([r.get("step_ms") or np.nan for r in runs]):.0f} | ' + ' | '.join(cells) + ' |'
        )
        for r in runs:
            for task in TASKS:
                for layer in LAYERS:
                    p, q = r['pretrained'][task][layer], r['random'][task][layer]
                    detail.append(
                        f'| {name} | {r["seed"]} | {task} | {layer} | {p:.3f} | '
                        f'{q:.3f} | {p - q:+.3f} | {r["texture"][task]:.3f} |'
                    )
    meta = results[0] if results else {}
    head = (
        f'Probe: LogisticRegression on standardised features, {meta.get("shots")} labels/'
        f'class, {meta.get("pool")}/class pools, median over {meta.get("draws")} draws; '
        f'gap = pretrained - random init (same seed); mean ± sd [per seed]. '
        f'Device: {meta.get("device")}.'
    )
    return '\n'.join(
        [head, '', *lines, '', '<details><summary>per seed</summary>', '', *detail, '', '</details>']
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--recipes', default='shipped', help='comma-separated names (--list)')
    parser.add_argument(
        '--define', action='append', default=[], help="an extra recipe: 'name:method:key=value;key=value'"
    )
    parser.add_argument(
        '--set', action='append', default=[], help='dotted.key=value applied on top of every recipe'
    )
    parser.add_argument('--seeds', default='0,1,2')
    parser.add_argument(
        '--preset',
        default='demo',
        choices=('demo', ''),
        help="ssl_config preset: 'demo' or '' (the paper's settings)",
    )
    parser.add_argument('--out', required=True, help='scratch folder (runs, results.jsonl)')
    parser.add_argument('--shots', type=int, default=8)
    parser.add_argument('--pool', type=int, default=48, help='images per class in each pool')
    parser.add_argument(
        '--task_size',
        type=int,
        default=0,
        help='size the task images are generated at (0: the encoder input size)',
    )
    parser.add_argument(
        '--pool_kind',
        default='images',
        help="'masks': probe (and pretrain in-domain) on the scenes' masks, no imaging nuisances; "
        "'fixed:KNOB,...' (or 'fixed:all'): probe micrographs with those imaging conditions held fixed",
    )
    parser.add_argument(
        '--pool_seed',
        type=int,
        default=TASK_SEED,
        help=f'seed of the labeled task pools: {TASK_SEED} is the tuning pool the recipes were screened '
        'on; report on another seed (a fresh pool of the same tasks)',
    )
    parser.add_argument(
        '--runs_from', default='', help='an earlier --out: probe its pretrained encoders, train nothing'
    )
    parser.add_argument('--draws', type=int, default=20)
    parser.add_argument('--threads', type=int, default=2, help='threads for the probe fits')
    parser.add_argument('--shard', default='0/1', help='i/n: run every n-th pair from the i-th')
    parser.add_argument(
        '--order',
        default='recipe',
        choices=('recipe', 'seed'),
        help="'seed': every recipe's seed 0 first, then seed 1, …",
    )
    parser.add_argument('--tiny', action='store_true', help='tiny sizes: a smoke test')
    parser.add_argument('--report', action='store_true', help='print the tables and exit')
    parser.add_argument('--list', action='store_true', help='print the named recipes and exit')
    args = parser.parse_args()
    out = Path(args.out)
    if args.list:
        for name, (method, overrides) in RECIPES.items():
            print(f'{name:24s} {method:13s} {overrides}')
        return
    if args.report:
        print(report(load_results(out)))
        return
    recipes = dict(RECIPES)
    for spec in args.define:
        name, method, body = spec.split(':', 2)
        recipes[name] = (method, parse_overrides([s for s in body.split(';') if s]))
    extra = parse_overrides(args.set)
    if args.tiny:
        extra = {**TINY, **extra}
        args.pool, args.draws = min(args.pool, 12), 3
    index, count = (int(v) for v in args.shard.split('/'))
    ensure_stem_wiring()
    out.mkdir(parents=True, exist_ok=True)
    done = {
        (r['recipe'], r['seed'])
        for r in load_results(out)
        if r.get('pool_seed', TASK_SEED) == args.pool_seed and r.get('pool_kind', 'images') == args.pool_kind
    }
    pairs = [(name, int(seed)) for name in args.recipes.split(',') for seed in args.seeds.split(',')]
    if args.order == 'seed':
        pairs.sort(key=lambda pair: pair[1])  # stable: recipes keep their order
    unknown = sorted({name for name, _ in pairs} - set(recipes))
    if unknown:
        raise SystemExit(f'unknown recipe(s) {unknown}; see --list')
    for i, (name, seed) in enumerate(pairs):
        if i % count != index or (name, seed) in done:
            continue
        method, overrides = recipes[name]
        result = run_one(name, method, {**overrides, **extra}, seed, args, out)
        with open(out / 'results.jsonl', 'a') as f:
            f.write(json.dumps(result) + '\n')
        p = result['pretrained']
        q = result['random']
        print(
            f'{name} seed {seed}: {result["steps"]} steps in {result["wall_s"]} s; pooled gaps '
            + ', '.join(f'{t} {p[t]["pooled"] - q[t]["pooled"]:+.3f}' for t in TASKS),
            flush=True,
        )
    if count == 1:
        print(report(load_results(out)))


if __name__ == '__main__':
    main()
