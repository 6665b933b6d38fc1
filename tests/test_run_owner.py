"""One owner per run directory: a second writer is refused naming the holder, a killed
holder leaves no stale lock, readers tolerate steps rotated away while they read, and a
sweep refuses a grid it could not run completely before any cell starts."""

import io
import os
import shutil
import signal
import subprocess
import sys

import pytest

from longctx.cli import main
from longctx.errors import UserError
from longctx.rundir import load_run, readable
from longctx.rundir.lock import LOCK, RunBusy, RunLock
from longctx.train.loop import train
from longctx.train.sweep import parse_grid, run_sweep
from tests.conftest import FIXTURES, REPO, SMOKE, run_main, smoke_config, subprocess_env


def _one_error_line(capfd) -> str:
    lines = [ln for ln in capfd.readouterr().err.splitlines() if ln.strip()]
    assert len(lines) == 1, lines
    return lines[0]


def test_a_second_writer_is_refused_naming_the_holder(data_dir, tmp_path, capfd):
    workdir = tmp_path / "run"
    with RunLock(workdir, "train"):
        with pytest.raises(RunBusy, match=rf"in use by another longctx process \(pid "
                                          rf"{os.getpid()}, longctx train\)"):
            train(smoke_config(data_dir), workdir)
        # the command line: one line, exit 2, nothing written into the run
        capfd.readouterr()
        assert main(["train", "--config", str(SMOKE), "--workdir", str(workdir),
                     f"data.data_dir={data_dir}"]) == 2
        line = _one_error_line(capfd)
        assert line.startswith(f"longctx train: error: --workdir {workdir} is in use") and \
            f"pid {os.getpid()}" in line, line
        assert sorted(p.name for p in workdir.iterdir()) == [LOCK]


def test_evaluate_chat_save_and_import_txl_take_the_lock(tiny_run, tmp_path, capfd,
                                                         monkeypatch):
    run_dir = tmp_path / "run"
    shutil.copytree(tiny_run, run_dir)
    with RunLock(run_dir, "train"):
        capfd.readouterr()
        assert main(["evaluate", "--workdir", str(run_dir), "--no-speed"]) == 2
        line = _one_error_line(capfd)
        assert "in use by another longctx process" in line and "--out outside" in line, line
        assert not (run_dir / "eval.json").exists()

        monkeypatch.setattr(sys, "stdin", io.StringIO("/save mine\n/stats\n"))
        out = run_main(["chat", "--workdir", str(run_dir)], capfd, code=1)
        errors = [ln for ln in out.err.splitlines() if ln.strip()]
        assert len(errors) == 1 and f"pid {os.getpid()}" in errors[0], errors
        assert "span in use" in out.out  # /stats ran after it: the chat went on
        assert not (run_dir / "chats" / "mine").exists()

    imported = tmp_path / "imported"
    with RunLock(imported, "train"):
        assert main(["import-txl", str(FIXTURES / "reference_postln.npz"), "--workdir",
                     str(imported)]) == 2
        assert "in use by another longctx process" in _one_error_line(capfd)
        assert sorted(p.name for p in imported.iterdir()) == [LOCK]
    assert not imported.exists(), "a refused command leaves no empty run directory behind"


def test_a_killed_holder_leaves_no_stale_lock(tmp_path):
    workdir = tmp_path / "run"
    code = ("import sys; from longctx.rundir.lock import RunLock; "
            f"RunLock({str(workdir)!r}, 'train').acquire(); print('held', flush=True); "
            "sys.stdin.read()")
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=REPO, env=subprocess_env(),
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "held"
        with pytest.raises(RunBusy, match=rf"pid {proc.pid}, longctx train"):
            RunLock(workdir, "evaluate").acquire()
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
    finally:
        proc.kill()
    with RunLock(workdir, "train") as lock:  # the kernel dropped the dead holder's lock
        assert (workdir / LOCK).read_text().split() == [str(os.getpid()), "train"]
        assert lock.workdir == workdir


def test_a_reader_follows_a_rotation_that_removes_the_step_it_reads(tiny_run, tmp_path,
                                                                     monkeypatch, caplog):
    """keep=1 training: the reader lists step 8, the trainer saves 12 and deletes 8 while
    the reader opens 8; the reader lists again and loads 12, warning about nothing."""
    run_dir = tmp_path / "run"
    shutil.copytree(tiny_run, run_dir)
    ckpt = run_dir / "checkpoints"
    shutil.rmtree(ckpt / "4")
    newer = tmp_path / "12"
    shutil.move(ckpt / "12", newer)
    real_read_step = readable.read_step
    rotated = []

    def read_during_rotation(step_dir):
        if step_dir.name == "8" and not rotated:
            shutil.move(newer, ckpt / "12")  # the trainer's next save lands...
            shutil.rmtree(step_dir)  # ...and keep=1 removes the step being read
            rotated.append(True)
        return real_read_step(step_dir)

    monkeypatch.setattr(readable, "read_step", read_during_rotation)
    run = load_run(run_dir)
    assert rotated and run.step == 12
    assert not [r for r in caplog.records if "unreadable" in r.getMessage()]


def test_sweep_grid_refusals(tmp_path):
    for items, words in [
        (["train.seed=0,,1"], "an empty value"),
        (["train.seed="], "expected key=v1,v2"),
        (["train.seed=0,1,0"], "0 given twice"),
        (["train.seed=0", "train.seed=1"], "--grid train.seed: given twice"),
    ]:
        with pytest.raises(UserError, match=words):
            parse_grid(items)
    assert parse_grid(["model.arch=xl, window", "train.seed=0"]) == {
        "model.arch": ["xl", "window"], "train.seed": ["0"]}

    # run names join 'key-value' with '_': these two cells would both be
    # name-p_data_dir-q_data_dir-r, so two trainings would share one workdir
    with pytest.raises(UserError, match=r"sweep cells name=p_data_dir-q data\.data_dir=r and "
                                        r"name=p data\.data_dir=q_data_dir-r would share"):
        run_sweep(str(SMOKE), tmp_path / "grid", parse_grid(
            ["name=p_data_dir-q,p", "data.data_dir=r,q_data_dir-r"]), [])
    with pytest.raises(UserError, match="is not one folder"):
        run_sweep(str(SMOKE), tmp_path / "grid", parse_grid(["data.data_dir=a/b"]), [])
    assert not (tmp_path / "grid").exists()


def test_sweep_checks_every_cell_memory_before_the_first_starts(data_dir, tmp_path):
    """The second cell fits every config rule but not in memory: refused up front."""
    root = tmp_path / "grid"
    huge = "model.d_inner=64,2000000000"
    with pytest.raises(UserError, match=r"sweep cell model\.d_inner=2000000000 .*memory.*"
                                        r"nothing was started"):
        run_sweep(str(SMOKE), root, parse_grid([huge]), [f"data.data_dir={data_dir}"])
    assert not root.exists()


def test_readers_load_a_run_while_its_training_rotates_every_step(data_dir, tmp_path, capfd):
    """A real trainer saving every step and keeping one: every load while it runs succeeds
    (some steps are deleted under the reader), with no warning and no traceback."""
    import time

    workdir = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "longctx.cli", "train", "--config",
                             str(SMOKE), "--workdir", str(workdir), f"data.data_dir={data_dir}",
                             "train.num_steps=20", "checkpoint.every_steps=1",
                             "checkpoint.keep=1", "train.host_sync_every=1"],
                            cwd=REPO, env=subprocess_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    loaded, failures = [], []
    try:
        deadline = time.time() + 240
        while proc.poll() is None and time.time() < deadline:
            if (workdir / "checkpoints").is_dir() and any(
                    p.name.isdigit() for p in (workdir / "checkpoints").iterdir()):
                try:
                    loaded.append(load_run(workdir).step)
                except Exception as exc:  # noqa: BLE001 (listed in the failure below)
                    failures.append(f"{type(exc).__name__}: {exc}")
        _out, err = proc.communicate(timeout=240)
    finally:
        proc.kill()
    assert proc.returncode == 0, err[-3000:]
    assert failures == [], failures[:3]
    assert loaded and loaded == sorted(loaded), loaded
    captured = capfd.readouterr()
    assert "Traceback" not in captured.err and "unreadable" not in captured.err, captured.err[-3000:]
