"""`compare` on run directories with known eval.json numbers."""

import csv
import json

import numpy as np
import pytest

from longctx.cli import main
from longctx.config import Config, ModelConfig
from longctx.eval import context_curve
from longctx.eval.compare import compare

LENGTHS = [16, 32, 64]


def _eval_json(arch, span, recall_inside, count_inside, ppl, shuffle, hits, curve, tps):
    buckets = {b: {"accuracy": 0.2, "exact_match": 0.1, "count": 30}
               for b in ("1-2x", "2-4x", ">4x")}
    buckets["inside"] = {"accuracy": recall_inside, "exact_match": 0.5, "count": count_inside}
    buckets["all"] = {"accuracy": 0.3, "exact_match": 0.2, "count": 90 + count_inside}
    return {
        "schema_version": 1,
        "run": {"arch": arch, "span": span, "num_params": 1000, "train_tokens": 50_000,
                "flops_per_token": {"train": 3e5, "eval": 1e5}, "step": 10},
        "dataset": {"name": "synthetic", "split": "validation", "conversations": 4},
        "perplexity": {"overall": {"nll": float(np.log(ppl)), "ppl": ppl, "tokens": 900},
                       "by_turn": {"0": {"ppl": ppl, "tokens": 10}},
                       "by_session": {"0": {"ppl": ppl, "tokens": 500},
                                      "1": {"ppl": ppl + 1, "tokens": 400}}},
        "recall": {"num_candidates": 8, "chance": 0.125, "skipped": 0, "buckets": buckets},
        "shuffle": {"accuracy": shuffle, "count": 40, "chance": 0.5},
        "hits_at_1": {"accuracy": hits, "count": 12, "num_candidates": 8, "chance": 0.125},
        "context_curve": {"context_lengths": LENGTHS, "num_targets": 4, "fingerprint": "abc",
                          "mean_nll": [float(np.mean(r)) for r in curve],
                          "nll": [list(map(float, r)) for r in curve]},
        "speed": {"stream": {"tokens_per_s": tps}},
    }


def _run(tmp_path, name, arch, seed, ev):
    d = tmp_path / name
    d.mkdir()
    cfg = Config(name=name, model=ModelConfig(arch=arch))
    cfg.train.seed = seed
    (d / "config.json").write_text(cfg.to_json())
    (d / "eval.json").write_text(json.dumps(ev))
    return d


CURVE_XL0 = [[4.0, 3.0, 2.0, 1.0], [3.0, 2.5, 2.0, 1.0], [2.0, 2.0, 1.5, 1.0]]
CURVE_XL1 = [[4.0, 3.0, 2.0, 1.0], [3.0, 2.0, 2.0, 1.0], [3.0, 2.0, 2.0, 1.0]]
CURVE_WIN = [[4.0, 3.5, 2.0, 1.0], [3.5, 3.0, 2.0, 1.0], [3.5, 3.0, 2.0, 1.0]]


@pytest.fixture
def runs(tmp_path):
    return [
        _run(tmp_path, "xl-s0", "xl", 0, _eval_json("xl", 64, 0.9, 25, 10.0, 0.7, 0.5,
                                                     CURVE_XL0, 1000.0)),
        _run(tmp_path, "xl-s1", "xl", 1, _eval_json("xl", 64, 0.7, 12, 12.0, 0.8, 0.25,
                                                     CURVE_XL1, 3000.0)),
        _run(tmp_path, "win-s0", "window", 0, _eval_json("window", 64, 0.6, 40, 11.0, 0.6,
                                                          0.125, CURVE_WIN, 5000.0)),
    ]


def test_compare_writes_the_known_numbers(runs, tmp_path):
    out = tmp_path / "results"
    table = compare(runs, out)
    rows = list(csv.DictReader((out / "results.csv").open()))
    assert [r["run"] for r in rows] == ["xl", "win"]
    xl, win = rows
    assert xl["seeds"] == "2" and win["seeds"] == "1"
    assert float(xl["recall inside mean"]) == pytest.approx(0.8)
    assert float(xl["recall inside std"]) == pytest.approx(np.std([0.9, 0.7], ddof=1))
    assert xl["recall inside count"] == "12"  # the smaller of the seeds' counts
    assert float(xl["ppl mean"]) == 11.0 and float(xl["ppl std"]) == pytest.approx(2 ** 0.5)
    assert float(xl["hits@1 mean"]) == 0.375 and float(xl["shuffle acc mean"]) == 0.75
    assert float(xl["eval tok/s mean"]) == 2000.0
    assert float(win["ppl mean"]) == 11.0 and win["ppl std"] == ""
    assert float(win["params mean"]) == 1000 and float(win["span W mean"]) == 64
    # RECL over the three compared runs, as context_curve.recl computes it
    losses = np.array([CURVE_XL0, CURVE_XL1, CURVE_WIN])
    want = [r["recl"] for r in context_curve.recl(losses, LENGTHS, ratio=1.0)]
    assert want == [64, 32, 32]
    assert float(xl["RECL r=1 mean"]) == np.mean(want[:2])
    assert float(win["RECL r=1 mean"]) == want[2]
    # markdown: mean ± std, the small bucket marked, not hidden
    assert "0.800 ± 0.141*" in table and "| 0.600 |" in table
    assert (out / "results.md").read_text().count("| xl |") == 1
    for png in ("recall_vs_distance.png", "perplexity_vs_session.png", "context_curve.png"):
        assert (out / png).stat().st_size > 1000


def test_compare_cli_errors_are_one_line(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert main(["compare", str(tmp_path / "empty"), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "config.json" in err


def test_single_seed_recall_shows_standard_error_and_memory_check(tmp_path):
    xl = _eval_json("xl", 64, 0.9, 25, 10.0, 0.7, 0.5, CURVE_XL0, 1000.0)
    win = _eval_json("window", 64, 0.9, 25, 10.0, 0.7, 0.5, CURVE_WIN, 1000.0)
    xl["recall"]["buckets"]["1-2x"].update(accuracy=0.5, stderr=0.04)
    win["recall"]["buckets"]["1-2x"].update(accuracy=0.13, stderr=0.03)
    dirs = [_run(tmp_path, "a", "xl", 0, xl), _run(tmp_path, "b", "window", 0, win)]
    table = compare(dirs, tmp_path / "out")
    assert "0.500 ± 0.040" in table and "0.130 ± 0.030" in table
    # (0.5 - 0.13) / hypot(0.04, 0.03) = 7.4; (0.5 - 0.125) / 0.04 = 9.4
    line = next(x for x in table.splitlines() if x.startswith("- 1-2x"))
    assert "XL − window z = +7.4" in line and "XL − chance z = +9.4" in line, line
    assert "window − chance z = +0.2" in line


def test_a_run_saved_before_a_config_field_existed_groups_with_its_later_seeds(runs, tmp_path):
    old = runs[0] / "config.json"  # seed 0 written before model.matmul_precision existed
    cfg = json.loads(old.read_text())
    assert cfg["model"].pop("matmul_precision") == "default"
    old.write_text(json.dumps(cfg))
    rows = list(csv.DictReader((compare(runs, tmp_path / "out") and
                                (tmp_path / "out" / "results.csv")).open()))
    assert [(r["run"], r["seeds"]) for r in rows] == [("xl", "2"), ("win", "1")]
    cfg["model"]["matmul_precision"] = "highest"  # a real difference still splits
    old.write_text(json.dumps(cfg))
    rows = list(csv.DictReader((compare(runs, tmp_path / "out2") and
                                (tmp_path / "out2" / "results.csv")).open()))
    assert [r["seeds"] for r in rows] == ["1", "1", "1"]


def _metrics(workdir, train_losses, validation):
    """metrics.jsonl with training rows every 2 steps and validation rows {step: (loss, recall)}."""
    rows = [{"step": 2 * (k + 1), "loss": x} for k, x in enumerate(train_losses)]
    rows += [{"step": s, "kind": "validation", "loss": loss, "recall": {"all": rec}}
             for s, (loss, rec) in validation.items()]
    (workdir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows)
                                           + '[1]\n{"step": 9, "lo')  # not a row; cut by a kill


def test_compare_plots_training_and_validation_curves(runs, tmp_path):
    from longctx.eval import curves

    _metrics(runs[0], [5.0, 4.0, 3.5], {4: (4.2, 0.3), 6: (3.9, 0.4)})
    _metrics(runs[2], [5.0, 4.5, 4.0], {6: (4.4, 0.2)})
    training = tmp_path / "still-training"  # no eval.json yet: curves only
    training.mkdir()
    (training / "config.json").write_text(Config(name="fresh").to_json())
    _metrics(training, [6.0], {2: (5.9, 0.1)})
    got = curves.read(runs[0])
    assert got.train == {2: 5.0, 4: 4.0, 6: 3.5}
    assert got.validation == {4: 4.2, 6: 3.9} and got.recall == {4: 0.3, 6: 0.4}
    assert curves.read(runs[1]) is None  # no metrics.jsonl
    table = compare([*runs, training], tmp_path / "out")
    assert (tmp_path / "out" / "curves.png").stat().st_size > 1000
    assert f"Not evaluated yet (curves only in curves.png): {training}" in table
    rows = list(csv.DictReader((tmp_path / "out" / "results.csv").open()))
    assert [r["run"] for r in rows] == ["xl", "win"]


def test_compare_without_curves_writes_no_curve_plot(runs, tmp_path):
    compare(runs, tmp_path / "out")
    assert not (tmp_path / "out" / "curves.png").exists()


def test_a_new_memory_mechanism_is_also_checked_against_xl(tmp_path):
    """A memory mechanism other than XL gets its lines against the window and against XL."""
    evs = {arch: _eval_json(arch, 64, 0.9, 25, 10.0, 0.7, 0.5, CURVE_XL0, 1000.0)
           for arch in ("xl", "window", "xl_retrieval")}
    for arch, (acc, se) in {"xl": (0.15, 0.02), "window": (0.12, 0.02),
                            "xl_retrieval": (0.7, 0.03)}.items():
        evs[arch]["recall"]["buckets"]["2-4x"].update(accuracy=acc, stderr=se)
    dirs = [_run(tmp_path, name, arch, 0, ev) for name, (arch, ev) in
            zip("abc", evs.items(), strict=True)]
    table = compare(dirs, tmp_path / "out")
    lines = [x for x in table.splitlines() if x.startswith("- 2-4x")]
    assert len(lines) == 3  # XL and XL+retrieval against the window; XL+retrieval against XL
    vs_xl = [x for x in lines if "XL+retrieval − XL z" in x]
    # (0.7 - 0.15) / hypot(0.03, 0.02) = 15.3
    assert len(vs_xl) == 1 and "XL+retrieval − XL z = +15.3" in vs_xl[0], lines


def test_runs_started_from_each_seeds_source_group_as_seeds(tmp_path):
    """Derived runs (`train.init_from`) of seeds 0 and 1 start from different source paths
    (each seed's own trained XL) and still form one row; a source of another architecture
    is another experiment."""
    dirs = []
    for name, seed, source_arch in (("r-s0", 0, "xl"), ("r-s1", 1, "xl"), ("w-s0", 0, "window")):
        ev = _eval_json("xl_retrieval", 64, 0.9, 25, 10.0, 0.7, 0.5, CURVE_XL0, 1000.0)
        source = tmp_path / f"{source_arch}-seed{seed}"
        ev["run"]["init_from"] = {"arch": source_arch, "step": 7, "path": str(source),
                                  "params_sha256": f"{seed}" * 64}
        d = _run(tmp_path, name, "xl_retrieval", seed, ev)
        cfg = json.loads((d / "config.json").read_text())
        cfg["train"]["init_from"] = str(source)
        (d / "config.json").write_text(json.dumps(cfg))
        dirs.append(d)
    compare(dirs, tmp_path / "out")
    rows = list(csv.DictReader((tmp_path / "out" / "results.csv").open()))
    assert [r["seeds"] for r in rows] == ["2", "1"]
