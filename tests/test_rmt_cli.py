"""The `rmt` architecture and XL with gradients through memory through the `longctx`
command: train with K segments a row (SIGKILLed and resumed to the same parameters),
info, evaluate, compare, and a chat whose memory is saved and loaded."""

from __future__ import annotations

import json
import signal
import subprocess
import sys

import pytest

from tests.conftest import REPO, SMOKE, run_cli, subprocess_env

RMT = ["model.arch=rmt", "model.rmt.n_mem_tokens=4", "model.rmt.bptt_segments=2", "train.log_every=1",
       "eval.max_conversations=3", "eval.speed_tokens=32"]


def _train(workdir, data_dir, extra=(), **kw):
    return run_cli(["train", "--config", str(SMOKE), "--workdir", str(workdir),
                    f"data.data_dir={data_dir}", *RMT, *extra], timeout=400, **kw)


def _chat(workdir, script: str, new_tokens: int) -> str:
    proc = subprocess.run([sys.executable, "-m", "longctx.cli", "chat", "--workdir", str(workdir),
                           "--seed", "3", "--max-new-tokens", str(new_tokens)], cwd=REPO,
                          env=subprocess_env(1), input=script, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


def _info(workdir):
    return json.loads(run_cli(["info", "--workdir", str(workdir)]).stdout.strip()
                      .splitlines()[-1])


def test_rmt_trains_resumes_evaluates_and_chats(data_dir, tmp_path):
    clean, killed = tmp_path / "clean", tmp_path / "killed"
    _train(clean, data_dir)
    proc = _train(killed, data_dir, check=False,
                  env=subprocess_env(1, LONGCTX_FAULT="step:6"))
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    _train(killed, data_dir)
    info = _info(killed)
    assert info == _info(clean), "resumed after SIGKILL to the same parameters"
    assert info["arch"] == "rmt" and info["step"] == 12 and info["span"] == 16
    # the decoder's parameters plus the 4 x 32 initial memory, as the estimate says
    from longctx.config import from_dict
    from longctx.train.memory_fit import num_params

    cfg = from_dict(json.loads((clean / "config.json").read_text()))
    assert num_params(cfg.model, cfg.model.n_token) == info["num_params"]
    xl = num_params(cfg.model.replace(arch="xl"), cfg.model.n_token)
    assert info["num_params"] == xl + 4 * 32
    # rows of 2 segments of 16: 4 lanes x 32 tokens a step
    summary = json.loads((clean / "summary.json").read_text())
    assert summary["train_tokens"] == 12 * 4 * 32
    assert any((clean / "checkpoints" / "12").glob("memory*"))

    ev = run_cli(["evaluate", "--workdir", str(clean)], timeout=400)
    result = json.loads((clean / "eval.json").read_text())
    assert result["run"]["arch"] == "rmt", ev.stdout[-1000:]
    assert result["speed"]["stream"]["mode"].startswith("rmt: segments of 16 carrying 4")
    cmp = run_cli(["compare", str(clean), "--out", str(tmp_path / "cmp")])
    assert "rmt" in cmp.stdout and (tmp_path / "cmp" / "results.md").is_file()

    chat = _chat(clean, "hello there, how was the trip?\n/stats\n/save first\n", 20)
    assert "[rmt:" in chat and "memory vectors" in chat, chat[-2000:]
    assert (clean / "chats" / "first" / "meta.json").is_file()
    again = _chat(clean, "/load first\n/stats\nand then?\n", 8)
    assert "first" in again and "[rmt:" in again, again[-2000:]


@pytest.mark.parametrize("stop", ["false", "true"])
def test_xl_with_gradients_through_memory_trains(data_dir, tmp_path, stop):
    """XL with bptt_segments 2: rows of 2 segments; the ablation trains the same shapes."""
    workdir = tmp_path / stop
    run_cli(["train", "--config", str(SMOKE), "--workdir", str(workdir),
             f"data.data_dir={data_dir}", "model.xl.bptt_segments=2",
             f"model.xl.bptt_stop_gradient={stop}", "train.num_steps=4"], timeout=400)
    summary = json.loads((workdir / "summary.json").read_text())
    assert summary["arch"] == "xl" and summary["train_tokens"] == 4 * 4 * 32
