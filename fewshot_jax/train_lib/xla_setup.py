"""XLA settings the project applies before JAX starts its backends.

This module imports only ``os``: it must run before ``import jax`` (XLA reads
``XLA_FLAGS`` once, when the first backend initialises), so it sits at the
bottom of the layering and may be imported by launch.py, the benchmarks and
tests/conftest.py ahead of everything else.

Why Eigen convolutions on the CPU: by default XLA:CPU (jaxlib 0.10) hands every
convolution to YNNPACK, whose weight-gradient convolutions are slow. Sending
individual convolutions to Eigen instead measured 0.68-0.75x the Barlow Twins
step time of our ResNet50 on this project's 2-core AVX-512 CPU (466-511 ms
instead of 610-680 ms at 96 px, batch 8 pairs; see benchmarks/RESULTS.md and
benchmarks/step_vs_torch.py), with the same gradient error against a float64
reference (tests/test_xla_setup.py).

Why it is harmless on a GPU: the flag changes only how XLA:CPU emits
convolutions. It is a field of XLA's shared ``DebugOptions``, so every backend
built from the same XLA (jaxlib's CPU client and the CUDA plugin that must match
its version) knows the name; XLA aborts on *unknown* names in ``XLA_FLAGS``,
which is why the test suite runs a JAX program with the flag set.
"""

from __future__ import annotations

import os
from typing import MutableMapping

YNN_FUSION_FLAG_NAME = 'xla_cpu_experimental_ynn_fusion_type'
# Set to 1 to keep XLA's own convolution choice (e.g. to measure what the flag buys).
OPT_OUT_VARIABLE = 'FEWSHOT_JAX_XLA_DEFAULTS'
# '-individual_convolution' removes single convolutions from YNNPACK's fusion
# types, so XLA:CPU runs them with its Eigen kernels.
EIGEN_CONVOLUTIONS_FLAG = f'--{YNN_FUSION_FLAG_NAME}=-individual_convolution'


def prefer_eigen_convolutions_on_cpu(environ: MutableMapping[str, str] = os.environ) -> bool:
    """Appends the Eigen-convolution flag to ``XLA_FLAGS`` unless the user set that option.

    Call it before ``jax`` is imported (XLA parses ``XLA_FLAGS`` once, when the
    first backend starts). The user's flags are kept as they are: when they
    already mention ``xla_cpu_experimental_ynn_fusion_type`` (with any value),
    nothing changes, so a user can always choose YNNPACK back with
    ``XLA_FLAGS=--xla_cpu_experimental_ynn_fusion_type=<their value>``, or keep
    XLA's defaults with ``FEWSHOT_JAX_XLA_DEFAULTS=1``.
    Calling it twice changes nothing the second time.

    Args:
        environ: the environment to edit; ``os.environ`` by default (a plain
            dict in tests).

    Returns:
        True if the flag was appended, False if ``XLA_FLAGS`` already named the option
        or ``FEWSHOT_JAX_XLA_DEFAULTS`` is 1.
    """
    current = environ.get('XLA_FLAGS', '')
    if YNN_FUSION_FLAG_NAME in current or environ.get(OPT_OUT_VARIABLE) == '1':
        return False
    environ['XLA_FLAGS'] = f'{current} {EIGEN_CONVOLUTIONS_FLAG}'.strip()
    return True
