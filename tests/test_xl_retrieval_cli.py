"""`xl_retrieval` through the `longctx` command: a run started from a trained XL run
(`train.init_from`: the same parameters, none added) trains, `info` and `evaluate` report
its cost and recall, and a chat carries its store and is saved and resumed (the command's
own `main`, in this process)."""

from __future__ import annotations

import io
import json
import shutil
import sys

import pytest

from longctx.config import from_dict
from longctx.eval.flops import flops_per_token
from tests.conftest import SMOKE, run_info, run_main, warm_started_run

RETRIEVAL = ["model.arch=xl_retrieval", "model.xl_retrieval.retrieval_k=4",
             "model.xl_retrieval.store_len=64",
             "train.num_steps=4", "eval.max_conversations=3"]


def _chat(workdir, script: str, capsys, monkeypatch) -> str:
    monkeypatch.setattr(sys, "stdin", io.StringIO(script))
    return run_main(["chat", "--workdir", str(workdir), "--seed", "3", "--max-new-tokens", "40"],
                    capsys).out


@pytest.fixture(scope="module")
def retrieval_run(tmp_path_factory, data_dir, tiny_run):
    """An xl_retrieval run trained 4 steps from the tiny XL run (shared: copy to change)."""
    return warm_started_run(tmp_path_factory, data_dir, tiny_run, "tiny_xl_retrieval",
                            *RETRIEVAL)


def test_starts_from_xl_with_its_parameters(retrieval_run, tiny_run, capsys):
    info, xl = run_info(retrieval_run, capsys), run_info(tiny_run, capsys)
    assert info["arch"] == "xl_retrieval" and info["step"] == 4
    assert info["num_params"] == xl["num_params"]  # retrieval adds no parameters
    assert info["init_from"]["path"] == str(tiny_run) and info["init_from"]["arch"] == "xl"
    assert any((retrieval_run / "checkpoints" / "4").glob("memory*"))  # the store is state


def test_evaluates_with_the_store_counted(retrieval_run, tmp_path, capsys):
    out = tmp_path / "eval.json"
    run_main(["evaluate", "--workdir", str(retrieval_run), "--no-speed", "--out", str(out)],
             capsys)
    result = json.loads(out.read_text())
    assert result["run"]["arch"] == "xl_retrieval" and result["recall"]["buckets"]["all"]["count"]
    assert result["settings"]["streaming"].startswith("xl_retrieval: segments of 16")
    cfg = from_dict(json.loads((retrieval_run / "config.json").read_text())).model
    # the store scan a token
    scan = 2 * cfg.n_layer * cfg.xl_retrieval.store_len * cfg.n_head * cfg.d_head
    xl_flops = flops_per_token(cfg.replace(arch="xl"), training=False)
    assert result["run"]["flops_per_token"]["eval"] > xl_flops + scan


def test_chat_carries_the_store_and_resumes(retrieval_run, tmp_path, capsys, monkeypatch):
    run = tmp_path / "run"
    shutil.copytree(retrieval_run, run)
    # 40 new tokens a reply over segments of 16: rows leave the 32-row memory into the store
    chat = _chat(run, "hello there, how was the trip?\nand the weather?\n/stats\n/save first\n",
                 capsys, monkeypatch)
    assert "store rows" in chat and "store rows 0" not in chat, chat[-2000:]
    assert (run / "chats" / "first" / "meta.json").is_file()
    again = _chat(run, "/load first\n/stats\n", capsys, monkeypatch)
    assert "store rows" in again and "store rows 0" not in again, again[-2000:]


def test_bad_retrieval_knob_is_one_line(tmp_path, capsys):
    out = run_main(["train", "--config", str(SMOKE), "--workdir", str(tmp_path / "bad"),
                    "model.arch=xl_retrieval", "model.xl_retrieval.retrieval_k=99",
                    "model.xl_retrieval.store_len=8"],
                   capsys, code=2)
    assert "model.xl_retrieval.retrieval_k" in out.err and len(out.err.strip().splitlines()) == 1
    assert not (tmp_path / "bad").exists()
