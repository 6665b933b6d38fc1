#!/usr/bin/env bash
# The copy-task table at the anchor's model size on one GPU, within a fixed wall-clock budget.
#
#   bash experiments/copy_task_gpu.sh OUT_DIR [TRAIN_SECONDS]
#
# Runs every (task, arch, seed) of the table as its own process, all at once on the one GPU
# (the 4-layer d_model 128 model leaves most of it idle), each training for TRAIN_SECONDS
# (default 420) with the curriculum over the copy length, then evaluating greedily on 512 fresh
# samples. Each run records the steps and tokens it reached (rerun one with --steps N to
# reproduce it). Results: OUT_DIR/*.json, logs OUT_DIR/*.log; the table is printed at the end.
set -uo pipefail
OUT="${1:?usage: copy_task_gpu.sh OUT_DIR [TRAIN_SECONDS]}"
SECONDS_PER_RUN="${2:-420}"
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PYTHON:-python3}"
mkdir -p "$OUT"
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}" XLA_PYTHON_CLIENT_PREALLOCATE=false
"$PYTHON" -c "import jax; print('devices', jax.devices())" | tee "$OUT/devices.log"

JOBS=(  # task arch seed
  "copy120_3 rmt 0" "copy120_3 rmt 1" "copy120_6 rmt 0" "copy120_6 rmt 1"
  "copy120_9 rmt 0" "copy120_9 rmt 1" "copy240_6 rmt 0" "copy240_6 rmt 1"
  "copy120_3 xl 0" "copy120_6 xl 0" "copy120_9 xl 0" "copy240_6 xl 0"
  "copy120_3 none 0" "copy120_6 rmt_sg 0" "copy120_3 xl_grad 0"
)
for job in "${JOBS[@]}"; do
  read -r task arch seed <<< "$job"
  timeout $((SECONDS_PER_RUN + 150)) "$PYTHON" "$REPO/experiments/copy_task.py" \
    --size anchor --tasks "$task" --archs "$arch" --seeds "$seed" --steps 1000000 \
    --deadline "$SECONDS_PER_RUN" --batch 64 --lr 1e-3 --curriculum length --advance 0.9 \
    --stage-steps 400 --n-test 512 --out "$OUT" > "$OUT/${task}_${arch}_s${seed}.log" 2>&1 &
done
wait
"$PYTHON" "$REPO/experiments/copy_task.py" --report --out "$OUT"
