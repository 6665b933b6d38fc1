"""The attention benchmark's smoke mode runs and prints both architectures."""

from __future__ import annotations

import importlib.util

from tests.conftest import REPO


def test_bench_attention_smoke(capsys):
    path = REPO / "experiments" / "bench_attention.py"
    spec = importlib.util.spec_from_file_location("bench_attention", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.main(["--smoke"]) == 0
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.startswith("| xl") or line.startswith("| window")]
    assert len(rows) == 4
    assert "peak = XLA compiled memory analysis" in out
