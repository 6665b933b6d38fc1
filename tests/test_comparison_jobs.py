"""experiments/dialogue_comparison.py's scheduler: models trained and evaluated two at a
time, a derived model after its source, a failed model reported without stopping the others."""

from __future__ import annotations

import json

from longctx.train import presets
from tests.conftest import load_script
from tests.test_gpu_scripts import TINY_STUDY

TINY = TINY_STUDY.split()[2:]  # the overrides, without --tokens-per-step


def test_derived_model_waits_for_its_source_and_a_failure_stays_local(tmp_path, data_dir):
    exp = load_script("dialogue_comparison")
    common = [*TINY, f"data.data_dir={data_dir}", "eval.context_lengths=8"]
    xl = exp.Job("xl", "0", [*common, *exp.batch_overrides("xl", 128, common)])
    retrieval = exp.Job("xl_retrieval", "0",
                        [*common, *exp.batch_overrides("xl_retrieval", 128, common)],
                        derived=presets.Derived("xl_retrieval", "xl"))
    broken = exp.Job("window", "0", [*common, "train.batch_size=2", "model.window.window=-4"])
    # sources first; a derived model `parallel` places after its source, so it never
    # holds a worker while its source waits in the queue
    assert [j.arch for j in exp._order([retrieval, xl, broken], 2)] == [
        "xl", "window", "xl_retrieval"]
    assert [j.arch for j in exp._order([retrieval, xl, broken], 1)] == [
        "xl", "xl_retrieval", "window"]
    timings: dict[str, float] = {}
    # the derived job first in the list: the scheduler still starts sources first
    failed = exp._run_jobs([retrieval, xl, broken], tmp_path, presets.COMPARISON["gpu-quick"],
                           2, timings)
    assert failed == [broken]
    ev = json.loads((retrieval.run.workdir / "eval.json").read_text())
    assert ev["run"]["arch"] == "xl_retrieval" and ev["run"]["step"] == 0
    assert ev["run"]["init_from"]["path"] == str(xl.run.workdir.absolute())
    assert (xl.run.workdir / "eval.json").is_file()
    assert {"train xl", "train xl_retrieval", f"evaluate {xl.run.workdir.name}"} <= set(timings)
    assert sorted(p.name for p in (tmp_path / "logs").iterdir()) == [
        "seed-0_arch-xl.evaluate.log", "seed-0_arch-xl.train.log",
        "seed-0_arch-xl_retrieval.evaluate.log", "seed-0_arch-xl_retrieval.train.log"]
