"""The one device mesh, its shardings, and host → global array placement.

Data parallelism is ``jax.jit`` over a 1-D ``('data',)`` mesh: batches are
sharded along their first axis, parameters and optimizer state are
replicated. The mesh uses ``AxisType.Auto`` so that contractions over the batch
axis (Barlow Twins' ``z1.T @ z2``, SimCLR's similarity matrix) and BatchNorm's
batch statistics are left to the compiler, which reduces them across devices
and hosts: the losses are written over the *global* batch.

On several processes (hosts) the mesh lists each process's devices together,
in process order, so process ``p`` of ``P`` holds rows ``[p·B/P, (p+1)·B/P)``
of every global batch of ``B`` rows: the block its input pipeline reads.
:func:`process_allgather_bytes` and :func:`check_same_on_all_processes` are the
small host-level collectives a job needs besides the jitted step (agreeing on
a config, a lock, a data-iterator state).
"""

from __future__ import annotations

import functools
import json

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

from fewshot_jax.errors import ConfigError

DATA_AXIS = 'data'


def make_mesh(num_devices: int | None = None) -> Mesh:
    """Returns a 1-D ``('data',)`` mesh over all devices (or the first ``num_devices``).

    Devices are ordered by process, then id, so that each process's devices hold a
    contiguous block of the batch (the rows its pipeline reads, see :func:`to_global`).
    ``num_devices`` below the global count is for one-process runs.
    """
    devices = sorted(jax.devices(), key=lambda d: (d.process_index, d.id))
    if num_devices is not None:
        if not 1 <= num_devices <= len(devices):
            raise ConfigError(
                f'num_devices={num_devices}: expected 1..{len(devices)} '
                f'({len(devices)} {devices[0].platform} devices visible)'
            )
        if jax.process_count() > 1 and num_devices != len(devices):
            raise ConfigError(
                f'num_devices={num_devices}: a job of {jax.process_count()} '
                f'processes uses all {len(devices)} devices; leave num_devices '
                f'unset (None)'
            )
        devices = devices[:num_devices]
    # Mesh() keeps this order (jax.make_mesh may reorder devices by physical topology).
    return Mesh(np.asarray(devices), (DATA_AXIS,), axis_types=(AxisType.Auto,))


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
            f'({n_dev} devices on the mesh); choose e.g. {max(n_dev, global_batch // n_dev * n_dev)}'
        )
    return global_batch // jax.process_count()


def to_global(tree, mesh: Mesh):
    """Turns this host's slice of a batch (numpy pytree) into global sharded arrays.

    On one host this is a ``device_put`` with the data sharding; on several hosts
    process ``p`` contributes rows ``[p·n, (p+1)·n)`` of the global batch (its ``n``
    local rows) and the result is the concatenated global batch.
    """
    sharding = data_sharding(mesh)

    def place(x):
        x = np.asarray(x)
        if jax.process_count() > 1:
            _check_process_block(mesh, x.shape[0])
        return jax.make_array_from_process_local_data(sharding, x)

    return jax.tree.map(place, tree)


@functools.lru_cache(maxsize=64)
def _check_process_block(mesh: Mesh, local_rows: int) -> None:
    """Raises unless this process's devices hold its block of rows of the global batch.

    The input pipelines give process ``p`` rows ``[p·n, (p+1)·n)`` of each global
    batch; a mesh that interleaves processes' devices would silently reorder the
    batch (and so change the run), so it is refused.
    """
    p, n = jax.process_index(), local_rows
    indices = data_sharding(mesh).addressable_devices_indices_map((n * jax.process_count(),))
    rows = sorted(set().union(*(range(n * jax.process_count())[i[0]] for i in indices.values())))
    if rows != list(range(p * n, (p + 1) * n)):
        raise ConfigError(
            f'process {p} holds batch rows {rows[:4]}… on the mesh, '
            f'not its block {p * n}..{(p + 1) * n}: build the mesh with '
            f'sharding.make_mesh (devices grouped by process)'
        )


def replicate(tree, mesh: Mesh):
    """Places a pytree (e.g. a freshly initialised TrainState) replicated on the mesh."""
    return jax.device_put(tree, replicated(mesh))


def process_allgather_bytes(data: bytes) -> list[bytes]:
    """Every process's ``data``, in process order (a collective: all processes must call it).

    For small host-side values (a config, a lock's outcome, an iterator state):
    the bytes travel as a padded uint8 array through ``multihost_utils``.
    """
    if jax.process_count() == 1:
        return [data]
    lengths = multihost_utils.process_allgather(np.asarray([len(data)], np.int32), tiled=True)
    # Pad to a power of two so that repeated calls reuse a few compiled gathers.
    size = 1 << max(6, int(max(lengths)).bit_length())
    padded = np.zeros(size, np.uint8)
    padded[: len(data)] = np.frombuffer(data, np.uint8)
    rows = multihost_utils.process_allgather(padded)
    return [bytes(row[:length]) for row, length in zip(rows, lengths, strict=True)]


def connect_processes() -> None:
    """Sets up the all-device cross-process communicator while the processes are in step.

    On CPU, gloo builds a communicator on the first collective over a set of devices
    and gives the other processes 30 s to join (not configurable); a process still
    compiling the first train step under load can miss that, and the job fails. Once
    built, the communicator is reused by every program over the same devices, and a
    collective waits for late processes as long as the job lives. Call it right after
    a collective that synchronised the processes (launch.py: the config check).
    """
    if jax.process_count() == 1:
        return
    mesh = make_mesh()
    ones = to_global(np.ones(jax.local_device_count(), np.float32), mesh)
    total = jax.jit(lambda x: x.sum(), out_shardings=replicated(mesh))(ones)
    if int(total) != jax.device_count():
        raise RuntimeError(f'a sum of ones over the {jax.device_count()} devices gave {total}')


class ProcessMismatchError(ConfigError):
    """Processes of one job were started with different settings."""


def check_same_on_all_processes(values: dict) -> None:
    """Stops every process of a job if any process's ``values`` differ from process 0's.

    Each process sends its (nested) dict; every process compares all of them, so all
    raise the same error, naming the differing dotted fields and their values.

    Raises:
        ProcessMismatchError: naming the first process that differs and every field
            in which it differs from process 0.
    """
    mine = json.dumps(values, sort_keys=True, default=repr).encode()
    everyone = process_allgather_bytes(mine)
    if all(other == everyone[0] for other in everyone):
        return
    first = _flatten(json.loads(everyone[0]))
    for index, other in enumerate(everyone):
        if other == everyone[0]:
            continue
        theirs = _flatten(json.loads(other))
        fields = sorted(k for k in first.keys() | theirs.keys() if first.get(k) != theirs.get(k))
        detail = '; '.join(
            f'{k}: {first.get(k, "<missing>")!r} (process 0) vs '
            f'{theirs.get(k, "<missing>")!r} (process {index})'
            for k in fields[:10]
        )
        more = f' and {len(fields) - 10} more' if len(fields) > 10 else ''
        raise ProcessMismatchError(
            f'the {len(everyone)} processes of this job were started with different settings: '
            f'{detail}{more}. Start every process with the same command line '
            f'(only the process id may differ)'
        )


def _flatten(tree: dict, prefix: str = '') -> dict:
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(_flatten(value, f'{prefix}{key}.'))
        else:
            out[f'{prefix}{key}'] = value
    return out


def jit_step(step, mesh: Mesh):
    """Compiles a ``(state, batch) -> (state, metrics)`` step over ``mesh``.

    The state is replicated and donated (its buffers are reused for the new
    state); the batch is sharded along its first axis.
    """
    rep, data = replicated(mesh), data_sharding(mesh)
    return jax.jit(step, in_shardings=(rep, data), out_shardings=(rep, rep), donate_argnums=0)
