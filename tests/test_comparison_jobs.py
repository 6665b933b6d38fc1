"""experiments/dialogue_comparison.py's scheduler: models trained and evaluated two at a
time, a derived model after its source, a failed model reported without stopping the others,
Ctrl-C stopping the running models and starting no other."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

from longctx.train import presets
from tests.conftest import REPO, load_script, subprocess_env
from tests.test_gpu_scripts import TINY_STUDY

TINY = TINY_STUDY.split()[2:]  # the overrides, without --tokens-per-step


def test_derived_model_waits_for_its_source_and_a_failure_stays_local(tmp_path, data_dir):
    exp = load_script("dialogue_comparison")
    # a store of 256 rows holds these 32-token conversations whole (2048 only costs time)
    common = [*TINY, f"data.data_dir={data_dir}", "eval.context_lengths=8",
              "model.xl_retrieval.store_len=256"]
    xl = exp.Job("xl", "0", [*common, *exp.batch_overrides("xl", 128, common)])
    retrieval = exp.Job("xl_retrieval", "0",
                        [*common, *exp.batch_overrides("xl_retrieval", 128, common)],
                        derived=presets.Derived("xl_retrieval", "xl"))
    broken = exp.Job("window", "0", [*common, "train.batch_size=2", "model.window.window=-4"])
    # sources first; a derived model `parallel` places after its source, so it never
    # holds a worker while its source waits in the queue
    assert [j.arch for j in exp._order([retrieval, xl, broken], 2)] == [
        "xl", "window", "xl_retrieval"]
    assert [j.arch for j in exp._order([retrieval, xl, broken], 1)] == [
        "xl", "xl_retrieval", "window"]
    timings: dict[str, float] = {}
    # the derived job first in the list: the scheduler still starts sources first
    failed = exp._run_jobs([retrieval, xl, broken], tmp_path, presets.COMPARISON["gpu-quick"],
                           2, timings)
    assert failed == [broken]
    ev = json.loads((retrieval.run.workdir / "eval.json").read_text())
    assert ev["run"]["arch"] == "xl_retrieval" and ev["run"]["step"] == 0
    assert ev["run"]["init_from"]["path"] == str(xl.run.workdir.absolute())
    assert (xl.run.workdir / "eval.json").is_file()
    assert {"train xl", "train xl_retrieval", f"evaluate {xl.run.workdir.name}"} <= set(timings)
    assert sorted(p.name for p in (tmp_path / "logs").iterdir()) == [
        "seed-0_arch-xl.evaluate.log", "seed-0_arch-xl.train.log",
        "seed-0_arch-xl_retrieval.evaluate.log", "seed-0_arch-xl_retrieval.train.log"]


def test_ctrl_c_stops_the_running_models_and_starts_no_other(tmp_path, data_dir):
    """Ctrl-C (SIGINT to the process group, as a terminal sends it) while two models train:
    both save and stop, the third never starts, the script exits 130 saying how to resume."""
    root = tmp_path / "root"
    cmd = [sys.executable, str(REPO / "experiments" / "dialogue_comparison.py"), "--size",
           "gpu-quick", "--root", str(root), "--parallel", "2", *TINY_STUDY.split(),
           f"data.data_dir={data_dir}", "train.train_tokens=200000", "train.log_every=1"]
    env = subprocess_env()
    env.pop("TRANSFORMERS_VERBOSITY", None)  # as a user's shell has it: the script quiets
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        logs = [root / "logs" / f"seed-0_arch-{a}.train.log" for a in ("xl", "window")]
        deadline = time.monotonic() + 200
        while not all(p.is_file() and "step " in p.read_text() for p in logs):
            assert proc.poll() is None and time.monotonic() < deadline, "no training started"
            time.sleep(0.2)
        os.killpg(proc.pid, signal.SIGINT)
        out, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 130, out[-3000:]
    assert "interrupted: finished runs are kept" in out and "Traceback" not in out, out[-3000:]
    assert "[transformers]" not in out, out[:3000]  # no library notes before its own lines
    assert not (root / "seed-0_arch-vanilla").exists()
    for log in logs:
        assert "SIGINT: saved step" in log.read_text() or "SIGINT: stopped" in log.read_text()
