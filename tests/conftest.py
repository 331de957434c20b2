"""Test setup: 8 fake CPU devices (before jax is imported) and tiny configs."""

import os
import signal
import tempfile

os.environ.setdefault('XLA_FLAGS', '--xla_force_host_platform_device_count=8')
# Eigen rather than YNNPACK convolutions on XLA:CPU (faster backward pass; see xla_setup).
from fewshot_jax.train_lib.xla_setup import prefer_eigen_convolutions_on_cpu  # noqa: E402

prefer_eigen_convolutions_on_cpu()
os.environ.setdefault('JAX_PLATFORMS', 'cpu')
# Many tests compile the same tiny model; a persistent compilation cache lets
# later tests and the other xdist worker reuse those executables.
os.environ.setdefault(
    'JAX_COMPILATION_CACHE_DIR', os.path.join(tempfile.gettempdir(), 'fewshot_jax_test_xla_cache')
)
os.environ.setdefault('JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS', '0.5')

import pytest  # noqa: E402


def tiny_ssl_config(method: str = 'barlow_twins', **overrides):
    """The ``:tiny`` preset of the pretraining configs, with dotted-name overrides."""
    from configs.ssl_base import ssl_config

    c = ssl_config(method, 'tem', 'tiny')
    for dotted, value in overrides.items():
        node = c
        *parents, leaf = dotted.split('.')
        for p in parents:
            node = node[p]
        node[leaf] = value
    return c


def restore_saved_encoder(workdir, target):
    """Reads ``workdir/encoder/variables`` with plain orbax into ``target``'s shapes (a check
    independent of the project's readers)."""
    import jax
    import orbax.checkpoint as ocp

    from fewshot_jax.train_lib import checkpoint

    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, target)
    return ocp.StandardCheckpointer().restore(checkpoint.encoder_variables_path(workdir), abstract)


@pytest.fixture
def default_sigint():
    """Python's default Ctrl-C handler for one test. A suite started in the background by a
    non-interactive shell inherits SIGINT ignored, so a Ctrl-C would neither raise here nor in a
    child started from here (a Python handler is not inherited through exec: the child starts
    with the default). The handler found is restored afterwards."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


@pytest.fixture
def tiny_config():
    return tiny_ssl_config
