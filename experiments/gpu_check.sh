#!/usr/bin/env bash
# The whole pipeline on a bare GPU machine, in at most ~8 minutes of one H200, one summary table.
#
#   bash experiments/gpu_wheels.sh              # first, on a machine with PyPI access (.whl/)
#   bash experiments/gpu_check.sh               # on the GPU machine (carry .whl along)
#   bash experiments/gpu_check.sh --tiny        # the same steps at tiny sizes (CPU, a minute)
#
# Installs what is missing from .whl/ (experiments/gpu_setup.sh), then runs
# experiments/gpu_check.py: compat at full float32 precision, bench_train, a short train,
# evaluate, a scripted chat and bench_generate. Summary, logs and JSON go to $OUT/gpu_check
# when OUT is set (the device tool brings $OUT back), else runs/gpu_check. Device memory is
# allocated on demand (XLA_PYTHON_CLIENT_PREALLOCATE=false) so each step's peak is its own
# and no process starves another; override by setting the variable.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
# shellcheck source=experiments/gpu_setup.sh
source "$REPO/experiments/gpu_setup.sh"
export XLA_PYTHON_CLIENT_PREALLOCATE="${XLA_PYTHON_CLIENT_PREALLOCATE:-false}"
export JAX_COMPILATION_CACHE_DIR="${JAX_COMPILATION_CACHE_DIR:-$REPO/.jax_cache}"
export HF_HUB_OFFLINE=1 TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-3}"
exec "${PYTHON:-python3}" "$REPO/experiments/gpu_check.py" "$@"
