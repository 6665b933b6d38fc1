"""What evaluate and compare read is checked at the boundary: eval.json against its schema,
the run's config.json against the config schema, corpus lines with bounded nesting. Each
bad file is one line naming the file (and key or line), exit 2, nothing written."""

import copy
import json

import pytest

from longctx.cli import main
from longctx.data.builders.base import MAX_NESTING, nesting_depth, read_jsonl
from longctx.errors import UserError
from longctx.eval.compare import compare


@pytest.fixture(scope="module")
def evaluated(tiny_run, tmp_path_factory):
    """(eval.json, config.json) dicts of the shared smoke run, evaluated once."""
    from longctx.eval import evaluate
    from longctx.rundir import load_run

    ev = evaluate.evaluate(load_run(tiny_run), with_speed=False)
    return json.loads(json.dumps(ev)), json.loads((tiny_run / "config.json").read_text())


def _edit(ev, path, value):
    ev = copy.deepcopy(ev)
    node = ev
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return ev


def _cases(ev, cfg):
    curve = ev["context_curve"]
    return {
        "a list": ([ev], cfg, "eval.json", "key '(top level)': expected an object, got a list"),
        "a string": ("results", cfg, "eval.json", "expected an object, got a string"),
        "empty": ({}, cfg, "eval.json", "key 'schema_version': missing"),
        "version 99": (_edit(ev, ["schema_version"], 99), cfg, "eval.json",
                       "key 'schema_version': 99 is not one this version reads"),
        "short curve": (_edit(ev, ["context_curve", "nll"], curve["nll"][:1]), cfg, "eval.json",
                        f"{len(curve['context_lengths'])} context lengths but"),
        "cut curve row": (_edit(ev, ["context_curve", "nll", 0], curve["nll"][0][:3]), cfg,
                          "eval.json", "key 'context_curve.nll[0]': 3 values, num_targets"),
        "no run": ({k: v for k, v in ev.items() if k != "run"}, cfg, "eval.json",
                   "key 'run': missing"),
        "text accuracy": (_edit(ev, ["recall", "buckets", "inside", "accuracy"], "high"), cfg,
                          "eval.json", "key 'recall.buckets.inside.accuracy': expected a number"),
        "model a number": (ev, {**cfg, "model": 5}, "config.json",
                           "config key 'model': expected a mapping"),
        "config a list": (ev, [cfg], "config.json", "a JSON list, not an object of sections"),
    }


def test_compare_checks_eval_json_and_config_before_writing(evaluated, tmp_path, capfd):
    ev, cfg = evaluated
    for name, (bad_ev, bad_cfg, file, problem) in _cases(ev, cfg).items():
        run = tmp_path / name.replace(" ", "_")
        run.mkdir()
        (run / "eval.json").write_text(json.dumps(bad_ev))
        (run / "config.json").write_text(json.dumps(bad_cfg))
        out = tmp_path / f"out_{run.name}"
        capfd.readouterr()
        assert main(["compare", str(run), "--out", str(out)]) == 2, name
        lines = [ln for ln in capfd.readouterr().err.splitlines() if ln.strip()]
        assert len(lines) == 1 and f"{run / file}: " in lines[0] and problem in lines[0], (
            name, lines)
        assert not out.exists()


def test_compare_accepts_what_evaluate_writes_and_null_sections(evaluated, tmp_path):
    ev, cfg = evaluated
    for name, e in {"full": ev, "no probes": _edit(ev, ["recall"], None),
                    "older": {k: v for k, v in _edit(ev, ["schema_version"], 1).items()
                              if k not in ("recurrence", "speed")}}.items():
        run = tmp_path / name.replace(" ", "_")
        run.mkdir()
        (run / "eval.json").write_text(json.dumps(e))
        (run / "config.json").write_text(json.dumps(cfg))
        assert "| smoke | xl | 1 |" in compare([run], tmp_path / f"out_{run.name}")


def test_nesting_depth_skips_brackets_in_strings():
    assert nesting_depth('{"a": [1, {"b": "[[[{{\\"]]"}], "c": []}') == 3
    assert nesting_depth('"\\\\" [[1]]') == 2
    assert nesting_depth("[" * 5000 + "]" * 5000) == 5000


def test_a_corpus_line_nested_too_deeply_is_one_line(tmp_path):
    path = tmp_path / "deep.jsonl"
    path.write_text('{"dialog": []}\n' + '{"dialog": ' + "[" * 100_000 + "]" * 100_000 + "}\n")
    with pytest.raises(UserError) as err:
        list(read_jsonl(path))
    assert str(err.value) == (f"{path}:2: JSON nested 100001 levels deep (a corpus record "
                              f"needs at most {MAX_NESTING}); fix or remove the line")


def test_a_corpus_line_with_a_huge_integer_is_one_line(tmp_path):
    path = tmp_path / "big.jsonl"
    path.write_text('{"dialog": [], "id": 1' + "0" * 5000 + "}\n")
    with pytest.raises(UserError, match=rf"^{path}:1: unreadable JSON line \(Exceeds the limit"):
        list(read_jsonl(path))


def test_evaluate_source_with_a_deeply_nested_line_is_one_line(tiny_run, tmp_path, capfd):
    from tests.data_fixtures import MSC_SAMPLE

    source = tmp_path / "msc.jsonl"
    source.write_text(MSC_SAMPLE.read_text() + '{"dialog": ' + "[" * 50_000 + "]" * 50_000
                      + "}\n")
    out = tmp_path / "eval_msc.json"
    capfd.readouterr()
    code = main(["evaluate", "--workdir", str(tiny_run), "--dataset", "msc", "--source",
                 str(source), "--no-speed", "--out", str(out)])
    lines = [ln for ln in capfd.readouterr().err.splitlines() if ln.strip()]
    assert code == 2 and len(lines) == 1 and "JSON nested 50001 levels deep" in lines[0], lines
    assert not out.exists()
