"""`train.profile_steps`: a jax.profiler trace of chosen steps, where TensorBoard looks."""

import json

from tests.conftest import SMOKE, run_cli


def test_profile_steps_write_a_trace_into_the_run(data_dir, tmp_path):
    workdir = tmp_path / "profiled"
    proc = run_cli(["train", "--config", str(SMOKE), "--workdir", str(workdir),
                    f"data.data_dir={data_dir}", "train.num_steps=6", "train.profile_steps=3,4"])
    traces = list((workdir / "tb" / "plugins" / "profile").glob("*/*.xplane.pb"))
    assert len(traces) == 1 and traces[0].stat().st_size > 1000
    assert "profiling steps 3-4" in proc.stdout + proc.stderr
    assert json.loads((workdir / "summary.json").read_text())["done"]
    assert b"train" in traces[0].read_bytes(), "the traced steps are marked as train steps"


def test_profile_past_the_last_step_is_refused_before_anything_is_written(data_dir, tmp_path):
    workdir = tmp_path / "refused"
    proc = run_cli(["train", "--config", str(SMOKE), "--workdir", str(workdir),
                    f"data.data_dir={data_dir}", "train.num_steps=6", "train.profile_steps=5,9"],
                   check=False)
    assert proc.returncode == 2
    assert "train.profile_steps" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert not workdir.exists()
