"""The one device mesh, its shardings, and host → global array placement.

Data parallelism is ``jax.jit`` over a 1-D ``('data',)`` mesh: batches are
sharded along their first axis, parameters and optimizer state are
replicated. The mesh uses ``AxisType.Auto`` so that contractions over the batch
axis (Barlow Twins' ``z1.T @ z2``, SimCLR's similarity matrix) and BatchNorm's
batch statistics are left to the compiler, which reduces them across devices
and hosts: the losses are written over the *global* batch.
"""

from __future__ import annotations

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

from fewshot_jax.errors import ConfigError

DATA_AXIS = 'data'


def make_mesh(num_devices: int | None = None) -> Mesh:
    """Returns a 1-D ``('data',)`` mesh over all devices (or the first ``num_devices``)."""
    devices = jax.devices()
    if num_devices is not None:
        if not 1 <= num_devices <= len(devices):
            raise ConfigError(f'num_devices={num_devices}: expected 1..{len(devices)} '
                             f'({len(devices)} {devices[0].platform} devices visible)')
        devices = devices[:num_devices]
    return jax.make_mesh((len(devices),), (DATA_AXIS,), axis_types=(AxisType.Auto,),
                         devices=devices)


def data_sharding(mesh: Mesh) -> NamedSharding:
    """Sharding of a batch: first axis split over the mesh."""
    return NamedSharding(mesh, PartitionSpec(DATA_AXIS))


def replicated(mesh: Mesh) -> NamedSharding:
    """Sharding of parameters and other state: a full copy on every device."""
    return NamedSharding(mesh, PartitionSpec())


def check_global_batch(global_batch: int, mesh: Mesh) -> int:
    """Validates the global batch size and returns this host's share of it.

    Raises:
        ConfigError: if the batch does not split evenly over devices and hosts.
    """
    n_dev = mesh.devices.size
    if global_batch < 1 or global_batch % n_dev:
        raise ConfigError(
            f'data.batch_size={global_batch} must be a positive multiple of the device count '
            f'({n_dev} devices on the mesh); choose e.g. {max(n_dev, global_batch // n_dev * n_dev)}')
    return global_batch // jax.process_count()


def to_global(tree, mesh: Mesh):
    """Turns this host's slice of a batch (numpy pytree) into global sharded arrays.

    On one host this is a ``device_put`` with the data sharding; on several hosts
    each contributes its local rows and the result is the concatenated global batch.
    """
    sharding = data_sharding(mesh)
    return jax.tree.map(
        lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)), tree)


def replicate(tree, mesh: Mesh):
    """Places a pytree (e.g. a freshly initialised TrainState) replicated on the mesh."""
    return jax.device_put(tree, replicated(mesh))
