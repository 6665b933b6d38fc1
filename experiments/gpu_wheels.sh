#!/usr/bin/env bash
# Fill .whl/ with the wheels a bare GPU machine (Python 3.12, x86_64 Linux, no network) lacks.
#
#   bash experiments/gpu_wheels.sh            # here, on a machine with PyPI access
#   then carry `.whl` with the device tool; experiments/gpu_setup.sh installs from it there.
#
# The GPU machine already has jax, flax, optax, orbax-checkpoint, transformers and tokenizers
# (and what they depend on: absl-py, etils, protobuf, psutil, msgpack, PyYAML, tqdm, ...).
# What longctx imports beyond those (tensorflow-datasets and its imports, tensorboardX,
# matplotlib for compare's plots) and their dependencies come from here, at the versions of
# requirements-lock.txt, without their own dependencies (the list is the closure). pyarrow (a tensorflow-datasets requirement,
# ~40 MiB, never imported by longctx) is left out to keep .whl/ under the device tool's
# 64 MiB carry limit. promise has only a source release: it is built into a wheel here.
#
# Env: PYTHON (default python3; its pip does the downloading), WHEEL_DIR (default .whl).
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PYTHON:-python3}"
WHEEL_DIR="${WHEEL_DIR:-$REPO/.whl}"
LOCK="$REPO/requirements-lock.txt"

# shellcheck source=experiments/gpu_packages.sh
source "$REPO/experiments/gpu_packages.sh"

pin() {  # the requirements-lock.txt line of a package (name compared case/-/_ insensitively)
    local want line name
    want="$(echo "$1" | tr 'A-Z_.' 'a-z--')"
    while IFS= read -r line; do
        name="$(echo "${line%%==*}" | tr 'A-Z_.' 'a-z--')"
        if [[ "$name" == "$want" ]]; then echo "$line"; return 0; fi
    done < "$LOCK"
    echo "gpu_wheels.sh: $1 is not pinned in $LOCK; add it there or drop it from GPU_WHEELS" >&2
    return 1
}

mkdir -p "$WHEEL_DIR"
pins=()
for pkg in "${GPU_WHEELS[@]}"; do
    [[ "$pkg" == promise ]] && continue
    pins+=("$(pin "$pkg")")
done
echo "downloading ${#pins[@]} wheels (cp312, manylinux x86_64) into $WHEEL_DIR"
"$PYTHON" -m pip download --quiet --disable-pip-version-check --no-deps --only-binary=:all: \
    --python-version 3.12 --implementation cp --abi cp312 --abi abi3 --abi none \
    --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux_2_24_x86_64 --platform manylinux_2_27_x86_64 \
    --platform manylinux_2_28_x86_64 --platform any \
    --dest "$WHEEL_DIR" "${pins[@]}"
echo "building $(pin promise) (source only on the index)"
"$PYTHON" -m pip wheel --quiet --disable-pip-version-check --no-deps --wheel-dir "$WHEEL_DIR" \
    "$(pin promise)"

count="$(find "$WHEEL_DIR" -maxdepth 1 -name '*.whl' | wc -l)"
size="$(du -sm "$WHEEL_DIR" | cut -f1)"
echo "$WHEEL_DIR: $count wheels, ${size} MiB"
if (( size > 60 )); then
    echo "gpu_wheels.sh: $WHEEL_DIR is ${size} MiB, over the 60 MiB budget (device tool carries" \
         "64 MiB); remove stale wheels (rm -r $WHEEL_DIR) and rerun" >&2
    exit 1
fi
