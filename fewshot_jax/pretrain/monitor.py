"""The online probe: few-shot accuracy of the encoder while it pretrains.

An evaluation hook for ``loop.run`` (solo-learn's online kNN/linear monitors
are the model, but evaluated on a *fixed labeled set* with k-shot draws rather
than on the pretraining batches). At its cadence it encodes the labeled
images with the current encoder (BatchNorm in inference mode), then, for each
of ``monitor.draws`` draws of ``k`` labeled images per class, fits a logistic
probe (scikit-learn, standardised features) and a cosine kNN on those and tests
on every other image; it logs the median accuracies as
``probe/<task>/<k>shot_logistic`` and ``…_knn``. The same draws are used at
every evaluation, and the hook runs at step 0 too, so the first value is the
random-init reference of the same run.

The labeled images are generated or read here, apart from the pretraining
source: they never enter the SSL batches.
"""

from __future__ import annotations

from collections.abc import Mapping

import jax
import ml_collections
import numpy as np
from jax.sharding import Mesh
from sklearn.linear_model import LogisticRegression

from fewshot_jax.data import sources, synthetic
from fewshot_jax.data.io import DataError
from fewshot_jax.data.pipeline import to_uint8_square
from fewshot_jax.encoder import Encoder
from fewshot_jax.errors import ConfigError
from fewshot_jax.train_lib import loop

SYNTHETIC_TASKS = {
    'nanowires': synthetic.nanowires,
    'nanoparticles': synthetic.nanoparticles,
    'viruses': synthetic.viruses,
}


class MonitorConfigError(ConfigError):
    """A ``monitor.*`` setting that cannot be used."""


def labeled_set(task: str, images_per_class: int, size: int, seed: int):
    """The monitor's labeled images ``(N, size, size)`` float32 and labels ``(N,)`` int.

    Args:
        task: a synthetic task name (``'nanowires'``, ``'nanoparticles'``,
            ``'viruses'``) or ``'folder:/path'`` (class-per-folder images).
        images_per_class: how many images of each class to use.
        size: side in pixels (the pretraining resolution).
        seed: generator seed (synthetic) or draw seed (folder).
    """
    if task in SYNTHETIC_TASKS:
        data = SYNTHETIC_TASKS[task](images_per_class, size, seed=seed)
        return np.asarray(data.images, np.float32), np.asarray(data.labels, np.int64)
    if task.startswith('folder:'):
        source = sources.ClassFolderSource(task.removeprefix('folder:'))
        rng = np.random.default_rng(seed)
        labels = np.asarray(source.labels, np.int64)
        picked = np.concatenate(
            [rng.permutation(np.flatnonzero(labels == c))[:images_per_class] for c in np.unique(labels)]
        )
        images = (
            np.stack(
                [to_uint8_square(source[int(i)]['image'], size, channels=1)[..., 0] for i in picked]
            ).astype(np.float32)
            / 255.0
        )
        return images, labels[picked]
    raise MonitorConfigError(
        f'monitor.tasks entry {task!r}: expected one of '
        f"{sorted(SYNTHETIC_TASKS)} or 'folder:/path/to/class_folders'"
    )


def fixed_draws(labels: np.ndarray, k: int, draws: int, seed: int) -> list[np.ndarray]:
    """``draws`` index sets of ``k`` images per class (the probe's training sets).

    Raises:
        MonitorConfigError: a class has fewer than ``k + 2`` images (k to train, at
            least two to test).
    """
    rng = np.random.default_rng(seed)
    classes = np.unique(labels)
    for c in classes:
        if np.sum(labels == c) < k + 2:
            raise MonitorConfigError(
                f'monitor: class {c} has {np.sum(labels == c)} images, fewer than k + 2 = {k + 2}; '
                f'raise monitor.images_per_class or lower monitor.shots'
            )
    return [
        np.concatenate([rng.choice(np.flatnonzero(labels == c), k, replace=False) for c in classes])
        for _ in range(draws)
    ]


def probe_accuracies(
    features: np.ndarray, labels: np.ndarray, train_sets: list[np.ndarray]
) -> dict[str, float]:
    """Median test accuracy over the draws of a logistic probe and a cosine 1-NN-vote kNN.

    The logistic probe standardises with the k-shot set's statistics only and is
    scikit-learn's ``LogisticRegression`` (C = 1, L2). The kNN votes among the
    ``min(k, 5)`` nearest training images by cosine similarity.
    """
    # float64: a random-init ResNet50's pooled features reach ~1e20, whose squares
    # overflow float32 while standardising.
    features = np.asarray(features, np.float64)
    logistic, knn = [], []
    for train in train_sets:
        test = np.setdiff1d(np.arange(len(labels)), train)
        mean, std = features[train].mean(0), features[train].std(0) + 1e-6
        x_train, x_test = (features[train] - mean) / std, (features[test] - mean) / std
        clf = LogisticRegression(max_iter=1000).fit(x_train, labels[train])
        logistic.append(np.mean(clf.predict(x_test) == labels[test]))
        unit = features / (np.linalg.norm(features, axis=1, keepdims=True) + 1e-12)
        sims = unit[test] @ unit[train].T
        n_neighbours = min(len(train) // len(np.unique(labels)), 5)
        nearest = np.argsort(-sims, axis=1)[:, :n_neighbours]
        votes = labels[train][nearest]
        predicted = np.array([np.bincount(v, minlength=labels.max() + 1).argmax() for v in votes])
        knn.append(np.mean(predicted == labels[test]))
    return {'logistic': float(np.median(logistic)), 'knn': float(np.median(knn))}


def make_probe_hook(
    monitor_cfg: ml_collections.ConfigDict, model_cfg: Mapping, mesh: Mesh | None = None
) -> loop.Hook:
    """The online-probe hook that ``config.monitor`` describes.

    Config fields: ``tasks`` (names, see :func:`labeled_set`), ``every`` (steps or
    a fraction of the run), ``images_per_class``, ``image_size``, ``shots``,
    ``draws``, ``layer`` ('pooled' or a stage), ``seed``.
    """
    del mesh  # the labeled set is small: encoded on the default device
    tasks = tuple(monitor_cfg.tasks)
    shots = tuple(int(k) for k in monitor_cfg.get('shots', (8,)))
    draws = int(monitor_cfg.get('draws', 20))
    layer = monitor_cfg.get('layer', 'pooled')
    seed = int(monitor_cfg.get('seed', 0))
    if draws < 1 or not shots or min(shots) < 1:
        raise MonitorConfigError(f'monitor.shots={shots} and monitor.draws={draws}: expected positive values')
    sets = {}
    for task in tasks:
        try:
            images, labels = labeled_set(
                task, int(monitor_cfg.images_per_class), int(monitor_cfg.image_size), seed + 7919
            )
        except DataError as err:
            raise MonitorConfigError(f'monitor.tasks {task!r}: {err}') from err
        sets[task] = (images, labels, {k: fixed_draws(labels, k, draws, seed + k) for k in shots})
    encoder = Encoder(_zero_variables(model_cfg), model_cfg, name='monitor')

    def evaluate(step: int, state) -> dict:
        del step
        encoder.variables = jax.device_put(_local_encoder_variables(state))
        out = {}
        for task, (images, labels, train_sets) in sets.items():
            features = encoder.encode(images, layer=layer, progress=False)
            features = features.reshape(len(features), -1)
            for k, draws_k in train_sets.items():
                for head, acc in probe_accuracies(features, labels, draws_k).items():
                    out[f'{task}/{k}shot_{head}'] = acc
        return out

    return loop.Hook(name='probe', fn=evaluate, every=monitor_cfg.get('every', 0.25), at_start=True)


def _zero_variables(model_cfg: Mapping) -> dict:
    import jax.numpy as jnp

    from fewshot_jax.models import make_encoder

    shapes = jax.eval_shape(
        lambda: make_encoder(model_cfg).init(
            jax.random.key(0), jnp.zeros((1, 32, 32, 3), jnp.float32), train=False
        )
    )
    return jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), dict(shapes))


def _local_encoder_variables(state) -> dict:
    # Replicated global arrays: every process reads its own full copy (works on
    # several hosts, where device_get of a global array would not).
    def local(x):
        return np.asarray(x.addressable_data(0))

    return {
        'params': jax.tree.map(local, state.params['encoder']),
        'batch_stats': jax.tree.map(local, state.batch_stats['encoder']),
    }
