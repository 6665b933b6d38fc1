"""The attention benchmark's smoke mode runs and prints both architectures."""

from __future__ import annotations

from tests.conftest import load_script


def test_bench_attention_smoke(capsys):
    module = load_script("bench_attention")
    assert module.main(["--smoke"]) == 0
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.startswith("| xl") or line.startswith("| window")]
    assert len(rows) == 4
    assert "peak = XLA compiled memory analysis" in out
