"""Signals: SIGINT behaves like SIGTERM in training (the finished step is saved, clean
exit, no traceback); Ctrl-C in a data build leaves nothing half-written; the temporary
folder of a killed build is removed by the next build."""

import fcntl
import json
import os
import signal
import subprocess
import sys
import time

from longctx import log
from longctx.data.dataset import clean_stale_builds, prepare_dataset
from longctx.train.interrupts import FAULT_ENV
from longctx.train.loop import train
from tests.conftest import REPO, SMOKE, run_main, smoke_config, subprocess_env


def _wait_for(proc, found, what, timeout=240):
    """Poll (bounded) until `found()` is true while the child still runs."""
    deadline = time.time() + timeout
    while not found():
        assert proc.poll() is None, f"the child exited ({proc.returncode}) before {what}"
        assert time.time() < deadline, f"no {what} within {timeout}s"
        time.sleep(0.01)


# The child turns Ctrl-C into KeyboardInterrupt itself: a test run started as a background
# job (`cmd &` in a script) ignores SIGINT, a child inherits that, and Python then installs
# no KeyboardInterrupt handler of its own.
_CLI = ("import runpy, signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
        "sys.argv[0] = 'longctx'; runpy.run_module('longctx.cli', run_name='__main__')")


def _start(args, env=None):
    return subprocess.Popen([sys.executable, "-c", _CLI, *args], cwd=REPO,
                            env=env or subprocess_env(1), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def test_sigint_saves_the_finished_step_and_resumes_exactly(data_dir, tmp_path, tiny_run,
                                                            monkeypatch, capsys):
    log.configure()  # as the longctx command does: the loop's progress lines on stdout
    cfg = smoke_config(data_dir, "model.arch=xl")  # as `tiny_run` was trained
    monkeypatch.setenv(FAULT_ENV, "int:5")  # SIGINT (Ctrl-C) to this process after step 5
    summary = train(cfg, tmp_path / "run")
    assert "SIGINT: saved step 5" in capsys.readouterr().out
    assert summary["step"] == 5 and not summary["done"]
    assert (tmp_path / "run" / "checkpoints" / "5").is_dir()
    monkeypatch.delenv(FAULT_ENV)
    resumed = train(smoke_config(data_dir, "model.arch=xl"), tmp_path / "run")
    tiny = json.loads((tiny_run / "summary.json").read_text())
    assert resumed["params_sha256"] == tiny["params_sha256"]


def test_ctrl_c_at_start_up_exits_cleanly(data_dir, tmp_path):
    workdir = tmp_path / "run"
    proc = _start(["train", "--config", str(SMOKE), "--workdir", str(workdir),
                   f"data.data_dir={data_dir}", "train.num_steps=12", "checkpoint.every_steps=4",
                   "train.log_every=1"])
    try:  # metrics.jsonl is opened just before the first step compiles
        _wait_for(proc, (workdir / "metrics.jsonl").exists, "metrics.jsonl")
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=240)
    finally:
        proc.kill()
    assert proc.returncode == 0, err[-3000:]
    assert "Traceback" not in err, err[-3000:]
    line = next((ln for ln in out.splitlines() if ln.startswith("SIGINT: ")), None)
    assert line is not None, out[-3000:]
    if "saved step" in line:  # the signal came after a step finished: that step is saved
        step = int(line.split("saved step ")[1].split(";")[0])
        assert (workdir / "checkpoints" / str(step)).is_dir()


def test_ctrl_c_in_a_data_build_keeps_nothing_and_stale_builds_are_cleaned(tmp_path):
    data = tmp_path / "data"
    args = ["data", "build", "synthetic", f"data.data_dir={data}", "data.num_train=200",
            "data.vocab_size=512"]
    proc = _start(args)
    try:
        _wait_for(proc, lambda: data.is_dir() and any(data.glob(".*.tmp")), "temporary folder")
        proc.send_signal(signal.SIGINT)
        _out, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 130, err[-3000:]
    assert [ln for ln in err.splitlines() if ln.strip()] == ["longctx data: interrupted"]
    assert list(data.iterdir()) == [], "no dataset and no temporary folder is left"

    # what a SIGKILLed build leaves, and a build in progress (it holds the folder's lock)
    dead = data / ".synthetic-1.0.0-n9-9-w9-v512-s0.k1ll3d.tmp"
    (dead / "tokenizer").mkdir(parents=True)
    live = data / ".synthetic-1.0.0-n9-9-w9-v512-s0.l1v3.tmp"
    live.mkdir()
    fd = os.open(live, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        from longctx.config import DataConfig

        ds = prepare_dataset(DataConfig(data_dir=str(data), num_train=20, num_validation=5,
                                        vocab_size=512, span=32))
        assert (ds.root / "dataset.json").is_file()
        assert not dead.exists() and live.is_dir()
        assert clean_stale_builds(data) == []
    finally:
        os.close(fd)
    assert clean_stale_builds(data) == [live]


def test_a_second_ctrl_c_while_stopping_is_ignored_and_loses_nothing(data_dir, tmp_path,
                                                                     tiny_run, capsys):
    """Ctrl-C after step 5 and again 50 ms later (while step 5 is being saved): one clean
    stop, no traceback from the loop or orbax's saving threads, and an exact resume."""
    workdir = tmp_path / "run"
    args = ["train", "--config", str(SMOKE), "--workdir", str(workdir),
            f"data.data_dir={data_dir}", "model.arch=xl"]  # as `tiny_run` was trained
    proc = _start(args, env=subprocess_env(1, **{FAULT_ENV: "intint:5"}))
    try:
        out, err = proc.communicate(timeout=240)
    finally:
        proc.kill()
    assert proc.returncode == 0, err[-3000:]
    assert "Traceback" not in err and "Exception ignored" not in err, err[-3000:]
    assert set(ln for ln in err.splitlines() if ln.strip()) <= {
        "longctx: already stopping after the current step (saving it); further signals are "
        "ignored, SIGKILL stops at once"}, err[-3000:]
    assert "SIGINT: saved step 5; rerun the same command to resume" in out
    assert (workdir / "checkpoints" / "5").is_dir()
    out = run_main(args, capsys).out  # the rerun, in this process
    resumed = json.loads(out.strip().splitlines()[-1])
    assert resumed["params_sha256"] == json.loads(
        (tiny_run / "summary.json").read_text())["params_sha256"]


def test_a_second_ctrl_c_in_a_data_build_still_removes_everything(tmp_path):
    data = tmp_path / "data"
    proc = _start(["data", "build", "synthetic", f"data.data_dir={data}",
                   "data.num_train=200", "data.vocab_size=512"])
    try:
        _wait_for(proc, lambda: data.is_dir() and any(data.glob(".*.tmp")), "temporary folder")
        proc.send_signal(signal.SIGINT)
        time.sleep(0.05)  # the gap of an impatient second Ctrl-C (not a wait for a state)
        proc.send_signal(signal.SIGINT)
        _out, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 130, err[-3000:]
    assert [ln for ln in err.splitlines() if ln.strip()] == ["longctx data: interrupted"]
    assert list(data.iterdir()) == []
