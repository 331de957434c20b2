"""Probe heads: exact against scikit-learn on real encoder features, batch = alone, no leakage."""

import warnings

import jax
import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression, RidgeClassifier
from sklearn.preprocessing import StandardScaler

from fewshot_jax import probe
from fewshot_jax.data import synthetic
from fewshot_jax.data.splits import k_shot_indices, stratified_split
from fewshot_jax.encoder import Encoder
from fewshot_jax.models import make_encoder
from fewshot_jax.models.weights import model_config
from fewshot_jax.probe import grid as probe_grid

# Up to the whole training pool: 15 images per class, 80/20 split -> 12.
SHOTS = (1, 2, 4, 8, 12)


@pytest.fixture(scope='module')
def encoded():
    """Pooled features of a tiny random-init ResNet18 on synthetic nanowires (real features)."""
    data = synthetic.nanowires(15, 32, seed=3)
    config = model_config(18, 16, 'v1.5')
    variables = make_encoder(config).init(
        jax.random.key(0), np.zeros((1, 32, 32, 3), np.float32), train=False
    )
    features = Encoder(variables, config).encode(data.images, batch_size=32)
    return features.astype(np.float64), data.labels.astype(np.int64)


def _runs(labels, shots, seeds):
    """(k, train, test) for every k and seed: the paper's split + nested k-shot draw."""
    out = []
    for seed in seeds:
        train_part, test_part = stratified_split(labels, 0.2, seed)
        for k, idx in k_shot_indices(labels, train_part, shots, seed=seed).items():
            out.append((k, idx, test_part))
    return out


def _stack(features, labels, runs):
    n = max(len(train) for _, train, _ in runs)
    x = np.zeros((len(runs), n, features.shape[1]), np.float32)
    y = np.zeros((len(runs), n), np.int64)
    valid = np.zeros((len(runs), n), bool)
    for r, (_, train, _) in enumerate(runs):
        x[r, : len(train)], y[r, : len(train)], valid[r, : len(train)] = (
            features[train],
            labels[train],
            True,
        )
    # Padding rows hold garbage on purpose: they must not matter.
    x[~valid] = 1e6
    return x, y, valid


def _sklearn_logistic(x, y, C):
    scaler = StandardScaler().fit(x)
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        model = LogisticRegression(C=C, tol=1e-10, max_iter=20000).fit(scaler.transform(x), y)
    return scaler, model


@pytest.mark.parametrize('C', [1.0, 0.05])
def test_logistic_agrees_with_sklearn_on_real_features_for_every_k(encoded, C):
    features, labels = encoded
    runs = _runs(labels, SHOTS, seeds=(0, 1, 2))
    x, y, valid = _stack(features, labels, runs)
    batch = probe.fit_many(x, y, valid, 'logistic', C=C)
    test = np.stack([features[t] for _, _, t in runs])
    ours = batch.predict(test)
    assert np.asarray(batch.params['converged']).all()
    for k in SHOTS:
        agree, total = 0, 0
        for r, (run_k, train, test_idx) in enumerate(runs):
            if run_k != k:
                continue
            scaler, model = _sklearn_logistic(features[train], labels[train], C)
            reference = model.predict(scaler.transform(features[test_idx]))
            agree += int(np.sum(reference == ours[r]))
            total += len(test_idx)
            # Same optimum: the weights agree closely, not just the predictions.
            coef = np.asarray(batch.params['coef'][r])
            assert np.abs(coef - model.coef_.T).max() <= 1e-2 * np.abs(model.coef_).max()
        assert agree / total >= 0.99, f'k={k}: {agree}/{total} test predictions agree'


def test_binary_logistic_matches_sklearns_single_vector_fit(encoded):
    features, labels = encoded
    two = np.flatnonzero(labels < 2)
    x, y = features[two], labels[two]
    rng = np.random.default_rng(0)
    train = np.concatenate([rng.choice(np.flatnonzero(y == c), 5, replace=False) for c in (0, 1)])
    test = np.setdiff1d(np.arange(len(y)), train)
    clf = probe.fit(x[train], np.asarray(['dispersed', 'singular'])[y[train]], C=0.5)
    scaler, model = _sklearn_logistic(x[train], y[train], 0.5)
    decision = clf.decision_function(x[test])
    np.testing.assert_allclose(
        decision[:, 1] - decision[:, 0],
        model.decision_function(scaler.transform(x[test])),
        rtol=1e-3,
        atol=1e-3,
    )
    assert set(clf.predict(x[test])) <= {'dispersed', 'singular'}


@pytest.mark.parametrize(
    'head,opts',
    [
        ('logistic', {}),
        ('ridge', {'l2': (0.1, 1.0, 10.0)}),
        ('knn', {'neighbors': 3}),
        ('adam', {'early_stopping': 'none', 'max_epochs': 20}),
    ],
)
def test_a_run_in_the_padded_grid_equals_the_run_fitted_alone(encoded, head, opts):
    features, labels = encoded
    runs = _runs(labels, (1, 4, 8), seeds=(0,))
    x, y, valid = _stack(features, labels, runs)
    batch = probe.fit_many(x, y, valid, head, **opts)
    test = np.stack([features[t] for _, _, t in runs])
    for r, (_, train, test_idx) in enumerate(runs):
        alone = probe.fit(features[train], labels[train], head, **opts)
        # Scores: logits, or kNN vote shares.
        np.testing.assert_allclose(
            batch.decision_function(test)[r],
            alone.decision_function(features[test_idx]),
            rtol=1e-5,
            atol=1e-5,
        )
        if head != 'knn':
            scale = np.abs(alone.coef_).max()
            np.testing.assert_allclose(
                np.asarray(batch.params['coef'][r]), alone.coef_, rtol=0, atol=1e-5 * scale
            )


@pytest.mark.parametrize(
    'head,opts',
    [
        ('logistic', {}),
        ('ridge', {'l2': (0.1, 1.0, 10.0)}),
        ('knn', {'neighbors': 3}),
        ('adam', {'early_stopping': 'none', 'max_epochs': 10}),
    ],
)
def test_a_run_of_the_whole_grid_equals_the_run_fitted_alone(encoded, head, opts):
    """The protocol's grid (two encoders, every k, chunked and gathered by index) vs lone fits."""
    features, labels = encoded
    second = np.sqrt(np.abs(features[:, ::-1]))  # another real-valued encoder of the same width
    matrices = {'A': features.astype(np.float32), 'B': second.astype(np.float32)}
    plan = probe_grid.protocol_plan(labels, shots=(1, 2, 4, 8), split_seeds=(0, 1), draws=1)
    # A small chunk bound: several compiled calls per size bucket, a padded last chunk.
    result = probe_grid.evaluate_grid(
        matrices, labels, plan, num_classes=4, head=head, options=opts, chunk_values=8 * 32 * 128
    )
    assert len(result.runs) == 2 * len(plan)
    for r, (name, run) in enumerate(zip(result.encoders, result.runs, strict=True)):
        x = matrices[name]
        alone = probe.fit(x[run.train], labels[run.train], head, **opts)
        expected = alone.decision_function(x[run.test])
        np.testing.assert_allclose(
            result.scores[r, : len(run.test)], expected, rtol=1e-5, atol=1e-5, err_msg=f'{name} k={run.k}'
        )
        np.testing.assert_array_equal(result.predictions[r, : len(run.test)], alone.predict(x[run.test]))


def test_ridge_matches_sklearn_ridge_classifier(encoded):
    features, labels = encoded
    for _, train, test in _runs(labels, (2, 8), seeds=(1,)):
        clf = probe.fit(features[train], labels[train], 'ridge', l2=3.0)
        scaler = StandardScaler().fit(features[train])
        model = RidgeClassifier(alpha=3.0).fit(scaler.transform(features[train]), labels[train])
        np.testing.assert_allclose(
            clf.decision_function(features[test]),
            model.decision_function(scaler.transform(features[test])),
            rtol=1e-3,
            atol=1e-3,
        )


def test_ridge_picks_the_regulariser_with_the_smallest_leave_one_out_error(encoded):
    features, labels = encoded
    _, train, _ = _runs(labels, (8,), seeds=(0,))[0]
    l2s = (0.01, 1.0, 100.0, 10000.0)
    clf = probe.fit(features[train], labels[train], 'ridge', l2=l2s)
    x = StandardScaler().fit_transform(features[train])
    targets = 2.0 * np.eye(4)[labels[train]] - 1
    errors = []
    for l2 in l2s:  # leave each image out, refit, predict it: the definition, as a loop
        error = 0.0
        for i in range(len(train)):
            keep = np.arange(len(train)) != i
            model = RidgeClassifier(alpha=l2).fit(x[keep], labels[train][keep])
            error += np.sum((targets[i] - model.decision_function(x[i : i + 1])[0]) ** 2)
        errors.append(error)
    assert float(clf.batch.params['l2'][0]) == pytest.approx(l2s[int(np.argmin(errors))])


def test_knn_votes_like_a_plain_loop(encoded):
    features, labels = encoded
    _, train, test = _runs(labels, (4,), seeds=(2,))[0]
    clf = probe.fit(features[train], labels[train], 'knn', neighbors=5, temperature=0.1)
    proba = clf.predict_proba(features[test])
    unit = features / np.linalg.norm(features, axis=1, keepdims=True)
    for row, i in enumerate(test):
        similarity = unit[train] @ unit[i]
        nearest = np.argsort(-similarity)[:5]
        votes = np.zeros(4)
        for j in nearest:
            votes[labels[train][j]] += np.exp(similarity[j] / 0.1)
        np.testing.assert_allclose(proba[row], votes / votes.sum(), rtol=1e-4, atol=1e-5)


def test_test_features_never_touch_training_nan_test_rows_change_no_weight(encoded):
    features, labels = encoded
    runs = _runs(labels, (1, 4), seeds=(0, 1))
    train_index = np.zeros((len(runs), 16), np.int64)
    valid = np.zeros((len(runs), 16), bool)
    for r, (_, train, _) in enumerate(runs):
        train_index[r, : len(train)], valid[r, : len(train)] = train, True
    # Every image that trains no run (the test parts, minus other splits' training rows).
    unused = np.setdiff1d(np.arange(len(labels)), np.concatenate([t for _, t, _ in runs]))
    assert len(unused) > 20
    poisoned = features.astype(np.float32).copy()
    poisoned[unused] = np.nan
    for head, opts in (
        ('logistic', {}),
        ('ridge', {}),
        ('knn', {}),
        ('adam', {'early_stopping': 'none', 'max_epochs': 5}),
    ):
        clean = probe.fit_indexed(
            features.astype(np.float32), labels, train_index, valid, head, num_classes=4, **opts
        )
        dirty = probe.fit_indexed(poisoned, labels, train_index, valid, head, num_classes=4, **opts)
        for key, value in clean.params.items():
            np.testing.assert_array_equal(
                np.asarray(value), np.asarray(dirty.params[key]), err_msg=f'{head}: {key} changed'
            )


def test_adam_learns_a_separable_problem_and_stops_on_the_holdout():
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(3, 16)) * 3
    y = np.repeat(np.arange(3), 30)
    x = centres[y] + rng.normal(size=(90, 16))
    train = np.concatenate([np.flatnonzero(y == c)[:8] for c in range(3)])
    holdout = np.concatenate([np.flatnonzero(y == c)[8:14] for c in range(3)])
    test = np.setdiff1d(np.arange(90), np.concatenate([train, holdout]))
    clf = probe.fit(
        x[train],
        y[train],
        'adam',
        holdout_x=x[holdout],
        holdout_y=y[holdout],
        lr=1e-2,
        patience=5,
        max_epochs=500,
    )
    epochs = int(clf.batch.params['epochs'][0])
    best = int(clf.batch.params['best_epoch'][0])
    assert epochs < 500 and epochs - best == 5  # stopped after 5 epochs without improvement
    assert np.mean(clf.predict(x[test]) == y[test]) > 0.9


def test_bad_input_is_named():
    x = np.random.default_rng(0).normal(size=(2, 6, 5))
    y = np.tile(np.arange(3), (2, 2))
    bad = x.copy()
    bad[1, 4, 2] = np.nan
    with pytest.raises(probe.ProbeInputError, match='run 1, row 4'):
        probe.fit_many(bad, y)
    with pytest.raises(probe.ProbeInputError, match=r'run 0 has no training example of class'):
        probe.fit_many(x, np.where(y == 2, 1, y), num_classes=3)
    with pytest.raises(probe.ProbeInputError, match="head='svm'"):
        probe.fit_many(x, y, head='svm')
    with pytest.raises(probe.ProbeInputError, match='no option'):
        probe.fit_many(x, y, head='logistic', gamma=2)
    with pytest.raises(probe.ProbeInputError, match='at least 2'):
        probe.fit(x[0], np.zeros(6, int))
    with pytest.raises(probe.ProbeInputError, match='holdout_x'):
        probe.fit(x[0], y[0], 'adam')
    with pytest.raises(probe.ProbeInputError, match='no probabilities|not probabilities'):
        probe.fit(x[0], y[0], 'ridge').predict_proba(x[0])
    with pytest.raises(probe.ProbeInputError, match=r'expected \(2, m, 5\)'):
        probe.fit_many(x, y).predict(x[0])
