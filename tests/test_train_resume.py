"""Exact resume: SIGKILL at seeded points (one during an async save), restart, same bits,
validation rows included. The killed and preempted trainings are `longctx` child
processes (the signal ends a process); the reruns, the uninterrupted run and `info` are
the same command in this process."""

import json
import shutil
import signal

import pytest

from tests.conftest import SMOKE, run_cli, run_main, subprocess_env

STEPS = ["train.num_steps=12", "checkpoint.every_steps=4", "train.log_every=1",
         "train.eval_every_steps=3", "train.eval_tokens=6000"]


def _args(workdir, data_dir):
    return ["train", "--config", str(SMOKE), "--workdir", str(workdir),
            f"data.data_dir={data_dir}", *STEPS]


def _train_child(workdir, data_dir, fault, check=True):
    """`longctx train` in a child process that LONGCTX_FAULT signals at its point."""
    env = subprocess_env(1, LONGCTX_FAULT=fault)
    return run_cli(_args(workdir, data_dir), env=env, check=check, timeout=240)


def _train(workdir, data_dir, capsys):
    """`longctx train` (a first run or a rerun) in this process: what it printed."""
    return run_main(_args(workdir, data_dir), capsys)


def _validation_rows(workdir):
    """Validation rows without their timing (the only number that may differ)."""
    rows = [json.loads(x) for x in (workdir / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k != "seconds"} for r in rows
            if r.get("kind") == "validation"]


def _fingerprint(workdir, capsys):
    return json.loads(run_main(["info", "--workdir", str(workdir)], capsys).out
                      .strip().splitlines()[-1])


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, data_dir):
    """The run no signal interrupts."""
    from longctx.cli import main

    workdir = tmp_path_factory.mktemp("resume") / "clean"
    assert main(_args(workdir, data_dir)) == 0
    return workdir


@pytest.mark.parametrize("fault", ["step:6", "save:8"])
def test_sigkill_then_resume_is_bit_identical(fault, uninterrupted, data_dir, tmp_path,
                                              capsys):
    workdir = tmp_path / "killed"
    proc = _train_child(workdir, data_dir, fault, check=False)
    assert proc.returncode == -signal.SIGKILL
    _train(workdir, data_dir, capsys)
    assert _fingerprint(workdir, capsys) == _fingerprint(uninterrupted, capsys)
    rows = [json.loads(x) for x in (workdir / "metrics.jsonl").read_text().splitlines()]
    steps = [r["step"] for r in rows if "kind" not in r]
    assert steps == list(range(1, 13)), "after a resume no step is logged twice or lost"
    validation = _validation_rows(workdir)
    assert [r["step"] for r in validation] == [3, 6, 9, 12]
    assert validation == _validation_rows(uninterrupted)


def test_sigterm_saves_and_resumes(uninterrupted, data_dir, tmp_path, capsys):
    workdir = tmp_path / "preempted"
    proc = _train_child(workdir, data_dir, "term:6")
    assert "SIGTERM: saved step 6" in proc.stdout
    assert not json.loads((workdir / "summary.json").read_text())["done"]
    assert (workdir / "checkpoints" / "6").is_dir()
    _train(workdir, data_dir, capsys)
    assert _fingerprint(workdir, capsys) == _fingerprint(uninterrupted, capsys)
    assert _validation_rows(workdir) == _validation_rows(uninterrupted)


def test_truncated_latest_checkpoint_is_skipped(uninterrupted, data_dir, tmp_path, capsys):
    workdir = tmp_path / "truncated"
    shutil.copytree(uninterrupted, workdir)
    latest = workdir / "checkpoints" / "12" / "params"
    victims = [p for p in latest.rglob("*") if p.is_file() and p.stat().st_size > 0]
    assert victims
    for p in victims:
        p.write_bytes(p.read_bytes()[: p.stat().st_size // 3])
    out = _train(workdir, data_dir, capsys)
    assert "checkpoint step 12" in out.err and "falling back" in out.err
    assert "resumed from step 8" in out.out
    assert _fingerprint(workdir, capsys) == _fingerprint(uninterrupted, capsys)
