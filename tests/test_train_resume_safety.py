"""Resume never loses a run: settings that would change it are refused with one line,
only unreadable steps are set aside (under unique names), every command agrees on the
latest readable step, and a run continues on another number of processes or devices."""

import json
import shutil

import numpy as np
import pytest

from longctx.errors import UserError
from longctx.rundir import load_run, save_params_run
from longctx.rundir.readable import CheckpointMismatch
from longctx.rundir.settings import config_differences
from longctx.train import resume
from longctx.train.loop import train
from tests.conftest import run_cli, smoke_config


@pytest.fixture
def run_copy(tiny_run, tmp_path):
    """A private copy of the shared trained smoke run (checkpoints 4, 8, 12)."""
    return shutil.copytree(tiny_run, tmp_path / "run")


def _state(workdir):
    """Every path and the bytes of metrics.jsonl: what a refused command must not touch."""
    return (sorted(p.relative_to(workdir).as_posix() for p in workdir.rglob("*")),
            (workdir / "metrics.jsonl").read_text())


def _smoke(data_dir, *overrides):
    return smoke_config(data_dir, "model.arch=xl", *overrides)  # as `tiny_run` was trained


def _sha(workdir):
    return json.loads((workdir / "summary.json").read_text())["params_sha256"]


def test_only_where_and_how_often_may_change_on_resume(data_dir):
    base = _smoke(data_dir)
    free = _smoke(data_dir, "train.log_every=1", "train.host_sync_every=1",
                  "checkpoint.every_steps=1", "checkpoint.keep=9", "eval.max_conversations=2",
                  "data.data_dir=elsewhere", "model.remat=true", "name=other", "model.n_token=512")
    assert config_differences(base, free) == []
    changed = _smoke(data_dir, "train.batch_size=8", "train.num_steps=24", "optim.b1=0.8",
                     "data.seed=3", "model.d_inner=96")
    assert {k for k, _, _ in config_differences(base, changed)} == {
        "train.batch_size", "train.num_steps", "optim.b1", "data.seed", "model.d_inner"}
    # a token budget decides the length: num_steps is then ignored on both sides
    a = _smoke(data_dir, "train.train_tokens=4096", "train.num_steps=5")
    b = _smoke(data_dir, "train.train_tokens=4096", "train.num_steps=7")
    assert config_differences(a, b) == []


def test_changed_batch_size_and_seed_are_refused_and_nothing_moves(run_copy, data_dir):
    before = _state(run_copy)
    with pytest.raises(UserError) as err:
        train(_smoke(data_dir, "train.batch_size=8", "train.seed=1"), run_copy)
    msg = str(err.value)
    assert "\n" not in msg
    assert "train.batch_size 4 (saved) vs 8 (now)" in msg and "train.seed 0 (saved) vs 1 (now)" in msg
    assert _state(run_copy) == before


def test_a_step_saved_with_other_settings_is_refused_not_set_aside(run_copy, data_dir):
    # config.json edited to agree with the command: the checkpoint's own config still refuses
    path = run_copy / "config.json"
    path.write_text(path.read_text().replace('"batch_size": 4', '"batch_size": 8'))
    before = _state(run_copy)
    with pytest.raises(CheckpointMismatch, match=r"train.batch_size 4 \(saved\) vs 8 "):
        train(_smoke(data_dir, "train.batch_size=8"), run_copy)
    assert _state(run_copy) == before


def test_set_aside_names_are_unique_and_a_failed_move_is_one_line(tmp_path):
    ckpt = tmp_path / "checkpoints"
    for _ in range(3):  # the same step set aside three times
        (ckpt / "12").mkdir(parents=True)
        resume.set_aside(ckpt, 12, "corrupt")
    aside = tmp_path / resume.ASIDE
    assert sorted(p.name for p in aside.iterdir()) == ["12", "12-2", "12-3"]
    shutil.rmtree(aside)
    aside.write_text("")  # something in the way: the move cannot happen
    (ckpt / "12").mkdir()
    with pytest.raises(UserError, match="could not be moved") as err:
        resume.set_aside(ckpt, 12, "corrupt")
    assert "\n" not in str(err.value) and (ckpt / "12").is_dir()


def test_no_readable_step_is_one_line_moves_nothing_and_never_retrains(run_copy, data_dir,
                                                                       capfd):
    for p in run_copy.glob("checkpoints/*/*/d/*"):  # every step's array data gone
        p.unlink()
    before = _state(run_copy)
    proc = run_cli(["info", "--workdir", str(run_copy)], check=False, timeout=120)
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr[-2000:]
    assert "no readable checkpoint (steps 12, 8, 4" in lines[0]
    with pytest.raises(UserError, match="no readable checkpoint"):
        train(_smoke(data_dir), run_copy)
    assert _state(run_copy) == before
    assert "Event loop is closed" not in capfd.readouterr().err


def test_train_info_evaluate_chat_agree_on_the_latest_readable_step(run_copy, data_dir,
                                                                     tiny_run, capsys):
    from longctx import log

    log.configure()  # as the longctx command does: progress on stdout, warnings on stderr
    (run_copy / "checkpoints" / "12" / "params" / "_METADATA").unlink()
    assert load_run(run_copy).step == 8  # info, evaluate and chat read through load_run
    summary = train(_smoke(data_dir), run_copy)
    out = capsys.readouterr()
    assert "resumed from step 8" in out.out and "step 12" in out.err
    assert (run_copy / resume.ASIDE / "12" / "params").is_dir()
    assert summary["params_sha256"] == _sha(tiny_run)  # the fallback resume is exact


def test_edited_config_json_is_one_line_for_evaluate_and_chat(run_copy, tmp_path):
    good = load_run(run_copy)
    path = run_copy / "config.json"
    path.write_text(path.read_text().replace('"d_inner": 64', '"d_inner": 96'))
    with pytest.raises(UserError, match=r"model.d_inner 64 \(checkpoint\) vs 96 \(config.json\)"):
        load_run(run_copy)
    # a run without a saved config per step (imported weights): the shapes are compared
    good.cfg.model = good.cfg.model.replace(d_inner=96)
    save_params_run(tmp_path / "imported", good.cfg, good.params)
    with pytest.raises(UserError, match=r"ff_in.*has shape \(64,\), this config needs \(96,\)"):
        load_run(tmp_path / "imported")


def test_a_step_saved_by_two_processes_resumes_in_one(run_copy, data_dir, tiny_run):
    shutil.rmtree(run_copy / "checkpoints" / "12")
    meta = run_copy / "checkpoints" / "8" / "data" / "metadata"
    (state,) = json.loads(meta.read_text())["lanes"]
    halves = [{**state, "lanes": {k: v for k, v in state["lanes"].items() if int(k) // 2 == i}}
              for i in range(2)]  # what each of two processes saves: its own lanes
    meta.write_text(json.dumps({"lanes": halves}))
    assert train(_smoke(data_dir), run_copy)["params_sha256"] == _sha(tiny_run)


def test_a_run_saved_on_two_devices_resumes_on_one(data_dir, two_device_run, tmp_path):
    workdir = shutil.copytree(two_device_run, tmp_path / "two")
    two = [json.loads(x)["loss"] for x in (workdir / "metrics.jsonl").read_text().splitlines()]
    for step in ("8", "12"):
        shutil.rmtree(workdir / "checkpoints" / step)
    # this process: one device, from the two-device step 4 on
    train(smoke_config(data_dir, "train.log_every=1", "checkpoint.every_steps=4"), workdir)
    one = [json.loads(x)["loss"] for x in (workdir / "metrics.jsonl").read_text().splitlines()]
    assert len(one) == len(two) == 12
    np.testing.assert_allclose(one, two, rtol=1e-5, atol=1e-5)
