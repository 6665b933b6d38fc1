"""longctx.api: the example runs, and each call gives the numbers the commands give."""

import importlib.util
import json
import shutil
import subprocess
import sys

import numpy as np
import pytest

import longctx.api as lc
from longctx.errors import UserError
from tests.conftest import REPO, subprocess_env


@pytest.fixture(scope="module")
def example_run(tiny_run, tmp_path_factory):
    """A copy of the tiny XL run that examples/quickstart.py has been run on (it writes
    eval.json into it), and the script's output."""
    workdir = tmp_path_factory.mktemp("api") / "run"
    shutil.copytree(tiny_run, workdir)
    proc = subprocess.run([sys.executable, str(REPO / "examples" / "quickstart.py"),
                           "--workdir", str(workdir)], cwd=REPO, env=subprocess_env(1),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    return workdir, proc.stdout


def test_quickstart_example_runs(example_run):
    workdir, out = example_run
    lines = out.splitlines()
    assert lines[0].startswith("smoke: xl, W=32, step 12")
    assert "turns, mean NLL" in lines[1] and lines[2].startswith("  turn 0 (speaker 0")
    assert any(x.startswith("  probe ") and "credit" in x for x in lines)
    assert any(x.startswith("own conversation: last turn NLL") for x in lines)
    assert any(x.startswith("reply: ") for x in lines)
    ev = json.loads((workdir / "eval.json").read_text())
    assert f"eval.json: xl ppl {ev['perplexity']['overall']['ppl']:.2f}" in out
    assert "WARNING:absl" not in out


def test_score_conversation_matches_the_evaluation_stream(example_run):
    from longctx.eval.evaluate import perplexity
    from longctx.eval.scoring import Scorer

    run = lc.load_run(example_run[0])
    convs = lc.validation_conversations(run)
    lps, _ = Scorer(run.cfg.model, run.params).stream_logprobs([c.ids for c in convs])
    score = lc.score_conversation(run, convs[3])
    assert score.nll == pytest.approx(perplexity([convs[3]], [lps[3]])["overall"]["nll"],
                                      rel=1e-9)
    np.testing.assert_allclose(score.token_logprobs, lps[3], rtol=1e-9)
    assert [t["turn"] for t in score.turns] == list(range(len(convs[3].turns)))
    assert sum(t["tokens"] for t in score.turns) == sum(t.end - t.start for t in convs[3].turns)
    assert len(score.probes) == len(convs[3].probes) > 0
    for p in score.probes:
        assert p["bucket"] in ("inside", "1-2x", "2-4x", ">4x")
        assert p["credit"] in (0.0, 1.0) or 0 < p["credit"] < 1
        assert (p["credit"] > 0) == (p["chosen"] == 0), "the true value (first) scores highest"


def test_text_conversations_turns_speakers_and_sessions(example_run):
    run = lc.load_run(example_run[0])
    conv = lc.conversation([(0, "hello there ."), (1, "hi ."), (0, "back again .", 1)],
                           session_headers=("", "2 days later"))
    assert [t.speaker for t in conv.turns] == [0, 1, 0]
    assert [t.session for t in conv.turns] == [0, 0, 1]
    assert conv.session_headers == ["", "2 days later"]
    score = lc.score_conversation(run, conv)
    assert [t["session"] for t in score.turns] == [0, 0, 1] and score.probes == []
    assert all(np.isfinite(t["nll"]) and t["tokens"] >= 2 for t in score.turns)
    with pytest.raises(UserError, match="at least one turn"):
        lc.conversation([])


def test_chat_streams_the_reply_it_returns(example_run):
    run = lc.load_run(example_run[0])
    chat = lc.chat(run, temperature=1.0, max_new_tokens=12, seed=3)
    pieces = []
    reply = lc.stream_reply(chat, "hello , how are you ?", on_text=pieces.append)
    assert "".join(pieces) == reply
    again = lc.chat(run, temperature=1.0, max_new_tokens=12, seed=3)
    assert lc.stream_reply(again, "hello , how are you ?") == reply, "seeded: same reply"
    assert chat.stats()["turns"] == 2


def test_read_results_and_metrics(example_run):
    workdir = example_run[0]
    ev = json.loads((workdir / "eval.json").read_text())
    (row,) = lc.read_results([workdir])
    assert row["arch"] == "xl" and row["seed"] == 0 and row["step"] == 12
    assert row["ppl"] == ev["perplexity"]["overall"]["ppl"]
    assert row["recall inside"] == ev["recall"]["buckets"]["inside"]["accuracy"]
    rows = lc.read_metrics(workdir)
    assert [r["step"] for r in rows if r["kind"] == "train"] == list(range(2, 13, 2))
    if importlib.util.find_spec("pandas") is None:
        with pytest.raises(UserError, match="needs pandas"):
            lc.read_results([workdir], dataframe=True)
    else:
        frame = lc.read_results([workdir], dataframe=True)
        assert frame.shape[0] == 1 and frame["ppl"][0] == row["ppl"]
    with pytest.raises(UserError, match="metrics.jsonl: missing"):
        lc.read_metrics(workdir / "nowhere")
