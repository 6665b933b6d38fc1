"""`evaluate --source`: any run on any corpus file, tokenized with the run's own tokenizer;
bad files as one line; `compare` keeps datasets apart; a 30-session, 700-turn
conversation builds, batches and evaluates."""

import csv
import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from longctx.cli import main
from longctx.data import make_lanes, prepare_dataset
from longctx.data.builders.base import read_conversations
from longctx.data.builders.qmsum import QmsumMeetings
from longctx.data.render import render
from longctx.eval.recurrence import RECURRENCE_BUCKETS
from longctx.models import archs
from longctx.rundir import load_run
from tests.data_fixtures import MSC_SAMPLE, QMSUM_SAMPLE, network_off, real_config, serve_folder

# eval work capped: vanilla scores one window per 16 targets (a few batched calls for a
# 25k-token conversation, where XL streams it segment by segment)
SMALL_EVAL = {"max_conversations": 2, "speed_tokens": 64, "context_lengths": [16, 32],
              "vanilla_stride": 16}


@pytest.fixture(scope="module")
def run_dir(tiny_vanilla_run, tmp_path_factory):
    """A copy of the shared tiny vanilla (synthetic) run with small eval settings."""
    workdir = tmp_path_factory.mktemp("source") / "run"
    shutil.copytree(tiny_vanilla_run, workdir)
    cfg = json.loads((workdir / "config.json").read_text())
    cfg["eval"].update(SMALL_EVAL)
    (workdir / "config.json").write_text(json.dumps(cfg))
    return workdir


@pytest.fixture(scope="module")
def on_qmsum(run_dir, tmp_path_factory):
    """The run evaluated on a QMSum file outside any dataset folder, into eval_qmsum.json."""
    corpus = tmp_path_factory.mktemp("elsewhere") / "meetings.jsonl"
    shutil.copy(QMSUM_SAMPLE, corpus)
    data_dir = json.loads((run_dir / "config.json").read_text())["data"]["data_dir"]
    before = sorted(p.name for p in Path(data_dir).iterdir())
    out = run_dir / "eval_qmsum.json"
    assert main(["evaluate", "--workdir", str(run_dir), "--dataset", "qmsum", "--source",
                 str(corpus), "--split", "all", "--no-speed", "--out", str(out)]) == 0
    after = sorted(p.name for p in Path(data_dir).iterdir())
    return corpus, json.loads(out.read_text()), before, after


def test_source_file_with_the_runs_own_tokenizer(run_dir, on_qmsum):
    corpus, ev, before, after = on_qmsum
    assert before == after  # no dataset built, no tokenizer trained or written
    assert not (run_dir / "eval.json").exists()  # --out: the run's eval.json untouched
    ds = ev["dataset"]
    assert ds["name"] == "qmsum" and ds["split"] == "all" and ds["conversations"] == 2
    assert ds["source"] == {"path": str(corpus.resolve()),
                            "sha256": hashlib.sha256(corpus.read_bytes()).hexdigest()}
    run = load_run(run_dir)
    convs = [render(c, run.tokenizer)
             for c in read_conversations(corpus, QmsumMeetings.parse)[:2]]
    assert ds["tokens"] == sum(c.ids.size for c in convs)
    rec = ev["recurrence"]
    assert set(rec["buckets"]) == set(RECURRENCE_BUCKETS) and rec["span"] == archs.span(run.cfg.model)
    assert rec["buckets"]["new"]["count"] > 0 and rec["buckets"][">4x"]["count"] > 0
    assert sum(b["count"] for s in rec["by_session"].values() for b in s.values()) == sum(
        b["count"] for b in rec["buckets"].values())
    parts = ev["perplexity"]["by_part"]
    assert list(parts) == ["0", "1", "2", "3"]
    assert sum(p["tokens"] for p in parts.values()) == ev["perplexity"]["overall"]["tokens"]


def test_compare_keeps_datasets_apart(run_dir, on_qmsum, tmp_path):
    assert main(["evaluate", "--workdir", str(run_dir), "--no-speed"]) == 0  # own: synthetic
    out = tmp_path / "cmp"
    assert main(["compare", str(run_dir), str(run_dir / "eval_qmsum.json"),
                 "--out", str(out)]) == 0
    md = (out / "results.md").read_text()
    assert "## synthetic/validation" in md and "## qmsum/all @ " in md
    assert md.count("| smoke | vanilla |") == 2  # the same run: a row in each section
    rows = list(csv.DictReader((out / "results.csv").open()))
    assert [r["dataset"].split(" @ ")[0] for r in rows] == ["synthetic/validation", "qmsum/all"]
    assert rows[0]["exact match mean"] and not rows[1]["exact match mean"]
    assert rows[1]["recur NLL >4x mean"] and int(rows[1]["recur NLL >4x count"]) > 0
    assert (out / "qmsum_all_recurrence_vs_distance.png").stat().st_size > 1000
    assert (out / "synthetic_validation_recall_vs_distance.png").stat().st_size > 1000


def _one_line_error(capsys, args, *expected):
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    for text in expected:
        assert text in err, err


def test_bad_source_files_are_one_line(run_dir, tmp_path, capsys):
    base = ["evaluate", "--workdir", str(run_dir), "--no-speed", "--split", "all"]
    missing = tmp_path / "nope.jsonl"
    _one_line_error(capsys, [*base, "--dataset", "msc", "--source", str(missing)],
                    str(missing), "not found")
    bad = tmp_path / "bad.jsonl"
    bad.write_text(MSC_SAMPLE.read_text().splitlines()[0] + "\n{\"dialog\": [\n")
    _one_line_error(capsys, [*base, "--dataset", "msc", "--source", str(bad)],
                    f"{bad}:2: malformed JSON line")
    # a QMSum file read as MSC: the first line lacks MSC's keys
    _one_line_error(capsys, [*base, "--dataset", "msc", "--source", str(QMSUM_SAMPLE)],
                    f"{QMSUM_SAMPLE}:1: missing 'previous_dialogs'")
    one = tmp_path / "one.jsonl"
    one.write_text(MSC_SAMPLE.read_text().splitlines()[0] + "\n")
    _one_line_error(capsys, [*base[:-1], "validation", "--dataset", "msc", "--source", str(one)],
                    f"{one}: 1 conversation(s)", "--split all")
    _one_line_error(capsys, [*base, "--dataset", "synthetic", "--source", str(MSC_SAMPLE)],
                    "--source does not apply")
    _one_line_error(capsys, [*base[:-1], "test", "--dataset", "msc", "--source",
                             str(MSC_SAMPLE)], "unknown split 'test'")
    assert not (run_dir / "eval.json.tmp").exists()


def test_without_source_the_release_is_downloaded(run_dir, tmp_path, monkeypatch, capsys):
    """--dataset qmsum without --source: the builder's release, fetched into the run's
    data_dir through TFDS (here served from 127.0.0.1); offline, one line."""
    workdir = tmp_path / "run"
    shutil.copytree(run_dir, workdir)
    cfg = json.loads((workdir / "config.json").read_text())
    cfg["data"]["data_dir"] = str(tmp_path / "data")
    (workdir / "config.json").write_text(json.dumps(cfg))
    args = ["evaluate", "--workdir", str(workdir), "--dataset", "qmsum", "--split", "all",
            "--no-speed", "--out", str(workdir / "eval_qmsum.json")]
    monkeypatch.delenv("LONGCTX_QMSUM_URL", raising=False)
    with network_off():
        _one_line_error(capsys, args, "could not download https://raw.githubusercontent.com/",
                        "pass data.source=FILE with the release's data/ALL/jsonl/train.jsonl")
    assert not (tmp_path / "data").exists()
    www = tmp_path / "www"
    www.mkdir()
    shutil.copy(QMSUM_SAMPLE, www / "train.jsonl")
    with serve_folder(www) as (base, seen):
        monkeypatch.setenv("LONGCTX_QMSUM_URL", f"{base}/train.jsonl")
        assert main(args) == 0
    source = json.loads((workdir / "eval_qmsum.json").read_text())["dataset"]["source"]
    assert seen == ["/train.jsonl"]
    assert source["sha256"] == hashlib.sha256(QMSUM_SAMPLE.read_bytes()).hexdigest()
    assert source["path"].startswith(str(tmp_path / "data" / "downloads"))


# ----------------------------------------------------------------------------- scale

SYLLABLES = "ka lo mi ren tas vu bel dor fin gat hul jop kes lim nar pov qui rus sel tov".split()


def _long_msc_file(path, sessions=30, turns=700, seed=0):
    """One MSC episode of `sessions` sessions and `turns` turns (sessions 1..29 in
    previous_dialogs, the last in dialog), plus a short second episode."""
    rng = np.random.default_rng(seed)
    words = ["".join(rng.choice(SYLLABLES, rng.integers(1, 4))) for _ in range(1500)]
    per = np.full(sessions, turns // sessions)
    per[: turns % sessions] += 1
    dialogs = [[{"text": " ".join(rng.choice(words, 18)) + "."} for _ in range(n)]
               for n in per]
    long = {"previous_dialogs": [{"dialog": d, "time_num": k + 1, "time_unit": "days"}
                                 for k, d in enumerate(dialogs[:-1])],
            "dialog": dialogs[-1], "metadata": {"initial_data_id": "long"}}
    short = {"previous_dialogs": [], "dialog": dialogs[0][:4],
             "metadata": {"initial_data_id": "short"}}
    path.write_text(json.dumps(long) + "\n" + json.dumps(short) + "\n")
    return path


def test_thirty_sessions_and_700_turns_build_batch_and_evaluate(run_dir, tmp_path):
    corpus = _long_msc_file(tmp_path / "long.jsonl")
    ds = prepare_dataset(real_config("msc", tmp_path / "data", source=str(corpus)))
    split, conv = max(((s, c) for s in ("train", "validation") for c in ds.conversations(s)),
                      key=lambda sc: sc[1].ids.size)
    assert len(conv.sessions) == 30 and len(conv.turns) == 700
    assert 20_000 <= conv.ids.size <= 30_000
    lanes = make_lanes(ds, split, 2, 64, loop=False)
    assert sum(int(b["mask"].sum()) for b in lanes) >= conv.ids.size - 1
    # evaluate the (synthetic-trained) tiny run on it, with its own tokenizer
    out = tmp_path / "eval_long.json"
    assert main(["evaluate", "--workdir", str(run_dir), "--dataset", "msc", "--source",
                 str(corpus), "--split", "all", "--no-speed", "--out", str(out)]) == 0
    ev = json.loads(out.read_text())
    assert ev["dataset"]["conversations"] == 2
    assert list(ev["perplexity"]["by_session"]) == [str(s) for s in range(30)]
    assert len(ev["perplexity"]["by_turn"]) == 700
    rec = ev["recurrence"]
    assert list(rec["by_session"]) == [str(s) for s in range(30)]
    assert rec["buckets"][">4x"]["count"] > 0 and rec["buckets"]["new"]["count"] > 0
