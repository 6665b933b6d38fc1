"""experiments/reach_study.py: fine distance buckets, the study's models, one run's reach.json."""

import json

import numpy as np
import pytest

from tests.conftest import load_script

reach = load_script("reach_study")


def test_fine_buckets_split_probes_by_distance_over_w():
    span = 64
    distances = [10, 32, 33, 64, 65, 200, 1000]
    credits = [1.0, 0.0, 1.0, 0.5, 0.125, 0.0, 1.0]
    out = reach.fine_buckets(distances, credits, span)
    assert out["0-0.5W"]["count"] == 2 and out["0-0.5W"]["accuracy"] == 0.5
    assert out["0.5-1W"]["count"] == 2 and out["0.5-1W"]["accuracy"] == 0.75
    assert out["1-1.5W"] == {"accuracy": 0.125, "stderr": None, "count": 1}
    assert out["3-4W"]["count"] == 1 and out[">12W"]["count"] == 1
    assert out["2-3W"]["accuracy"] is None and sum(b["count"] for b in out.values()) == 7
    # standard error: sample std of (1, 0) / sqrt(2) = 0.5
    assert out["0-0.5W"]["stderr"] == pytest.approx(0.5)


def test_variants_match_attention_cost():
    models = reach.variants([2, 4], cost_depth=2, span=64, tgt_len=64)
    labels = [m["label"] for m in models]
    assert labels[:4] == ["xl L2", "window L2", "xl L4", "window L4"]
    # an XL query sees mem_len + 1 .. mem_len + tgt_len keys: mean mem_len + 32.5
    assert "window L2 W'=96" in labels and "window L2 W'=160" in labels
    assert "xl L2 mem 128" in labels
    assert [m["label"] for m in reach.variants([3], 2, 64, 64, part="depth")] == [
        "xl L3", "window L3"]
    assert len(reach.variants([3], 2, 64, 64, part="cost")) == 3


def test_evaluate_reach_writes_every_probe_once(tiny_run):
    result = reach.evaluate_reach(tiny_run)
    saved = json.loads((tiny_run / "reach.json").read_text())
    assert saved == result
    n = len(result["probes"]["distance"])
    assert n > 0 and len(result["probes"]["credit"]) == n
    assert sum(b["count"] for b in result["fine"].values()) == n
    credits = np.asarray(result["probes"]["credit"])
    assert np.all((credits >= 0) & (credits <= 1))
    text = reach.table([("xl L2", [result])])
    assert text.startswith("| model | seeds | 0-0.5W") and "| xl L2 | 1 |" in text
    (tiny_run / "reach.json").unlink()  # the run is shared with other tests


def test_direct_split_uses_the_query_offset_in_its_segment():
    # W = mem_len = tgt_len = 64: a query at offset i sees 64 + i + 1 positions back
    result = {"span": 64, "mem_len": 64, "probes": {
        "distance": [100, 100, 130, 70],
        "position": [1 + 64 * 5 + 40, 1 + 64 * 5 + 10, 1 + 64 * 7 + 63, 1 + 64 * 2],
        "credit": [1.0, 0.0, 0.5, 1.0]}}
    out = reach.direct_split(result, tgt_len=64)
    # 100 <= 64+40+1 in view; 100 > 64+10+1 out; 130 > 128 (2W) outside the band; 70 > 65 out
    assert out["in view"] == {"accuracy": 1.0, "stderr": None, "count": 1}
    assert out["out of view"]["count"] == 2 and out["out of view"]["accuracy"] == 0.5
