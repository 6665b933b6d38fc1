"""The GPU study and GPU pipeline check, end to end on the CPU at tiny sizes, and the
`gpu-quick` size's shapes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from longctx.eval.scoring import ROW_TOKENS, rows_per_call
from longctx.models import archs
from tests.conftest import REPO, load_script, size_configs, subprocess_env

# Each script's wall-clock bound (CPU time is ~40 s for the study, ~30 s for the check; a
# heavily shared machine may need more: GPU_SCRIPTS_TEST_TIMEOUT, with pytest --timeout).
TIMEOUT = float(os.environ.get("GPU_SCRIPTS_TEST_TIMEOUT", "280"))

# Tiny shapes over the gpu-quick size: the smoke dataset (shared with the other tests), one
# layer, W = 32, 4 steps per model, a 2-conversation evaluation.
TINY_STUDY = ("--tokens-per-step 128 model.n_layer=1 model.n_head=2 model.d_model=32 "
              "model.d_head=16 model.d_inner=64 model.xl.mem_len=32 model.window.window=32 "
              "model.vanilla.ctx_len=32 model.xl.tgt_len=16 model.window.seq_len=64 data.span=32 "
              "data.num_train=40 data.num_validation=10 data.vocab_size=512 data.train_near=0 "
              "train.train_tokens=512 optim.warmup_steps=2 train.log_every=4 "
              "train.host_sync_every=4 checkpoint.every_steps=100 eval.max_conversations=2 "
              "eval.context_lengths=8,16 eval.vanilla_stride=8")


def test_gpu_quick_size_has_the_study_shapes_and_is_fair():
    exp = load_script("dialogue_comparison")
    spec = exp.SIZES["gpu-quick"]
    assert spec.seeds == (0,)
    cfgs = size_configs(exp, spec)
    for cfg in cfgs.values():
        m = cfg.model
        assert (m.d_model, m.n_layer, archs.span(m), m.dtype) == (512, 8, 512, "bfloat16")
        assert cfg.train.train_tokens >= 20_000_000
    # the same tokens per optimiser step, hence the same number of updates
    assert {c.train.batch_size * archs.tokens_per_step(c.model) for c in cfgs.values()} == {8192}
    assert "--no-speed" in spec.evaluate_args


def test_evaluation_calls_stay_within_row_tokens():
    for length in (16, 64, 512, 1024, 2048, 4096, 8192):
        rows = rows_per_call(length)
        assert rows >= 1 and rows * length <= ROW_TOKENS
    assert rows_per_call(64) == 128  # short rows keep their batching


def _bash(script: str, args: list[str], env: dict, timeout: float) -> str:
    """Run experiments/SCRIPT in its own process group (killed whole past the timeout);
    returns its standard output."""
    proc = subprocess.Popen(["bash", str(REPO / "experiments" / script), *args], cwd=REPO,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        raise AssertionError(f"{script} ran past {timeout}s:\n{out[-2000:]}{err[-2000:]}") from None
    assert proc.returncode == 0, out[-3000:] + err[-3000:]
    return out


def test_gpu_study_script_end_to_end_tiny(tmp_path, data_dir):
    env = subprocess_env(PYTHON=sys.executable, GPU_STUDY_ROOT=str(tmp_path / "root"),
                         OUT=str(tmp_path / "out"),
                         GPU_STUDY_ARGS=f"--parallel 2 {TINY_STUDY} data.data_dir={data_dir}")
    stdout = _bash("gpu_study.sh", [], env, timeout=TIMEOUT)
    table = [line for line in stdout.split("== gpu_study")[-1].splitlines()
             if line.startswith("| dialogue_comparison_gpu-quick |")]
    assert [line.split("|")[2].strip() for line in table] == ["xl", "window", "vanilla"]
    assert "timings (s): setup" in stdout
    report = tmp_path / "out" / "gpu_study"
    timings = json.loads((report / "timings.json").read_text())
    assert {"data", "train xl", "train window", "train vanilla", "compare", "total"} <= set(
        timings)
    assert (report / "results" / "results.md").is_file()
    # two models at a time, each run's output in its own log
    logs = sorted(p.name for p in (tmp_path / "root" / "logs").iterdir())
    assert len(logs) == 6 and sum(name.endswith(".evaluate.log") for name in logs) == 3, logs
    evals = sorted(report.glob("runs/*/eval.json"))
    assert len(evals) == 3
    for path in evals:
        ev = json.loads(path.read_text())
        assert "speed" not in ev  # gpu-quick evaluates without the stride-1 speed check
        assert ev["dataset"]["conversations"] == 2


def test_gpu_check_script_end_to_end_tiny(tmp_path, data_dir):
    out = tmp_path / "out"
    env = subprocess_env(PYTHON=sys.executable)
    stdout = _bash("gpu_check.sh", ["--tiny", "--out", str(out), "--work", str(tmp_path / "w"),
                                    "--data-dir", str(data_dir)], env, timeout=TIMEOUT)
    rows = [line.split("|")[1:-1] for line in stdout.splitlines()
            if line.startswith("| ") and not line.startswith("| step")]
    names = [r[0].strip() for r in rows]
    assert names == ["compat", "bench_train", "train", "evaluate", "chat", "bench_generate"]
    assert all(r[1].strip() == "ok" for r in rows), stdout
    summary = json.loads((out / "summary.json").read_text())
    steps = {s["name"]: s for s in summary["steps"]}
    assert steps["compat"]["data"]["max_relative_error"] <= 1e-5
    assert steps["train"]["data"]["tokens_per_s"] > 0
    # the CPU backend reports no device memory statistics: said, not invented
    assert json.loads((out / "train_peak.json").read_text())["peak_bytes"] is None
    assert "peak n/a" in steps["evaluate"]["key"]
    assert "replies" in steps["chat"]["key"]
    assert (out / "logs" / "chat.log").read_text().count("model> ") == 2
    assert Path(out / "summary.md").read_text().startswith("gpu_check on ")
