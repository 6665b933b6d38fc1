"""bench_vs_pytorch.py refuses bad input with one line before starting any worker."""

from __future__ import annotations

import runpy
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "experiments" / "bench_vs_pytorch.py"


def _main():
    return runpy.run_path(str(SCRIPT), run_name="bench_vs_pytorch")["main"]


def test_reference_without_the_original_code_is_refused(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        _main()(["--reference", str(tmp_path)])
    assert exc.value.code == 2
    assert "no pytorch/mem_transformer.py" in capsys.readouterr().err


def test_unknown_size_is_refused(tmp_path, capsys):
    (tmp_path / "pytorch").mkdir()
    (tmp_path / "pytorch" / "mem_transformer.py").write_text("")
    with pytest.raises(SystemExit) as exc:
        _main()(["--reference", str(tmp_path), "--sizes", "small,huge"])
    assert exc.value.code == 2
    assert "unknown ['huge']" in capsys.readouterr().err


def test_missing_reference_is_refused(capsys):
    with pytest.raises(SystemExit):
        _main()([])
    assert "--reference DIR is required" in capsys.readouterr().err
