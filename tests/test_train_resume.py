"""Exact resume: SIGKILL at seeded points (one during an async save), restart, same bits,
validation rows included."""

import json
import shutil
import signal

import pytest

from tests.conftest import SMOKE, run_cli, subprocess_env

STEPS = ["train.num_steps=12", "checkpoint.every_steps=4", "train.log_every=1",
         "train.eval_every_steps=3", "train.eval_tokens=6000"]


def _train(workdir, data_dir, fault=None, check=True):
    env = subprocess_env(1, **({"LONGCTX_FAULT": fault} if fault else {}))
    return run_cli(["train", "--config", str(SMOKE), "--workdir", str(workdir),
                    f"data.data_dir={data_dir}", *STEPS], env=env, check=check, timeout=240)


def _validation_rows(workdir):
    """Validation rows without their timing (the only number that may differ)."""
    rows = [json.loads(x) for x in (workdir / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k != "seconds"} for r in rows
            if r.get("kind") == "validation"]


def _fingerprint(workdir):
    out = run_cli(["info", "--workdir", str(workdir)]).stdout.strip().splitlines()[-1]
    return json.loads(out)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, data_dir):
    workdir = tmp_path_factory.mktemp("resume") / "clean"
    _train(workdir, data_dir)
    return workdir


@pytest.mark.parametrize("fault", ["step:6", "save:8"])
def test_sigkill_then_resume_is_bit_identical(fault, uninterrupted, data_dir, tmp_path):
    workdir = tmp_path / "killed"
    proc = _train(workdir, data_dir, fault=fault, check=False)
    assert proc.returncode == -signal.SIGKILL
    _train(workdir, data_dir)
    assert _fingerprint(workdir) == _fingerprint(uninterrupted)
    rows = [json.loads(x) for x in (workdir / "metrics.jsonl").read_text().splitlines()]
    steps = [r["step"] for r in rows if "kind" not in r]
    assert steps == list(range(1, 13)), "after a resume no step is logged twice or lost"
    validation = _validation_rows(workdir)
    assert [r["step"] for r in validation] == [3, 6, 9, 12]
    assert validation == _validation_rows(uninterrupted)


def test_sigterm_saves_and_resumes(uninterrupted, data_dir, tmp_path):
    workdir = tmp_path / "preempted"
    proc = _train(workdir, data_dir, fault="term:6")
    assert "SIGTERM: saved step 6" in proc.stdout
    assert not json.loads((workdir / "summary.json").read_text())["done"]
    assert (workdir / "checkpoints" / "6").is_dir()
    _train(workdir, data_dir)
    assert _fingerprint(workdir) == _fingerprint(uninterrupted)
    assert _validation_rows(workdir) == _validation_rows(uninterrupted)


def test_truncated_latest_checkpoint_is_skipped(uninterrupted, data_dir, tmp_path):
    workdir = tmp_path / "truncated"
    shutil.copytree(uninterrupted, workdir)
    latest = workdir / "checkpoints" / "12" / "params"
    victims = [p for p in latest.rglob("*") if p.is_file() and p.stat().st_size > 0]
    assert victims
    for p in victims:
        p.write_bytes(p.read_bytes()[: p.stat().st_size // 3])
    proc = _train(workdir, data_dir)
    assert "checkpoint step 12" in proc.stderr and "falling back" in proc.stderr
    assert "resumed from step 8" in proc.stdout
    assert _fingerprint(workdir) == _fingerprint(uninterrupted)
