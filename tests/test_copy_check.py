"""experiments/copy_check.py: the value-NLL gap and the repeated-block check."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np

from tests.conftest import load_script


def _probe(fact, answer, distance):
    return SimpleNamespace(fact_value_span=fact, answer_value_span=answer, distance=distance)


def test_value_nll_reads_stated_and_answer_tokens_by_bucket():
    check = load_script("copy_check")
    # token t is scored by lp[t - 1]: stated value tokens 3-4 cost 3 nats, answer 10-11 cost
    # 0.5 (a copier); a second probe 70 tokens later falls in the 1-2x bucket (W = 64)
    lp = np.zeros(100)
    lp[2:4], lp[9:11] = -3.0, -0.5
    lp[79:81] = -2.0
    conv = SimpleNamespace(probes=[_probe((3, 5), (10, 12), 6), _probe((3, 5), (80, 82), 76)])
    out = check.value_nll([conv], [lp], span=64)
    assert out["inside"] == {"stated": 3.0, "answer": 0.5, "count": 1}
    assert out["1-2x"] == {"stated": 3.0, "answer": 2.0, "count": 1}
    assert set(out) == {"inside", "1-2x"}


def test_copy_check_runs_on_a_trained_run(tiny_run, capsys):
    check = load_script("copy_check")
    assert check.main(["--workdir", str(tiny_run), "--conversations", "3"]) == 0
    out = capsys.readouterr().out
    assert "| inside |" in out and "second showing" in out


def test_copy_check_refuses_a_missing_run(tmp_path, capsys):
    check = load_script("copy_check")
    assert check.main(["--workdir", str(tmp_path / "nope")]) == 2
    assert capsys.readouterr().err.startswith("error:")
