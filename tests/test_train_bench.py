"""The training benchmark's smoke mode runs on jax, flax, optax and numpy alone and writes
its table and JSON."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.conftest import REPO, subprocess_env

# What a bare accelerator machine lacks: importing any of these must not be needed.
BLOCKED = ["orbax", "orbax.checkpoint", "tensorflow_datasets", "transformers", "tokenizers",
           "tensorboardX", "matplotlib"]


def test_bench_train_smoke_needs_only_jax_flax_optax(tmp_path):
    out = tmp_path / "bench.json"
    script = (
        "import sys, runpy\n"
        f"sys.modules.update(dict.fromkeys({BLOCKED!r}))\n"
        f"sys.argv = ['bench_train.py', '--smoke', '--arch', 'xl', '--remat', 'both', '--batch', '2,4',"
        f" '--json', {str(out)!r}]\n"
        f"runpy.run_path({str(REPO / 'experiments' / 'bench_train.py')!r}, run_name='__main__')\n"
    )
    env = subprocess_env()
    env.pop("PYTHONPATH")  # the script finds the checkout itself
    proc = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [line for line in proc.stdout.splitlines() if line.startswith("| xl")]
    assert len(rows) == 4, proc.stdout
    data = json.loads(out.read_text())
    assert data["matmul_flops_per_s"] > 0
    assert [(r["remat"], r["batch"]) for r in data["rows"]] == [
        (False, 2), (False, 4), (True, 2), (True, 4)]
    for row in data["rows"]:
        assert row["tokens_per_s"] > 0 and row["flops_per_s"] > 0 and row["compile_s"] > 0
        assert 0 < row["of_matmul"] < 10
        assert row["tokens_per_step"] == row["batch"] * 16  # smoke: XL segments of W = 16
