"""The probe protocol's speed: the whole grid of classifiers vs a scikit-learn loop.

The paper's grid for five encoders — 5 encoders × 20 split seeds × 7 k
(1, 2, 4, 8, 16, 32, 80 labeled images per class) = 700 classifiers — on the
pooled features of 400 images (4 classes × 100) from real ResNet50 encoders
(2048-d; by default five random-init ResNet50s, seeds 0-4, on synthetic
nanowires at 64 px, or any weight specs with ``--encoders``). Prints, for each
head, the wall time of ``probe_grid.evaluate_grid`` over the whole grid (first
call = with compilation, then the best of ``--repeats`` warm calls), and for a
sequential scikit-learn loop over the same runs (StandardScaler +
``LogisticRegression(C=1)``: default settings, run to convergence at its
default tol, and at tol 1e-8 as the exact reference), the
ratio and the accuracy difference (median over runs per encoder and k, and
the share of test predictions on which the two agree).

    python benchmarks/probe_protocol.py                      # CPU
    python benchmarks/probe_protocol.py --heads logistic --cache /tmp/probe_feats.npz

One JSON line per measurement; the machine's load (``uptime``) is printed first.
"""

from __future__ import annotations

import argparse
import json
import os
import time
import warnings

import numpy as np


def _load_average() -> str:
    return ' '.join(f'{load:.2f}' for load in os.getloadavg())


def encode(specs, per_class: int, size: int, cache: str | None):
    """Features (E, N, d), labels (N,), encoder names."""
    if cache and os.path.exists(cache):
        stored = np.load(cache)
        return stored['features'], stored['labels'], list(stored['names'])
    from fewshot_jax.data import synthetic
    from fewshot_jax.models.weights import model_config
    from fewshot_jax.probe import features as features_lib

    data = synthetic.nanowires(per_class, size, seed=0)
    images = np.clip(np.rint(data.images * 255), 0, 255).astype(np.uint8)
    out, names = [], []
    for i, spec in enumerate(specs):
        if spec.startswith('random-init'):
            extractor = features_lib.make_extractor(
                'random-init',
                name=f'random-init seed {i}',
                model=model_config(50, 64, 'v1.5'),
                seed=i,
                batch_size=50,
            )
        else:
            extractor = features_lib.make_extractor(spec, batch_size=50)
        t = time.perf_counter()
        out.append(extractor.extract(images))
        names.append(extractor.name)
        print(f'# encoded {extractor.name}: {out[-1].shape} in {time.perf_counter() - t:.1f} s', flush=True)
    feats = np.stack(out).astype(np.float32)
    if cache:
        np.savez(cache, features=feats, labels=data.labels, names=np.asarray(names))
    return feats, data.labels.astype(np.int64), names


def sklearn_loop(feats, labels, plan, names, *, max_iter: int, tol: float):
    """Sequential fits over the same runs; returns (seconds, predictions per row)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    predictions = []
    start, cpu = time.perf_counter(), time.process_time()
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        for e in range(len(names)):
            x = feats[e]
            for run in plan:
                scaler = StandardScaler().fit(x[run.train])
                model = LogisticRegression(C=1.0, max_iter=max_iter, tol=tol).fit(
                    scaler.transform(x[run.train]), labels[run.train]
                )
                predictions.append(model.predict(scaler.transform(x[run.test])))
    return time.perf_counter() - start, time.process_time() - cpu, predictions


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument(
        '--encoders',
        default='random-init,random-init,random-init,random-init,random-init',
        help='comma-separated weight specs (random-init: ResNet50)',
    )
    parser.add_argument('--per_class', type=int, default=100)
    parser.add_argument('--size', type=int, default=64)
    parser.add_argument('--splits', type=int, default=20)
    parser.add_argument('--shots', default='1,2,4,8,16,32,80')
    parser.add_argument('--heads', default='logistic,ridge,knn,adam')
    parser.add_argument('--repeats', type=int, default=2)
    parser.add_argument(
        '--sklearn',
        default='default,converged,exact',
        help="which sklearn loops to time: 'default' (max_iter=100, tol=1e-4), "
        "'converged' (max_iter=10000, tol=1e-4), 'exact' (max_iter=100000, tol=1e-8: "
        "the reference for prediction agreement), or ''",
    )
    parser.add_argument('--cache', default=None, help='npz to store/reuse the encoded features')
    parser.add_argument(
        '--sklearn_threads',
        type=int,
        default=0,
        help='limit scikit-learn/BLAS threads (threadpoolctl); 0: their default',
    )
    args = parser.parse_args()

    import jax

    from fewshot_jax.probe import grid as probe_grid

    print(f'# load average before: {_load_average()}; devices: {jax.devices()}', flush=True)
    feats, labels, names = encode(args.encoders.split(','), args.per_class, args.size, args.cache)
    shots = tuple(int(k) for k in args.shots.split(','))
    plan = probe_grid.protocol_plan(labels, shots=shots, split_seeds=range(args.splits), draws=1)
    matrices = {name: feats[e] for e, name in enumerate(names)}
    total = len(plan) * len(names)
    print(
        f'# {total} classifiers: {len(names)} encoders x {args.splits} splits x {len(shots)} k '
        f'on {feats.shape[1]} images x {feats.shape[2]} features',
        flush=True,
    )
    results, timings = {}, {}
    for head in [h for h in args.heads.split(',') if h]:
        options = {'early_stopping': 'none', 'max_epochs': 100} if head == 'adam' else {}
        t = time.perf_counter()
        result = probe_grid.evaluate_grid(
            matrices, labels, plan, num_classes=int(labels.max()) + 1, head=head, options=options
        )
        first = time.perf_counter() - t
        warm, cpu = [], []
        for _ in range(args.repeats):
            t, c = time.perf_counter(), time.process_time()
            result = probe_grid.evaluate_grid(
                matrices, labels, plan, num_classes=int(labels.max()) + 1, head=head, options=options
            )
            warm.append(time.perf_counter() - t)
            cpu.append(time.process_time() - c)
        results[head] = result
        timings[head] = (min(warm), min(cpu))
        accuracy = [m['accuracy'] for m in result.metrics]
        line = {
            'head': head,
            'classifiers': total,
            'first_call_s': round(first, 3),
            'warm_s': round(min(warm), 3),
            'warm_cpu_s': round(min(cpu), 3),
            'median_accuracy': float(np.median(accuracy)),
            'load': _load_average(),
        }
        if head == 'logistic':
            line['converged'] = float(np.mean([d['converged'] for d in result.diagnostics]))
            line['max_iterations'] = int(max(d['n_iter'] for d in result.diagnostics))
        print(json.dumps(line), flush=True)
    for mode in [m for m in args.sklearn.split(',') if m]:
        max_iter, tol = {'default': (100, 1e-4), 'converged': (10000, 1e-4), 'exact': (100000, 1e-8)}[mode]
        from threadpoolctl import threadpool_limits

        with threadpool_limits(limits=args.sklearn_threads or None):
            seconds, cpu_seconds, predictions = sklearn_loop(
                feats, labels, plan, names, max_iter=max_iter, tol=tol
            )
        line = {
            'head': f'sklearn loop ({mode}, max_iter={max_iter}, tol={tol:g})',
            'classifiers': total,
            'threads': args.sklearn_threads or 'default',
            'seconds': round(seconds, 3),
            'cpu_s': round(cpu_seconds, 3),
            'ms_per_fit': round(1e3 * seconds / total, 2),
            'load': _load_average(),
        }
        if 'logistic' in results:
            ours = results['logistic']
            truth = [labels[run.test] for run in ours.runs]
            sk_accuracy = [float(np.mean(p == t)) for p, t in zip(predictions, truth, strict=True)]
            our_accuracy = [m['accuracy'] for m in ours.metrics]
            medians = []
            for name in names:
                for k in shots:
                    pairs = zip(ours.encoders, ours.runs, strict=True)
                    rows = [i for i, (n, run) in enumerate(pairs) if n == name and run.k == k]
                    medians.append(
                        np.median([our_accuracy[i] for i in rows]) - np.median([sk_accuracy[i] for i in rows])
                    )
            same = [ours.predictions[i, : len(run.test)] == predictions[i] for i, run in enumerate(ours.runs)]
            agree = np.mean(np.concatenate(same))
            line['prediction_agreement_per_k'] = {
                str(k): round(
                    float(
                        np.mean(np.concatenate([same[i] for i, run in enumerate(ours.runs) if run.k == k]))
                    ),
                    4,
                )
                for k in shots
            }
            line['ratio_to_logistic_head'] = round(seconds / timings['logistic'][0], 1)
            line['cpu_ratio_to_logistic_head'] = round(cpu_seconds / timings['logistic'][1], 1)
            line['median_accuracy_sklearn'] = float(np.median(sk_accuracy))
            line['max_abs_median_difference'] = float(np.max(np.abs(medians)))
            line['prediction_agreement'] = float(agree)
        print(json.dumps(line), flush=True)
    print(f'# load average after: {_load_average()}', flush=True)


if __name__ == '__main__':
    main()
