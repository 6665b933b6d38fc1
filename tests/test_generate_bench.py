"""The generation benchmark's smoke mode runs and reports sane, flat per-token costs."""

import json

from tests.conftest import load_script


def test_bench_generate_smoke(tmp_path, capsys):
    bench = load_script("bench_generate")
    out = tmp_path / "rows.json"
    assert bench.main(["--smoke", "--histories", "400,40", "--tokens", "50",
                       "--out", str(out)]) == 0
    rows = json.loads(out.read_text())
    assert [(r["arch"], r["history"]) for r in rows] == [("xl", 40), ("xl", 400),
                                                        ("window", 40), ("window", 400)]
    for r in rows:
        assert 0 < r["ms_per_token_median"] < 1000 and r["generated"] == 50
        assert max(r["compiled"].values()) == 1  # decoding never recompiled
    for arch in ("xl", "window"):  # the decode state does not grow with the history
        short, long = (r for r in rows if r["arch"] == arch)
        assert short["state_mib"] == long["state_mib"]
    assert "| xl | 32 | 400 |" in capsys.readouterr().out
    table = bench.table(rows)
    assert "| x window |" in table.splitlines()[0]
    assert "| window | 32 | 40 |" in table and "| 1.00 | 1.00 |" in table  # window vs itself
