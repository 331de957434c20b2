# Each target sets itself up: the venv is (re)built only when pyproject.toml changes.
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export XLA_PYTHON_CLIENT_PREALLOCATE ?= false

.PHONY: setup demo demo-full test bench lint clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev,tem]'
	touch $(STAMP)

setup: $(STAMP)

# The 10-minute first contact: the whole study, small, with every control and the gap table
# (the probe bar, not the Dice bar).
demo: $(STAMP)
	$(BIN)/python launch.py --config=configs/workflow.py:demo --workdir=runs/demo

# The smallest whole study that reaches both bars on 2 CPU cores (~20 min; benchmarks/RESULTS.md).
demo-full: $(STAMP)
	$(BIN)/python launch.py --config=configs/workflow.py:demo-full --workdir=runs/demo-full

test: $(STAMP)
	$(BIN)/python -m pytest -n 2 -q tests

bench: $(STAMP)
	$(BIN)/python benchmarks/pretrain_step.py --depth=18 --width=16 --image_size=64 --batch=16 --steps=5

lint: $(STAMP)
	$(BIN)/ruff check fewshot_jax tests configs benchmarks launch.py notebooks
	$(BIN)/ruff format --check .

clean:
	rm -rf $(VENV) runs
