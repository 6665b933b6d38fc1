#!/usr/bin/env bash
# The GPU study end to end on a bare GPU machine (no network): XL vs window vs vanilla at
# d_model 512, 8 layers, W = 512, bfloat16, 20M tokens each, one seed; about 8 minutes of
# one H200 (experiments/dialogue_comparison.py --size gpu-quick).
#
#   bash experiments/gpu_wheels.sh     # first, on a machine with PyPI access (fills .whl/)
#   bash experiments/gpu_study.sh      # on the GPU machine (carry .whl along)
#
# Installs what is missing from .whl/ (experiments/gpu_setup.sh), builds the dataset, trains,
# evaluates and compares, then prints the table and each stage's seconds. Run directories
# (with their large checkpoints) stay under GPU_STUDY_ROOT (default runs/gpu_study); the
# table, plots, eval.json/metrics.jsonl/summary.json of every run, timings and the log are
# copied to $OUT/gpu_study when OUT is set (what the device tool brings back), else
# GPU_STUDY_ROOT/report. A rerun skips finished runs.
#
# Env: GPU_STUDY_SIZE (default gpu-quick), GPU_STUDY_ARGS (extra arguments and overrides for
# dialogue_comparison.py, e.g. tiny shapes for a CPU test), PYTHON (default python3).
# Arguments are passed on to dialogue_comparison.py as well.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
PYTHON="${PYTHON:-python3}"
SIZE="${GPU_STUDY_SIZE:-gpu-quick}"
ROOT="${GPU_STUDY_ROOT:-$REPO/runs/gpu_study}"
if [[ -n "${OUT:-}" ]]; then REPORT="$OUT/gpu_study"; else REPORT="$ROOT/report"; fi
mkdir -p "$REPORT" "$ROOT"

start=$(date +%s)
# shellcheck source=experiments/gpu_setup.sh
source "$REPO/experiments/gpu_setup.sh"
setup_s=$(( $(date +%s) - start ))
export XLA_PYTHON_CLIENT_PREALLOCATE="${XLA_PYTHON_CLIENT_PREALLOCATE:-false}"
export JAX_COMPILATION_CACHE_DIR="${JAX_COMPILATION_CACHE_DIR:-$REPO/.jax_cache}"
export HF_HUB_OFFLINE=1 TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-3}"

# shellcheck disable=SC2086  # GPU_STUDY_ARGS is a list of words
set +e
"$PYTHON" "$REPO/experiments/dialogue_comparison.py" --size "$SIZE" --root "$ROOT" \
    ${GPU_STUDY_ARGS:-} "$@" 2>&1 | tee "$REPORT/gpu_study.log"
status=${PIPESTATUS[0]}
set -e

cp -r "$ROOT/results" "$REPORT/" 2>/dev/null || true
cp "$ROOT/timings.json" "$REPORT/" 2>/dev/null || true
for run in "$ROOT"/*/; do
    name="$(basename "$run")"
    [[ "$name" == results ]] && continue
    mkdir -p "$REPORT/runs/$name"
    for f in eval.json metrics.jsonl summary.json config.json; do
        cp "$run$f" "$REPORT/runs/$name/" 2>/dev/null || true
    done
done
total_s=$(( $(date +%s) - start ))
echo
echo "== gpu_study ($SIZE) on $("$PYTHON" -c 'import jax; d = jax.devices(); print(len(d), "x", d[0].device_kind)')"
if [[ -f "$ROOT/results/results.md" ]]; then cat "$ROOT/results/results.md"; fi
echo
echo "timings (s): setup $setup_s, $("$PYTHON" -c 'import json, sys; print(", ".join(f"{k} {v:.0f}" for k, v in json.load(open(sys.argv[1])).items()))' "$ROOT/timings.json" 2>/dev/null || echo "none (the study did not finish)"); script total $total_s"
echo "report in $REPORT"
if (( status != 0 )); then
    echo "gpu_study.sh: dialogue_comparison.py exited $status (log: $REPORT/gpu_study.log)" >&2
fi
exit "$status"
