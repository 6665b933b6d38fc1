"""The machine's limits as one line: a full disk during a save or at start-up, a read-only
run, too many open files, and paths that cannot be used. Each ends with one line naming
the path and a non-zero exit, leaves nothing half-written, and keeps the last checkpoint,
which resumes exactly once the limit is lifted.

A full or read-only disk is a small tmpfs the test mounts (the tests run as root on the
project's machines); where mounting is not permitted, a file-size limit (RLIMIT_FSIZE,
which fails writes with EFBIG) or a folder without write permission stands in for it.
"""

import contextlib
import io
import json
import os
import resource
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from longctx.cli import main
from longctx.errors import UserError
from longctx.fsguard import check_dir_arg
from longctx.rundir.lock import RunLock
from longctx.train import limits
from longctx.train.loop import train
from tests.conftest import FIXTURES, REPO, SMOKE, run_main, smoke_config, subprocess_env

_FULL = ("no space left on the device", "file too large")


def _mount(path: Path, options: str) -> bool:
    """Mount a tmpfs at `path` (True) or say it is not permitted here (False)."""
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        return False
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)],
                          capture_output=True, timeout=30)
    return proc.returncode == 0


@contextlib.contextmanager
def _tmpfs(path: Path, size_kib: int):
    """A tmpfs of `size_kib` at `path` (yields True), or no mount (yields False)."""
    mounted = _mount(path, f"size={size_kib}k")
    try:
        yield mounted
    finally:
        if mounted:
            subprocess.run(["umount", "-l", str(path)], capture_output=True, timeout=30)


def _remount(path: Path, options: str) -> None:
    subprocess.run(["mount", "-o", f"remount,{options}", str(path)], check=True, timeout=30)


# `longctx ARGS` under a file-size limit (argv[1]): writes past it fail with EFBIG (SIGXFSZ
# ignored, so the process is not killed); the limit is set in the child itself (no fork hook).
_LIMITED_CLI = ("import resource, runpy, signal, sys; limit = int(sys.argv.pop(1)); "
                "signal.signal(signal.SIGXFSZ, signal.SIG_IGN); "
                "resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit)); "
                "sys.argv[0] = 'longctx'; runpy.run_module('longctx.cli', run_name='__main__')")


def _cli(args, limit=None, timeout=240, stdin=None):
    prefix = ["-m", "longctx.cli"] if limit is None else ["-c", _LIMITED_CLI, str(limit)]
    return subprocess.run([sys.executable, *prefix, *args], cwd=REPO, env=subprocess_env(),
                          capture_output=True, text=True, timeout=timeout, input=stdin)


def _one_line(err: str) -> str:
    """The only line a command wrote on standard error."""
    assert "Traceback" not in err and "Exception ignored" not in err, err[-3000:]
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, lines
    return lines[0]


def _temporaries(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.name.endswith(".tmp") or ".tmp" in p.suffixes
            or "orbax-checkpoint-tmp" in p.name]


def _du(path: Path) -> int:
    """Bytes `path` takes on a tmpfs (each file rounded up to 4 KiB pages)."""
    return sum(-(-p.stat().st_size // 4096) * 4096 for p in path.rglob("*") if p.is_file())


def _fill(disk: Path) -> list[Path]:
    """Fill a mounted tmpfs to its last page; returns the filler files."""
    fillers = []
    while shutil.disk_usage(disk).free > 0 and len(fillers) < 1000:
        fillers.append(disk / f"filler{len(fillers)}")
        with open(fillers[-1], "wb") as f, contextlib.suppress(OSError):
            f.write(b"\0" * max(shutil.disk_usage(disk).free, 4096))
    return fillers


def _train_args(workdir, data_dir):
    return ["train", "--config", str(SMOKE), "--workdir", str(workdir),
            f"data.data_dir={data_dir}", "model.arch=xl"]


def test_a_full_disk_during_a_save_keeps_the_last_checkpoint_and_resumes_exactly(
        data_dir, tiny_run, tmp_path, capsys):
    """Room for one checkpoint, not two: the save of step 8 fails; step 4 stays, nothing of
    step 8 is left, and the rerun with space back ends as the uninterrupted run."""
    step_bytes = _du(tiny_run / "checkpoints" / "4")
    files = _du(tiny_run / "tokenizer") + 64 * 1024
    disk = tmp_path / "disk"
    with _tmpfs(disk, (files + step_bytes * 3 // 2) // 1024) as mounted:
        workdir = disk / "run"
        # without a tmpfs: a file-size limit that the tokenizer passes and a checkpoint not
        limit = None if mounted else 64 * 1024
        proc = _cli(_train_args(workdir, data_dir), limit=limit)
        assert proc.returncode == 2, proc.stderr[-3000:]
        line = _one_line(proc.stderr)
        assert line.startswith(f"longctx train: error: --workdir {workdir}: training stopped: ")
        assert any(words in line for words in _FULL), line
        saved = sorted(p.name for p in (workdir / "checkpoints").iterdir())
        if mounted:
            assert "checkpoint step 4 is intact and the rerun resumes from it" in line
            assert saved == ["4"]
        assert _temporaries(workdir) == []
        if mounted:
            _remount(disk, "size=16m")
        out = run_main(_train_args(workdir, data_dir), capsys).out  # the rerun, in this process
        if mounted:
            assert "resumed from step 4" in out
        resumed = json.loads(out.strip().splitlines()[-1])
    uninterrupted = json.loads((tiny_run / "summary.json").read_text())
    assert resumed["params_sha256"] == uninterrupted["params_sha256"]


def test_the_cleanup_outlasts_a_write_still_in_flight_after_the_error(tmp_path):
    """Orbax reports a save's first failed write while tensorstore's other writes of the
    step are still running (C++ threads, not joinable); each recreates its folders. A
    writer that does so 0.1 s after the step's folder is removed finds the cleanup still
    watching: nothing is left when it returns."""
    workdir = tmp_path / "run"
    step_tmp = workdir / "checkpoints" / "8.orbax-checkpoint-tmp"
    late_file = step_tmp / "state.orbax-checkpoint-tmp" / "ocdbt.process_0" / "d" / "f"
    late_file.parent.mkdir(parents=True)
    (workdir / "config.json.tmp").write_text("{")
    removed = threading.Event()
    wrote = []

    def in_flight_write():
        deadline = time.monotonic() + 30
        while step_tmp.exists():  # the cleanup's first removal
            if removed.wait(0.001) or time.monotonic() > deadline:
                return
        removed.set()
        time.sleep(0.1)  # the write's latency on a loaded machine (not a wait for a condition)
        late_file.parent.mkdir(parents=True, exist_ok=True)  # tensorstore's mkdir -p
        late_file.write_bytes(b"x")
        wrote.append(time.monotonic())

    writer = threading.Thread(target=in_flight_write, daemon=True)
    writer.start()
    limits.remove_failed_writes(workdir)
    returned = time.monotonic()
    writer.join(timeout=30)
    assert removed.is_set() and wrote and wrote[0] < returned
    assert list((workdir / "checkpoints").iterdir()) == [] and _temporaries(workdir) == []


def test_a_full_disk_during_import_txl_is_one_line_and_leaves_nothing(tmp_path, capsys):
    """The weights' orbax save fails part-way: one line (none of orbax's or tensorstore's
    threads' tracebacks), no config, no checkpoint folder; with space back it imports."""
    reference = FIXTURES / "reference_postln.npz"
    disk = tmp_path / "disk"
    with _tmpfs(disk, 24) as mounted:
        workdir = disk / "run"
        proc = _cli(["import-txl", str(reference), "--workdir", str(workdir)],
                    limit=None if mounted else 4096)
        assert proc.returncode == 2, proc.stderr[-3000:]
        line = _one_line(proc.stderr)
        assert line.startswith(f"longctx import-txl: error: --workdir {workdir}: cannot write "
                               "the run: ") and any(w in line for w in _FULL), line
        assert not workdir.exists() or list(workdir.iterdir()) == []
        if mounted:
            _remount(disk, "size=16m")
        run_main(["import-txl", str(reference), "--workdir", str(workdir)], capsys)
        assert (workdir / "checkpoints" / "0").is_dir() and _temporaries(workdir) == []


def test_a_full_disk_at_start_up_leaves_no_half_copied_tokenizer(data_dir, tiny_run,
                                                                 tmp_path):
    disk = tmp_path / "disk"
    tokenizer_bytes = _du(tiny_run / "tokenizer")
    with _tmpfs(disk, (tokenizer_bytes // 2 + 8192) // 1024) as mounted:
        workdir = disk / "run"
        proc = _cli(_train_args(workdir, data_dir),
                    limit=None if mounted else tokenizer_bytes // 4)
        assert proc.returncode == 2, proc.stderr[-3000:]
        line = _one_line(proc.stderr)
        assert f"--workdir {workdir}" in line and any(w in line for w in _FULL), line
        assert _temporaries(workdir) == [] and not (workdir / "tokenizer").exists()
        assert not (workdir / "checkpoints").exists() or \
            list((workdir / "checkpoints").iterdir()) == []


def _read_only_copy(run_dir: Path, tmp_path: Path):
    """A copy of `run_dir` on a read-only file system; (workdir, what the line says)."""
    disk = tmp_path / "ro"
    if _mount(disk, "size=16m"):
        shutil.copytree(run_dir, disk / "run")
        _remount(disk, "ro")
        return disk / "run", "read-only file system", lambda: subprocess.run(
            ["umount", "-l", str(disk)], capture_output=True, timeout=30)
    shutil.copytree(run_dir, disk / "run")  # a user without write permission
    for path in [disk / "run", *(disk / "run").rglob("*")]:
        path.chmod(path.stat().st_mode & ~0o222)
    return disk / "run", "permission denied", lambda: None


def test_a_read_only_run_refuses_writers_in_one_line_and_serves_readers(tiny_run, data_dir,
                                                                        tmp_path, capsys,
                                                                        monkeypatch):
    """The commands' own `main` in this process (the file system refuses, not the process)."""
    workdir, words, unmount = _read_only_copy(tiny_run, tmp_path)
    try:
        before = sorted(str(p.relative_to(workdir)) for p in workdir.rglob("*"))
        out = run_main(_train_args(workdir, data_dir), capsys, code=2)
        assert words in _one_line(out.err) and f"--workdir {workdir}" in _one_line(out.err), out.err

        out = run_main(["evaluate", "--workdir", str(workdir), "--no-speed"], capsys, code=2)
        assert words in _one_line(out.err), out.err

        monkeypatch.setattr(sys, "stdin", io.StringIO("/save kept\n/stats\n"))
        out = run_main(["chat", "--workdir", str(workdir)], capsys, code=1)
        assert words in _one_line(out.err), out.err
        assert "span in use" in out.out  # the conversation went on after the failed save

        out = run_main(["info", "--workdir", str(workdir)], capsys)  # readers need no write
        assert json.loads(out.out)["step"] == 12, out.err
        assert sorted(str(p.relative_to(workdir)) for p in workdir.rglob("*")) == before
    finally:
        unmount()


def test_a_full_disk_during_chat_save_is_one_line_and_the_chat_goes_on(tiny_run, tmp_path,
                                                                       capsys, monkeypatch):
    """/save on a full disk: one line, the conversation goes on, no chats/ folder is left;
    once space is back the same /save writes it."""
    disk = tmp_path / "disk"
    with _tmpfs(disk, _du(tiny_run) // 1024 + 256) as mounted:
        workdir = shutil.copytree(tiny_run, disk / "run")
        if mounted:  # fill what is left; the chat runs in this process
            fillers = _fill(disk)
            monkeypatch.setattr(sys, "stdin", io.StringIO("/save kept\n/stats\n"))
            out = run_main(["chat", "--workdir", str(workdir)], capsys, code=1)
            err, said = out.err, out.out
            for filler in fillers:
                filler.unlink()
        else:  # a child under a file-size limit the saved state passes
            proc = _cli(["chat", "--workdir", str(workdir)], limit=1024,
                        stdin="/save kept\n/stats\n")
            assert proc.returncode == 1, proc.stderr[-3000:]
            err, said = proc.stderr, proc.stdout
        line = _one_line(err)
        assert line.startswith("longctx chat: error: /save kept: cannot write ") and \
            any(w in line for w in _FULL), line
        assert "span in use" in said and not (workdir / "chats").exists()
        monkeypatch.setattr(sys, "stdin", io.StringIO("/save kept\n"))
        run_main(["chat", "--workdir", str(workdir)], capsys)
        assert [p.name for p in (workdir / "chats").iterdir()] == ["kept"]


def test_a_full_disk_during_compare_keeps_the_earlier_results(tiny_run, tmp_path, capsys):
    """compare --out into a folder holding earlier results, on a full disk: one line, the
    earlier files byte for byte, nothing half-written beside them (written in place, the
    larger new curves.png replaced the earlier one with half of itself)."""
    early = tmp_path / "early"  # a run one logged step in: small earlier results
    shutil.copytree(tiny_run, early, ignore=shutil.ignore_patterns("checkpoints", "tb"))
    lines = (early / "metrics.jsonl").read_text().splitlines(keepends=True)
    (early / "metrics.jsonl").write_text(lines[0])
    disk = tmp_path / "disk"
    with _tmpfs(disk, 2048) as mounted:
        out = disk / "results"
        run_main(["compare", str(early), "--out", str(out)], capsys)
        before = {p.name: p.read_bytes() for p in out.iterdir()}
        assert {"results.md", "results.csv", "curves.png"} <= set(before)
        if mounted:
            _fill(disk)
        proc = _cli(["compare", str(tiny_run), str(early), "--out", str(out)],
                    limit=None if mounted else 1024)
        assert proc.returncode == 2, proc.stderr[-3000:]
        line = _one_line(proc.stderr)
        assert line.startswith(f"longctx compare: error: --out {out}: cannot write the "
                               "results: ") and any(w in line for w in _FULL), line
        assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_too_many_open_files_is_one_line(data_dir, tmp_path):
    """With every descriptor taken, a command that must open one says so in one line."""
    import jax

    jax.devices()  # the backend is up before the descriptors run out, as in a command
    cfg = smoke_config(data_dir)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    held = []
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(soft, 4096), hard))
    try:
        with pytest.raises(OSError):
            while True:
                held.append(os.open(os.devnull, os.O_RDONLY))
        with pytest.raises(UserError, match=r"--workdir .*run: cannot create its lock file: "
                                            r"too many open files \(.*run/\.lock\); raise the "
                                            r"open-file limit \(ulimit -n\), then rerun"):
            train(cfg, tmp_path / "run")
    finally:
        for fd in held:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("make, flag, words", [
    (lambda p: None, "", "--workdir is empty"),
    (lambda p: p.write_text("x"), "file", "is a file, not a directory"),
    (lambda p: p.symlink_to(p), "loop", "a symbolic link that loops"),
    (lambda p: p.symlink_to(p.parent / "missing"), "dangling", "a symbolic link that leads "
                                                               "nowhere"),
    (lambda p: (p.parent / "f").write_text("x"), "f/run", "f is a file, not a directory"),
])
def test_unusable_workdirs_are_refused_in_one_line(make, flag, words, data_dir, tmp_path,
                                                   capfd):
    target = tmp_path / "w"
    make(target)
    before = sorted(os.listdir(tmp_path))
    workdir = "" if flag == "" else str(target if flag != "f/run" else tmp_path / "f" / "run")
    for command in (["train", "--config", str(SMOKE), f"data.data_dir={data_dir}"],
                    ["info"], ["evaluate"], ["chat"]):
        capfd.readouterr()
        assert main([*command, "--workdir", workdir]) == 2, command
        lines = [ln for ln in capfd.readouterr().err.splitlines() if ln.strip()]
        assert len(lines) == 1 and words in lines[0], (command, lines)
    assert sorted(os.listdir(tmp_path)) == before


def test_data_dir_that_is_a_file_and_compare_out_that_is_a_file(tmp_path, capfd):
    blocker = tmp_path / "file"
    blocker.write_text("keep me")
    assert main(["data", "build", "synthetic", f"data.data_dir={blocker}",
                 "data.num_train=20"]) == 2
    lines = [ln for ln in capfd.readouterr().err.splitlines() if ln.strip()]
    assert lines == [f"longctx data: error: data.data_dir {blocker} is a file, not a "
                     "directory; pass a directory"], lines
    assert main(["compare", str(tmp_path), "--out", str(blocker)]) == 2
    lines = [ln for ln in capfd.readouterr().err.splitlines() if ln.strip()]
    assert len(lines) == 1 and f"--out {blocker} is a file" in lines[0], lines
    assert blocker.read_text() == "keep me"


def test_outputs_never_overwrite_a_run_s_inputs(tiny_run, tmp_path, capfd):
    run_dir = tmp_path / "run"
    shutil.copytree(tiny_run, run_dir)
    source = tmp_path / "corpus.jsonl"
    source.write_text("{}\n")
    config = (run_dir / "config.json").read_bytes()
    for out, words in [
        (run_dir / "config.json", "would overwrite its config.json of the run"),
        (run_dir / "summary.json", "would overwrite its summary.json"),
        (run_dir / "tokenizer" / "tokenizer.json", "would overwrite its tokenizer"),
        (run_dir / "checkpoints" / "12" / "x.json", "would overwrite its checkpoints"),
        (tiny_run / "config.json", f"of the run {tiny_run}"),  # another run's file too
        (source, "is the file this command reads"),
        ("", "--out is empty"),
    ]:
        capfd.readouterr()
        args = ["evaluate", "--workdir", str(run_dir), "--out", str(out), "--no-speed",
                "--dataset", "msc", "--source", str(source)]
        assert main(args) == 2, out
        lines = [ln for ln in capfd.readouterr().err.splitlines() if ln.strip()]
        assert len(lines) == 1 and words in lines[0], (out, lines)
    assert (run_dir / "config.json").read_bytes() == config
    assert source.read_text() == "{}\n"
    assert check_dir_arg(tmp_path / "new" / "run", "--workdir") == tmp_path / "new" / "run"
    with RunLock(tmp_path / "new" / "run", "train") as lock:
        assert lock.workdir.is_dir()
    assert not (tmp_path / "new" / "run").exists()


def test_a_full_disk_during_a_data_build_leaves_no_temporary_folder(tmp_path):
    disk = tmp_path / "disk"
    with _tmpfs(disk, 64) as mounted:
        data = disk / "data"
        proc = _cli(["data", "build", "synthetic", f"data.data_dir={data}", "data.num_train=40",
                     "data.vocab_size=512"], limit=None if mounted else 16 * 1024)
        assert proc.returncode == 2, proc.stderr[-3000:]
        line = _one_line(proc.stderr)
        assert line.startswith(f"longctx data: error: data.data_dir {data}: cannot build ") \
            and any(words in line for words in _FULL), line
        assert list(data.iterdir()) == []
