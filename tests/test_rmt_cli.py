"""The `rmt` architecture and XL with gradients through memory through the `longctx`
command: train with K segments a row (SIGKILLed and resumed to the same parameters),
info, evaluate, compare, and a chat whose memory is saved and loaded. The SIGKILLed
training is a child process; the other commands run the command's `main` in this one."""

from __future__ import annotations

import io
import json
import signal
import sys

import pytest

from tests.conftest import SMOKE, run_cli, run_main, subprocess_env

RMT = ["model.arch=rmt", "model.rmt.n_mem_tokens=4", "model.rmt.bptt_segments=2", "train.log_every=1",
       "eval.max_conversations=3", "eval.speed_tokens=32"]


def _train_args(workdir, data_dir, extra=()):
    return ["train", "--config", str(SMOKE), "--workdir", str(workdir),
            f"data.data_dir={data_dir}", *RMT, *extra]


def _chat(workdir, script: str, new_tokens: int, capsys, monkeypatch) -> str:
    monkeypatch.setattr(sys, "stdin", io.StringIO(script))
    return run_main(["chat", "--workdir", str(workdir), "--seed", "3", "--max-new-tokens",
                     str(new_tokens)], capsys).out


def _info(workdir, capsys):
    return json.loads(run_main(["info", "--workdir", str(workdir)], capsys).out.strip()
                      .splitlines()[-1])


def test_rmt_trains_resumes_evaluates_and_chats(data_dir, tmp_path, capsys, monkeypatch):
    clean, killed = tmp_path / "clean", tmp_path / "killed"
    run_main(_train_args(clean, data_dir), capsys)
    proc = run_cli(_train_args(killed, data_dir), check=False, timeout=400,
                   env=subprocess_env(1, LONGCTX_FAULT="step:6"))
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    run_main(_train_args(killed, data_dir), capsys)
    info = _info(killed, capsys)
    assert info == _info(clean, capsys), "resumed after SIGKILL to the same parameters"
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

    ev = run_main(["evaluate", "--workdir", str(clean)], capsys)
    result = json.loads((clean / "eval.json").read_text())
    assert result["run"]["arch"] == "rmt", ev.out[-1000:]
    assert result["speed"]["stream"]["mode"].startswith("rmt: segments of 16 carrying 4")
    cmp = run_main(["compare", str(clean), "--out", str(tmp_path / "cmp")], capsys)
    assert "rmt" in cmp.out and (tmp_path / "cmp" / "results.md").is_file()

    chat = _chat(clean, "hello there, how was the trip?\n/stats\n/save first\n", 20, capsys,
                 monkeypatch)
    assert "[rmt:" in chat and "memory vectors" in chat, chat[-2000:]
    assert (clean / "chats" / "first" / "meta.json").is_file()
    again = _chat(clean, "/load first\n/stats\nand then?\n", 8, capsys, monkeypatch)
    assert "first" in again and "[rmt:" in again, again[-2000:]


@pytest.mark.parametrize("stop", ["false", "true"])
def test_xl_with_gradients_through_memory_trains(data_dir, tmp_path, stop, capsys):
    """XL with bptt_segments 2: rows of 2 segments; the ablation trains the same shapes."""
    workdir = tmp_path / stop
    run_main(["train", "--config", str(SMOKE), "--workdir", str(workdir),
              f"data.data_dir={data_dir}", "model.xl.bptt_segments=2",
              f"model.xl.bptt_stop_gradient={stop}", "train.num_steps=4"], capsys)
    summary = json.loads((workdir / "summary.json").read_text())
    assert summary["arch"] == "xl" and summary["train_tokens"] == 4 * 4 * 32
