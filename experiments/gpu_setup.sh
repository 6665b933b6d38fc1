#!/usr/bin/env bash
# Make longctx runnable on a bare GPU machine (no network) from the wheels in .whl/.
#
#   bash experiments/gpu_setup.sh        # or: source it (it then also exports PYTHONPATH)
#
# Installs, without dependencies and from .whl/ only, every distribution of
# experiments/gpu_packages.sh that this Python lacks, into .gpu_site/ (no root, no
# system site-packages touched), then checks that longctx and the modules it needs import.
# Nothing to install (e.g. on the development machine): it only checks. longctx itself is
# used from the checkout (PYTHONPATH), so no build backend is needed.
#
# Env: PYTHON (default python3), WHEEL_DIR (default .whl), GPU_SITE (default .gpu_site).

_gpu_setup() {
    local repo python wheel_dir site missing
    repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
    python="${PYTHON:-python3}"
    wheel_dir="${WHEEL_DIR:-$repo/.whl}"
    site="${GPU_SITE:-$repo/.gpu_site}"
    # shellcheck source=experiments/gpu_packages.sh
    source "$repo/experiments/gpu_packages.sh"
    export PYTHONPATH="$repo:$site${PYTHONPATH:+:$PYTHONPATH}"

    missing="$("$python" - "${GPU_WHEELS[@]}" <<'EOF'
import importlib.metadata as md
import sys

for name in sys.argv[1:]:
    try:
        md.distribution(name)
    except md.PackageNotFoundError:
        print(name)
EOF
)"
    if [[ -n "$missing" ]]; then
        if ! compgen -G "$wheel_dir/*.whl" > /dev/null; then
            echo "gpu_setup.sh: missing $(echo "$missing" | tr '\n' ' ')and no wheels in" \
                 "$wheel_dir; run 'bash experiments/gpu_wheels.sh' on a machine with PyPI" \
                 "access and bring .whl/ along" >&2
            return 1
        fi
        echo "gpu_setup: installing $(echo "$missing" | wc -l) packages from $wheel_dir into $site"
        if "$python" -m pip --version > /dev/null 2>&1; then
            # shellcheck disable=SC2086
            "$python" -m pip install --quiet --disable-pip-version-check --no-index --no-deps \
                --find-links "$wheel_dir" --target "$site" --upgrade $missing
        else  # no pip: a wheel is a zip of what goes into site-packages
            # shellcheck disable=SC2086
            "$python" - "$wheel_dir" "$site" $missing <<'EOF'
import re
import sys
import zipfile
from pathlib import Path

wheels, site, names = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3:]
for name in names:
    key = re.sub(r"[-_.]+", "_", name).lower()
    found = [w for w in wheels.glob("*.whl") if w.name.split("-")[0].lower() == key]
    if not found:
        sys.exit(f"gpu_setup.sh: no wheel for {name} in {wheels}; rerun gpu_wheels.sh")
    with zipfile.ZipFile(found[0]) as z:
        z.extractall(site)
EOF
        fi
    fi
    "$python" - "${GPU_IMPORTS[@]}" <<'EOF'
import importlib
import sys

failed = []
for name in [*sys.argv[1:], "longctx.cli", "longctx.data.dataset", "longctx.train.loop"]:
    try:
        importlib.import_module(name)
    except Exception as exc:  # noqa: BLE001 - report every failure, then stop
        failed.append(f"{name} ({type(exc).__name__}: {exc})")
if failed:
    sys.exit("gpu_setup.sh: cannot import " + "; ".join(failed))
import jax

print(f"gpu_setup: imports ok; jax {jax.__version__}, devices {jax.devices()}")
EOF
}

if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
    set -euo pipefail
    _gpu_setup
else
    _gpu_setup || return 1
fi
