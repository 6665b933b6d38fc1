"""`xl_retrieval` through the `longctx` command: a run started from a trained XL run
(`train.init_from`: the same parameters, none added) trains, `info` and `evaluate` report
its cost and recall, and a chat carries its store and is saved and resumed."""

from __future__ import annotations

import json
import subprocess
import sys

from longctx.config import from_dict
from longctx.eval.flops import flops_per_token
from tests.conftest import REPO, SMOKE, run_cli, subprocess_env

RETRIEVAL = ["model.arch=xl_retrieval", "model.retrieval_k=4", "model.store_len=64",
             "train.num_steps=4", "eval.max_conversations=3", "eval.speed_tokens=32"]


def _chat(workdir, script: str) -> str:
    proc = subprocess.run([sys.executable, "-m", "longctx.cli", "chat", "--workdir", str(workdir),
                           "--seed", "3", "--max-new-tokens", "40"], cwd=REPO,
                          env=subprocess_env(1), input=script, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


def _info(workdir) -> dict:
    return json.loads(run_cli(["info", "--workdir", str(workdir)]).stdout.strip()
                      .splitlines()[-1])


def test_trains_from_xl_evaluates_and_chats(data_dir, tiny_run, tmp_path):
    run = tmp_path / "run"
    run_cli(["train", "--config", str(SMOKE), "--workdir", str(run), f"data.data_dir={data_dir}",
             *RETRIEVAL, f"train.init_from={tiny_run}"], timeout=400)
    info, xl = _info(run), _info(tiny_run)
    assert info["arch"] == "xl_retrieval" and info["step"] == 4
    assert info["num_params"] == xl["num_params"]  # retrieval adds no parameters
    assert info["init_from"]["path"] == str(tiny_run) and info["init_from"]["arch"] == "xl"
    assert any((run / "checkpoints" / "4").glob("memory*"))  # the store is carried state

    run_cli(["evaluate", "--workdir", str(run)], timeout=400)
    result = json.loads((run / "eval.json").read_text())
    assert result["run"]["arch"] == "xl_retrieval" and result["recall"]["buckets"]["all"]["count"]
    assert result["speed"]["stream"]["mode"].startswith("xl_retrieval: segments of 16")
    cfg = from_dict(json.loads((run / "config.json").read_text())).model
    scan = 2 * cfg.n_layer * cfg.store_len * cfg.n_head * cfg.d_head  # the store scan a token
    xl_flops = flops_per_token(cfg.replace(arch="xl"), training=False)
    assert result["run"]["flops_per_token"]["eval"] > xl_flops + scan

    # 40 new tokens a reply over segments of 16: rows leave the 32-row memory into the store
    chat = _chat(run, "hello there, how was the trip?\nand the weather?\n/stats\n/save first\n")
    assert "store rows" in chat and "store rows 0" not in chat, chat[-2000:]
    assert (run / "chats" / "first" / "meta.json").is_file()
    again = _chat(run, "/load first\n/stats\n")
    assert "store rows" in again and "store rows 0" not in again, again[-2000:]


def test_bad_retrieval_knob_is_one_line(tmp_path):
    proc = run_cli(["train", "--config", str(SMOKE), "--workdir", str(tmp_path / "bad"),
                    "model.arch=xl_retrieval", "model.retrieval_k=99", "model.store_len=8"],
                   check=False)
    assert proc.returncode == 2
    assert "model.retrieval_k" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "bad").exists()
