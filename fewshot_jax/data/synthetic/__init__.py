"""Synthetic TEM benchmark: seeded images with exact ground truth, no download.

Stand-ins for the paper's data so that every experiment runs offline:

* `generic(n, size, seed)`: unlabeled TEM-like scenes for pretraining
  (membranes, vesicles, particles, fibres, textures).
* `nanowires(n_per_class, size, seed)`: singular / dispersed / network /
  bundle morphologies with masks; dispersed and network labels agree with
  `fewshot_jax.masks.percolates` on every mask.
* `nanoparticles(n_per_class, size, seed)`: dispersed particles, separate
  clusters, one percolating cluster, with masks.
* `viruses(n_per_class, size, seed)`: virus-like particle shapes.
* `everyday(n, size, seed)`: colour crops of the photographs bundled with
  scikit-image, a stand-in for the paper's 832 ImageNet images.

Every function is deterministic in its arguments. Image i of an unlabeled
set depends only on (seed, task, i), and image k of a class only on
(seed, task, class, k), so asking for more images extends a smaller set.
The labeled tasks and `generic` take an optional `imaging_seed`: the imaging
conditions (polarity, contrast, illumination, grain, blur, dose, levels) then come
from a stream of their own, so two calls that differ only in `imaging_seed` image
the same specimens twice (paired acquisitions of one field).
A labeled scene that cannot be drawn as its class demands (never seen in
practice) raises `GenerationError`. Example::

    from fewshot_jax.data import synthetic
    x = synthetic.generic(8, 96, seed=0)            # float32 (8, 96, 96)
    ds = synthetic.nanowires(10, 128, seed=0)        # 40 images, labels, masks
"""

from __future__ import annotations

import dataclasses
import numbers
from collections.abc import Mapping

import numpy as np

from fewshot_jax.data.synthetic import microscope
from fewshot_jax.data.synthetic import particles as synthetic_particles
from fewshot_jax.data.synthetic import virions as synthetic_viruses
from fewshot_jax.data.synthetic import wires as synthetic_wires
from fewshot_jax.data.synthetic.photos import everyday_crop
from fewshot_jax.data.synthetic.scenes import generic_scene
from fewshot_jax.data.synthetic.wires import GenerationError
from fewshot_jax.errors import is_count

__all__ = [
    'GenerationError',
    'SyntheticSet',
    'SyntheticSpecError',
    'everyday',
    'generic',
    'nanoparticles',
    'nanowires',
    'viruses',
]

MIN_SIZE = 16

# Each task draws from its own random stream so that, e.g., generic(…, seed=0)
# and nanowires(…, seed=0) are unrelated.
_STREAM_GENERIC = 0
_STREAM_EVERYDAY = 1
_STREAM_NANOWIRES = 2
_STREAM_NANOPARTICLES = 3
_STREAM_VIRUSES = 4


class SyntheticSpecError(ValueError):
    """A synthetic-data request with an unusable argument."""


@dataclasses.dataclass(frozen=True)
class SyntheticSet:
    """A labeled synthetic data set.

    Attributes:
      images: float32 (n, H, W) in [0, 1].
      labels: int32 (n,), indices into class_names.
      class_names: names of the classes, in label order.
      masks: uint8 (n, H, W) with values in {0, 1}, or None for tasks with no
        segmentation ground truth.
    """

    images: np.ndarray
    labels: np.ndarray
    class_names: tuple[str, ...]
    masks: np.ndarray | None = None


def _check_count(name: str, value) -> int:
    if not is_count(value, 0):
        raise SyntheticSpecError(f'{name} must be a non-negative integer, got {value!r}')
    return int(value)


def _check_args(count_name: str, count, size, seed) -> tuple[int, int, int]:
    count = _check_count(count_name, count)
    if not is_count(size, MIN_SIZE):
        raise SyntheticSpecError(f'size must be an integer >= {MIN_SIZE} pixels, got {size!r}')
    seed = _check_count('seed', seed)
    return count, int(size), seed


def _image_rng(seed: int, stream: int, index: int) -> np.random.Generator:
    """The random generator of one image: a function of (seed, task stream, index) only."""
    return np.random.default_rng([seed, stream, index])


_IMAGING_STREAM = 1  # marks the imaging generators' seed sequences (one entry longer)


def _check_imaging(imaging_seed, fixed_knobs) -> dict:
    """Checks a generator call's imaging_seed; returns its validated {Knobs field: value or 'typical'}."""
    if imaging_seed is not None:
        _check_count('imaging_seed', imaging_seed)
    fixed = dict(fixed_knobs or {})
    for name, value in fixed.items():
        if name not in microscope.KNOB_NAMES:
            raise SyntheticSpecError(
                f'fixed_knobs: unknown knob {name!r}; expected some of {list(microscope.KNOB_NAMES)}'
            )
        kind = bool if name == 'dark_objects' else numbers.Real
        if value != 'typical' and (
            not isinstance(value, kind) or (kind is numbers.Real and isinstance(value, bool))
        ):
            raise SyntheticSpecError(
                f"fixed_knobs[{name!r}] must be 'typical' or a {kind.__name__}, got {value!r}"
            )
    return fixed


def _imaging(imaging_seed, fixed: dict, *key: int) -> microscope.Imaging | None:
    """How one image is imaged, or None (the scene's own stream, nothing fixed)."""
    if imaging_seed is None and not fixed:
        return None
    rng = None
    if imaging_seed is not None:
        rng = np.random.default_rng([int(imaging_seed), _IMAGING_STREAM, *key])
    return microscope.Imaging(rng, fixed)


def generic(
    n: int, size: int, seed: int, imaging_seed: int | None = None, fixed_knobs: Mapping | None = None
) -> np.ndarray:
    """Unlabeled TEM-like images for self-supervised pretraining.

    Args:
      n: number of images.
      size: side of the square images in pixels (>= 16).
      seed: non-negative integer seed.
      imaging_seed: None (default): imaging conditions drawn with the scene; a
        non-negative int: from their own stream (the same scenes, other acquisitions).
      fixed_knobs: imaging conditions held at one value for every image, as
        {field of `synthetic_microscope.Knobs`: value or 'typical'} (the middle of its
        range); None: all drawn. For measuring what each condition costs a method.

    Returns:
      float32 (n, size, size) array in [0, 1].

    Raises:
      SyntheticSpecError: on a negative or non-integer n, seed or imaging_seed, a size below
        16, or an unknown knob or bad value in fixed_knobs.
    """
    n, size, seed = _check_args('n', n, size, seed)
    fixed = _check_imaging(imaging_seed, fixed_knobs)
    out = np.empty((n, size, size), dtype=np.float32)
    for i in range(n):
        imaging = _imaging(imaging_seed, fixed, _STREAM_GENERIC, i)
        out[i] = generic_scene(_image_rng(seed, _STREAM_GENERIC, i), size, imaging)
    return out


def everyday(n: int, size: int, seed: int) -> np.ndarray:
    """Colour everyday images: random crops, flips and scales of scikit-image's photographs.

    A stand-in for the paper's 832 ImageNet images; no download.

    Args:
      n: number of images.
      size: side of the square images in pixels (>= 16).
      seed: non-negative integer seed.

    Returns:
      float32 (n, size, size, 3) array in [0, 1].
    """
    n, size, seed = _check_args('n', n, size, seed)
    out = np.empty((n, size, size, 3), dtype=np.float32)
    for i in range(n):
        out[i] = everyday_crop(_image_rng(seed, _STREAM_EVERYDAY, i), size)
    return out


def _labeled(
    scene_fn, class_names, stream, n_per_class, size, seed, imaging_seed, fixed_knobs
) -> SyntheticSet:
    """Draws n_per_class images of every class; image i of class c uses its own stream."""
    n_per_class, size, seed = _check_args('n_per_class', n_per_class, size, seed)
    fixed = _check_imaging(imaging_seed, fixed_knobs)
    n = n_per_class * len(class_names)
    images = np.empty((n, size, size), dtype=np.float32)
    masks = np.empty((n, size, size), dtype=np.uint8)
    labels = np.repeat(np.arange(len(class_names), dtype=np.int32), n_per_class)
    for i, label in enumerate(labels):
        rng = np.random.default_rng([seed, stream, int(label), i % n_per_class])
        imaging = _imaging(imaging_seed, fixed, stream, int(label), i % n_per_class)
        images[i], masks[i] = scene_fn(rng, size, int(label), imaging)
    return SyntheticSet(images, labels, tuple(class_names), masks)


def nanowires(
    n_per_class: int,
    size: int,
    seed: int,
    imaging_seed: int | None = None,
    fixed_knobs: Mapping | None = None,
) -> SyntheticSet:
    """Nanowire morphologies: singular, dispersed, network, bundle, with exact masks.

    Images are grouped by class (labels 0,0,…,1,1,…). The mask of every
    'dispersed' image fails and of every 'network' image passes
    `fewshot_jax.masks.percolates` (eps 2, min_samples 2, margin 2).

    Args:
      n_per_class: images per class.
      size: side of the square images in pixels (>= 16).
      seed: non-negative integer seed.
      imaging_seed, fixed_knobs: see `generic`.

    Returns:
      SyntheticSet with masks (1 on nanowire pixels).
    """
    return _labeled(
        synthetic_wires.nanowire_scene,
        synthetic_wires.CLASS_NAMES,
        _STREAM_NANOWIRES,
        n_per_class,
        size,
        seed,
        imaging_seed,
        fixed_knobs,
    )


def nanoparticles(
    n_per_class: int,
    size: int,
    seed: int,
    imaging_seed: int | None = None,
    fixed_knobs: Mapping | None = None,
) -> SyntheticSet:
    """Nanoparticle assemblies: dispersed, separate_clusters, percolating_cluster, with masks.

    Spheres, rods or triangles (one family per image, drawn independently of
    the class). Every 'percolating_cluster' mask passes and every other mask
    fails `fewshot_jax.masks.percolates`.

    Args:
      n_per_class: images per class.
      size: side of the square images in pixels (>= 16).
      seed: non-negative integer seed.
      imaging_seed, fixed_knobs: see `generic`.

    Returns:
      SyntheticSet with masks (1 on particle pixels), images grouped by class.
    """
    return _labeled(
        synthetic_particles.nanoparticle_scene,
        synthetic_particles.CLASS_NAMES,
        _STREAM_NANOPARTICLES,
        n_per_class,
        size,
        seed,
        imaging_seed,
        fixed_knobs,
    )


def viruses(
    n_per_class: int,
    size: int,
    seed: int,
    imaging_seed: int | None = None,
    fixed_knobs: Mapping | None = None,
) -> SyntheticSet:
    """Virus-like particles of five architectures, with particle masks.

    Classes: icosahedral, enveloped_spiky, brick, filamentous, ovoid_striated
    (one type per image, 1 to ~25 particles, random magnification).

    Args:
      n_per_class: images per class.
      size: side of the square images in pixels (>= 16; the real set is 256 px).
      seed: non-negative integer seed.
      imaging_seed, fixed_knobs: see `generic`.

    Returns:
      SyntheticSet with masks (1 on virus pixels), images grouped by class.
    """
    return _labeled(
        synthetic_viruses.virus_scene,
        synthetic_viruses.CLASS_NAMES,
        _STREAM_VIRUSES,
        n_per_class,
        size,
        seed,
        imaging_seed,
        fixed_knobs,
    )
