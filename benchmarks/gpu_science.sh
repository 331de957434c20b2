#!/usr/bin/env bash
# Issue 12 on one GPU: (a) the pretraining-recipe ablation grid at demo scale (ResNet18
# width 16, 32-64 px, every recipe x 3 seeds, several processes sharing the GPU) and
# (b) the paper's recipe at full scale (ResNet50, 224 px, batch 64, 200 epochs of 832
# synthetic generic images, bf16) probed at 224 px against random init, both with
# benchmarks/ssl_ablation.py. (a) and (b) run at the same time; every output goes under
# $OUT (results.jsonl per part, the markdown tables, logs).
#
#   bash benchmarks/gpu_science.sh            # on the GPU machine (wheels in .whl/ if any)
#   bash benchmarks/gpu_science.sh --tiny     # the same pipeline at tiny sizes, on any CPU
#
# --tiny takes up to GRID_S + PAPER_S seconds of 2 CPU cores (both parts at once; set them
# lower for a smoke run, e.g. GRID_S=300 PAPER_S=300); it is not part of the test suite.
# tests/test_configs.py checks that the paper part's config (the paper preset from random
# init: ssl_ablation.build_config with preset '') passes the pretraining checks.
#
# Environment: PY (python, default python3), OUT (default bench_out), WHEELS (folder of
# wheels to install first, default .whl), GRID_PROCS (processes for the grid, default 10),
# GRID_S / PAPER_S (time limits in seconds of the two parts).
set -u
OUT=${OUT:-bench_out}; mkdir -p "$OUT"
PY=${PY:-python3}
TINY=0; [ "${1:-}" = "--tiny" ] && TINY=1
WHEELS=${WHEELS:-.whl}
if [ "$TINY" = 0 ] && ls "$WHEELS"/*.whl >/dev/null 2>&1; then
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site "$WHEELS"/*.whl && export PYTHONPATH=/tmp/site:${PYTHONPATH:-}
fi
export PYTHONUNBUFFERED=1 XLA_PYTHON_CLIENT_PREALLOCATE=false
# Seeds of a recipe compile the same programs: let later processes reuse them.
export JAX_COMPILATION_CACHE_DIR=${JAX_COMPILATION_CACHE_DIR:-/tmp/fewshot_jax_xla_cache}
export JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS=1
SCRATCH=${SCRATCH:-/tmp/gpu_science}; rm -rf "$SCRATCH"; mkdir -p "$SCRATCH"
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null \
    || echo 'no GPU'; nproc
  $PY -c "import jax, flax, optax; print('jax', jax.__version__, 'flax', flax.__version__, 'optax', optax.__version__, jax.devices())"
  cat SNAPSHOT 2>/dev/null || git log --oneline -1 2>/dev/null
} 2>&1 | tee "$OUT/machine.txt"

GRID_RECIPES=shipped,combo,combo_1000,combo_3000,simclr_combo,indomain,combo_indomain,steps1000,steps3000,small_stem,small_stem_32px,images_2k,images_4k,gray_aug,invert,area02,area008,wide_proj,batch128,wd5e-4,lars,lars_lr5,lr0.03,lr0.3_wu0.1,simclr_shipped,simclr_area02_gray,simclr_combo_t0.5,combo_small_stem_32px
if [ "$TINY" = 1 ]; then
  GRID_PROCS=${GRID_PROCS:-2}; GRID_S=${GRID_S:-900}; PAPER_S=${PAPER_S:-900}
  GRID_ARGS=(--tiny --recipes=shipped,combo_small_stem_32px,indomain --seeds=0 --threads=1)
  PAPER_ARGS=(--tiny --set=model.depth=50 --seeds=0 --threads=1)
else
  GRID_PROCS=${GRID_PROCS:-10}; GRID_S=${GRID_S:-420}; PAPER_S=${PAPER_S:-400}
  GRID_ARGS=(--recipes=$GRID_RECIPES --seeds=0,1,2 --order=seed --threads=1)
  PAPER_ARGS=(--preset= --set=model.dtype=bfloat16 --seeds=0 --threads=4)
fi

# (b) the paper's recipe: Barlow Twins with the original Randcrop, then SimCLR without crop.
( timeout "$PAPER_S" $PY benchmarks/ssl_ablation.py --out="$SCRATCH/paper" \
    --define='paper_barlow:barlow_twins:' --define='paper_simclr:simclr:' \
    --recipes=paper_barlow,paper_simclr "${PAPER_ARGS[@]}" > "$OUT/paper.log" 2>&1
  echo "paper exit $?" >> "$OUT/paper.log" ) &
PAPER_PID=$!

# (a) the grid, GRID_PROCS processes over the (recipe, seed) pairs.
GRID_PIDS=()
for i in $(seq 0 $((GRID_PROCS - 1))); do
  ( timeout "$GRID_S" $PY benchmarks/ssl_ablation.py --out="$SCRATCH/grid" \
      --shard=$i/$GRID_PROCS "${GRID_ARGS[@]}" > "$SCRATCH/grid_$i.log" 2>&1
    echo "grid shard $i exit $?" >> "$SCRATCH/grid_$i.log" ) &
  GRID_PIDS+=($!)
done
wait "${GRID_PIDS[@]}" "$PAPER_PID"

for part in grid paper; do
  cp "$SCRATCH/$part/results.jsonl" "$OUT/${part}_results.jsonl" 2>/dev/null
  $PY benchmarks/ssl_ablation.py --report --out="$SCRATCH/$part" > "$OUT/${part}_table.md" 2>&1
done
# Shard logs: the progress lines and any traceback, in one file.
for f in "$SCRATCH"/grid_*.log; do echo "== $f"; grep -v '^[IW][0-9]' "$f" | tail -40; done \
  > "$OUT/grid.log"
cat "$OUT/grid_table.md" "$OUT/paper_table.md"
grep -h 'exit' "$OUT/paper.log" "$SCRATCH"/grid_*.log
