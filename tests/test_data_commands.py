"""`longctx data build` and `longctx data stats`."""

import json

import pytest

from longctx.cli import main
from tests.conftest import REPO
from tests.data_fixtures import MSC_SAMPLE, SMALL

SIZES = [f"data.{k}={v}" for k, v in SMALL.items()]


def test_build_then_stats(data_dir, capsys):
    args = [f"data.data_dir={data_dir}", *SIZES]
    assert main(["data", "build", "synthetic", *args]) == 0
    assert main(["data", "build", "synthetic", *args]) == 0
    out = capsys.readouterr().out
    assert "synthetic-" in out and "already built" in out and "validation 20" in out
    assert main(["data", "stats", "synthetic", *args, "--span", "64"]) == 0
    text = capsys.readouterr().out
    assert "W = 64" in text and "inside:" in text and ">4x:" in text
    assert main(["data", "stats", "synthetic", *args, "--json"]) == 0
    stats = json.loads(capsys.readouterr().out)
    val = stats["splits"]["validation"]
    assert stats["span"] == SMALL["span"] and val["conversations"] == 20
    assert sum(val["probe_buckets"].values()) == val["probes"] == 320


def test_real_corpus_from_config_source(tmp_path, capsys):
    assert main(["data", "stats", "msc", f"data.data_dir={tmp_path}",
                 f"data.source={MSC_SAMPLE}", "data.vocab_size=400"]) == 0
    assert "train: 7 conversations" in capsys.readouterr().out


def test_errors_are_one_line_and_exit_2(tmp_path, capsys):
    assert main(["data", "build", "qmsum", f"data.data_dir={tmp_path}",
                 f"data.source={tmp_path}/missing.jsonl"]) == 2
    assert "missing.jsonl': not found" in capsys.readouterr().err
    assert main(["data", "build", "synthetic", "train.num_steps=3"]) == 2
    assert "data.key=value overrides only" in capsys.readouterr().err
    assert main(["data", "build", "synthetic", "data.vocab_size=10"]) == 2
    assert "data.vocab_size" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())


def test_data_section_from_an_experiment_file(data_dir, capsys):
    smoke = REPO / "experiments" / "smoke.py"
    assert main(["data", "build", "--config", str(smoke), "synthetic",
                 f"data.data_dir={data_dir}"]) == 0
    assert "synthetic-1.0.0-n40-10-w32-v512-s0" in capsys.readouterr().out


def test_build_help_says_where_corpora_come_from(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["data", "build", "--help"])
    assert exit_.value.code == 0
    text = capsys.readouterr().out
    assert "data.source=FILE" in text and "downloads/" in text
    assert "http://parl.ai/downloads/msc/msc_v0.1.tar.gz" in text and "LONGCTX_QMSUM_URL" in text
