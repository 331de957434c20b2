"""Loads a script of benchmarks/ as a module (the folder is not a package)."""

import importlib.util
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parents[2] / 'benchmarks'


def load_benchmark(name: str):
    """benchmarks/<name>.py as a module; the script finds its siblings itself."""
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f'{name}.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
