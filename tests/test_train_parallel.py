"""Data parallelism: the same numbers on 1, 2 and 4 devices, and over two processes."""

import json
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from tests.conftest import REPO, SMOKE, run_cli, subprocess_env

# The smoke run as `tiny_run` trains it (12 steps), logged every step; the 1-device curve
# is the shared `tiny_run`'s (logged every 2 steps: where both logged, they must agree).
ARGS = ["train.log_every=1", "checkpoint.every_steps=100"]


def _curve(workdir, every=1):
    rows = [json.loads(x) for x in (workdir / "metrics.jsonl").read_text().splitlines()]
    return [r["loss"] for r in rows if "kind" not in r and r["step"] % every == 0]


def _train_args(workdir, data_dir):
    return ["train", "--config", str(SMOKE), "--workdir", str(workdir),
            f"data.data_dir={data_dir}", *ARGS]


@pytest.fixture(scope="module")
def device_runs(data_dir, tmp_path_factory, tiny_run, two_device_run):
    """The smoke run on 1 and 2 devices (the shared `tiny_run` and `two_device_run`) and on
    4 (one process each): {devices: workdir}."""
    four = tmp_path_factory.mktemp("devices") / "d4"
    run_cli(_train_args(four, data_dir), devices=4, timeout=300)
    return {1: tiny_run, 2: two_device_run, 4: four}


def test_device_count_does_not_change_the_loss_curve(device_runs):
    one = _curve(device_runs[1], every=2)
    assert len(one) == 6 and len(_curve(device_runs[2])) == 12
    np.testing.assert_allclose(_curve(device_runs[2], every=2), one, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(_curve(device_runs[4], every=2), one, rtol=1e-5, atol=1e-5)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start_process(pid, port, workdir, data_dir, extra_env=None):
    env = subprocess_env(1, LONGCTX_COORDINATOR=f"127.0.0.1:{port}", LONGCTX_NUM_PROCESSES="2",
                         LONGCTX_PROCESS_ID=str(pid), **(extra_env or {}))
    return subprocess.Popen([sys.executable, "-m", "longctx.cli", *_train_args(workdir, data_dir)],
                            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def _run_pair(workdir, data_dir, process_1_env=None) -> list[tuple[str, str]]:
    """Train the smoke run as two processes of one device each; both must exit 0. Returns
    their (stdout, stderr)."""
    port = _free_port()
    procs = [_start_process(0, port, workdir, data_dir),
             _start_process(1, port, workdir, data_dir, process_1_env)]
    try:
        outs = [p.communicate(timeout=300) for p in procs]
    finally:
        for p in procs:
            p.kill()
    for p, (_out, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, err[-3000:]
    return outs


def test_a_dead_peer_makes_the_other_exit_within_its_peer_timeout(data_dir, tmp_path):
    """The default timeout is 30 s; 10 s here (LONGCTX_PEER_TIMEOUT) keeps the wait short
    and shows that the setting is what the processes use."""
    port = _free_port()
    timeout = {"LONGCTX_PEER_TIMEOUT": "10"}
    survivor = _start_process(0, port, tmp_path / "dead", data_dir, timeout)
    victim = _start_process(1, port, tmp_path / "dead", data_dir,
                            {"LONGCTX_FAULT": "step:3", **timeout})
    try:
        victim.communicate(timeout=240)
        died = time.time()
        survivor.communicate(timeout=90)
        waited = time.time() - died
    finally:
        survivor.kill()
        victim.kill()
    assert victim.returncode != 0
    assert survivor.returncode != 0, "the survivor must not pretend to have finished"
    assert waited < 30, f"the survivor took {waited:.0f}s to notice (peer timeout 10 s)"


@pytest.mark.timeout(900)  # two two-process runs (gloo start-up), after the shared device runs
def test_two_processes_stop_together_and_resume_to_the_two_device_numbers(device_runs, data_dir,
                                                                          tmp_path):
    """Two processes of one device each are one run of two devices. SIGTERM reaches only
    process 1 (a preempted host) after step 3: both processes agree to stop at the next
    agreement step (train.host_sync_every = 4), save it together and exit cleanly; resumed,
    the two processes end with the loss curve and parameters of the one process with two
    devices (`two_device_run`, never interrupted)."""
    workdir = tmp_path / "multi"
    outs = _run_pair(workdir, data_dir, {"LONGCTX_FAULT": "term:3"})
    for _out, err in outs:
        assert "Traceback" not in err, err[-3000:]
    summaries = [json.loads(out.strip().splitlines()[-1]) for out, _err in outs]
    assert [s["step"] for s in summaries] == [4, 4] and not summaries[0]["done"]
    assert "SIGTERM to another process: saved step 4" in outs[0][0]
    assert sorted(p.name for p in (workdir / "checkpoints").iterdir()) == ["4"]

    _run_pair(workdir, data_dir)
    np.testing.assert_allclose(_curve(workdir), _curve(device_runs[2]), rtol=1e-5, atol=1e-5)
    single = json.loads((device_runs[2] / "summary.json").read_text())
    multi = json.loads((workdir / "summary.json").read_text())
    assert multi["done"] and multi["params_sha256"] == single["params_sha256"]


def test_unreplicate_is_the_first_devices_copy_on_the_host():
    """What a save writes: each leaf's first local copy as numpy, dtype and shape kept (on
    several devices the copies differ, so a wrong device shows; the 2- and 4-device runs
    above save through it too)."""
    import jax
    import jax.numpy as jnp

    from longctx.train import parallel

    step = jax.pmap(lambda x: {"w": x * 2, "n": x.sum(), "h": (x + jax.lax.axis_index(
        parallel.AXIS)).astype(jnp.bfloat16)}, axis_name=parallel.AXIS)
    n = jax.local_device_count()
    out = step(jnp.arange(n * 3.0).reshape(n, 3))
    host = parallel.unreplicate(out)
    for key, want in {"w": [0.0, 2.0, 4.0], "n": 3.0, "h": [0.0, 1.0, 2.0]}.items():
        assert isinstance(host[key], np.ndarray) and host[key].dtype == out[key].dtype
        np.testing.assert_array_equal(host[key].astype(np.float32), want)
    assert parallel.unreplicate({"k": np.arange(4).reshape(2, 2)})["k"].tolist() == [0, 1]
