#!/usr/bin/env bash
# The benchmark script run on a lent GPU machine (see RESULTS.md). Its image has
# jax/flax/optax/orbax; the wheels in .whl/ (grain, dm-pix, ml-collections, …) are
# carried along. Outputs go to $OUT (or ./bench_out).
set -u
OUT=${OUT:-bench_out}; mkdir -p "$OUT"
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site:${PYTHONPATH:-}
fi
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
python3 -c "import jax, flax, optax; print('jax', jax.__version__, 'flax', flax.__version__, 'optax', optax.__version__, jax.devices())" | tee -a "$OUT/gpu.txt"
# Sanity: a tiny model first, so a failure costs seconds.
timeout 120 python3 benchmarks/pretrain_step.py --depth=18 --width=16 --image_size=64 --batch=16 --steps=3 2>&1 | grep -v '^[IW]1' | tee "$OUT/tiny.txt"
timeout 400 python3 benchmarks/pretrain_step.py --depth=50 --image_size=224 --batch=256 --steps=20 \
  --loss=barlow_twins --dtype=bfloat16,float32 2>&1 | grep -v '^[IW]1' | tee "$OUT/resnet50.txt"
timeout 150 python3 benchmarks/pretrain_step.py --depth=50 --image_size=224 --batch=256 --steps=20 \
  --loss=simclr --dtype=bfloat16 2>&1 | grep -v '^[IW]1' | tee -a "$OUT/resnet50.txt"
step=$(python3 -c "import json,sys; r=[json.loads(l) for l in open('$OUT/resnet50.txt') if l.startswith('{')]; print(max(x['pairs_per_s'] for x in r))" 2>/dev/null || echo 0)
timeout 120 python3 benchmarks/input_pipeline.py --threads=16 --batch=64 --image_size=224 \
  --step_pairs_per_s="$step" 2>&1 | grep -v '^[IW]1' | tee "$OUT/input.txt"
