"""Bad input to `longctx train` is refused in one line before anything is written or
allocated: process flags, runs too large for memory, broken experiment files."""

import dataclasses

import jax
import numpy as np
import pytest

from longctx.config import ConfigError, parse_overrides
from longctx.errors import UserError
from longctx.models import archs, build_model, count_params, init_memory
from longctx.train import memory_fit
from longctx.train.parallel import PEER_TIMEOUT_S, peer_timeout, process_layout
from tests.conftest import SMOKE, run_cli, smoke_config


@pytest.mark.parametrize("flags, env, words", [
    ((None, 2, 5), {}, ["--process-id 5", "0..1"]),
    (("127.0.0.1:1234", 2, 5), {}, ["--process-id 5", "0..1"]),
    (("127.0.0.1:1234", 0, None), {}, ["--num-processes 0", ">= 1"]),
    (("127.0.0.1:1234", None, None), {"LONGCTX_NUM_PROCESSES": "two"},
     ["LONGCTX_NUM_PROCESSES='two'", "integer"]),
    ((None, None, None), {"LONGCTX_COORDINATOR": "h:1", "LONGCTX_PROCESS_ID": "x"},
     ["LONGCTX_PROCESS_ID='x'"]),
    ((None, 2, 0), {}, ["without a coordinator", "--coordinator"]),
    (("nohost", 2, 0), {}, ["--coordinator 'nohost'", "HOST:PORT"]),
])
def test_bad_process_flags_are_one_line(monkeypatch, flags, env, words):
    for name in ("LONGCTX_COORDINATOR", "LONGCTX_NUM_PROCESSES", "LONGCTX_PROCESS_ID"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(UserError) as err:
        process_layout(*flags)
    assert "\n" not in str(err.value)
    for w in words:
        assert w in str(err.value), str(err.value)


def test_good_process_flags(monkeypatch):
    for name in ("LONGCTX_COORDINATOR", "LONGCTX_NUM_PROCESSES", "LONGCTX_PROCESS_ID"):
        monkeypatch.delenv(name, raising=False)
    assert process_layout(None, None, None) is None
    assert process_layout("10.0.0.1:99", 2, 1) == ("10.0.0.1:99", 2, 1)
    monkeypatch.setenv("LONGCTX_NUM_PROCESSES", "4")
    assert process_layout("h:1", None, 3) == ("h:1", 4, 3)


def test_peer_timeout_from_flag_environment_or_default(monkeypatch):
    monkeypatch.delenv("LONGCTX_PEER_TIMEOUT", raising=False)
    assert peer_timeout(None) == PEER_TIMEOUT_S == 30
    monkeypatch.setenv("LONGCTX_PEER_TIMEOUT", "7")
    assert peer_timeout(None) == 7
    assert peer_timeout(12) == 12  # the flag wins
    for flag, env, words in ((0, "7", "--peer-timeout 0"), (None, "-3", "LONGCTX_PEER_TIMEOUT -3"),
                             (None, "soon", "LONGCTX_PEER_TIMEOUT='soon'")):
        monkeypatch.setenv("LONGCTX_PEER_TIMEOUT", env)
        with pytest.raises(UserError, match=words):
            peer_timeout(flag)


@pytest.mark.parametrize("overrides", [["model.arch=xl", "model.untie_r=true"],
                                       ["model.arch=window"],
                                       ["model.arch=rmt", "model.rmt.memory_gate=true"]])
def test_parameter_estimate_is_exact(tmp_path, overrides):
    cfg = smoke_config(tmp_path, *overrides)
    m = dataclasses.replace(cfg.model, n_token=cfg.data.vocab_size)
    model = build_model(m)
    shapes = jax.eval_shape(lambda: model.init(
        {"params": jax.random.PRNGKey(0)}, np.zeros((1, archs.tokens_per_step(m)), np.int32),
        init_memory(m, 1), np.zeros((1,), bool))["params"])
    assert memory_fit.num_params(m, m.n_token) == count_params(shapes)


def test_a_run_too_large_for_memory_is_refused_naming_the_key(tmp_path):
    devices = jax.local_devices()
    est = memory_fit.check_fits(smoke_config(tmp_path), devices)
    assert 0 < est.device < 64 * 2**20  # the smoke run: a few MiB
    for overrides, key in ((["model.xl.mem_len=1073741824"], "model.xl.mem_len"),
                           (["model.arch=window", "model.window.window=65536",
                             "model.window.seq_len=1048576"], "model.window.seq_len"),
                           (["data.vocab_size=2000000000"], "data.vocab_size")):
        with pytest.raises(ConfigError) as err:
            memory_fit.check_fits(parse_overrides(smoke_config(tmp_path), overrides), devices)
        msg = str(err.value)
        assert f"config key '{key}'" in msg and "memory" in msg and "\n" not in msg, msg


def test_cli_refuses_before_writing_anything(tmp_path):
    """The issue's cases end in one line and exit 2, and the workdir is never created (so
    the corrected command is not refused as a different run)."""
    typo = tmp_path / "typo.py"
    typo.write_text(SMOKE.read_text().replace("cfg.train.num_steps = 12",
                                              "cfg.train.num_step = 12"))
    line = 1 + SMOKE.read_text().split("\n").index("    cfg.train.num_steps = 12")
    cases = [
        (["--config", str(typo)], [f"{typo}', line {line}", "'train.num_step'"]),
        (["--config", str(SMOKE), f"data.data_dir={tmp_path / 'data'}",
          "model.xl.mem_len=1073741824"], ["'model.xl.mem_len'", "memory"]),
    ]
    for args, words in cases:
        workdir = tmp_path / "run"
        proc = run_cli(["train", "--workdir", str(workdir), *args], check=False, timeout=240)
        err = proc.stderr.strip()
        assert proc.returncode == 2 and len(err.splitlines()) == 1, proc.stderr[-2000:]
        assert err.startswith("longctx train: error: ")
        for w in words:
            assert w in err, err
        assert not workdir.exists() and not (tmp_path / "data").exists()
