"""Output through `logging`: the longctx loggers look like plain output, and the
libraries' WARNING lines are hidden unless -v."""

import json
import logging

from longctx import log
from tests.conftest import run_cli


def test_info_on_stdout_warnings_on_stderr_as_plain_lines(capsys):
    log.configure(verbose=True)
    log.configure()  # a second call replaces the first's handlers: each line comes once
    logging.getLogger("longctx.train.loop").info("step 2/4  loss 6.2")
    logging.getLogger("longctx.train.resume").warning("checkpoint step 12 is unreadable")
    logging.getLogger("longctx.cli").error("longctx train: error: bad")
    out, err = capsys.readouterr()
    assert out == "step 2/4  loss 6.2\n"
    assert err == "warning: checkpoint step 12 is unreadable\nlongctx train: error: bad\n"


def test_library_warnings_only_when_verbose():
    log.configure()
    assert not any(logging.getLogger(name).isEnabledFor(logging.WARNING)
                   for name in ("absl", "jax._src.xla_bridge", "orbax.checkpoint"))
    assert logging.getLogger("absl").isEnabledFor(logging.ERROR)
    log.configure(verbose=True)
    assert logging.getLogger("absl").isEnabledFor(logging.WARNING)


def test_info_prints_no_library_warnings_unless_verbose(tiny_run):
    quiet = run_cli(["info", "--workdir", str(tiny_run)])
    assert "WARNING" not in quiet.stderr and quiet.stderr.strip() == "", quiet.stderr
    assert json.loads(quiet.stdout)["step"] == 12
    loud = run_cli(["info", "--workdir", str(tiny_run), "-v"])
    assert "WARNING:absl:" in loud.stderr  # orbax's notes on opening checkpoints read-only
    assert loud.stdout == quiet.stdout


def test_verbose_sweep_passes_verbose_on_to_its_runs(tmp_path, monkeypatch):
    from longctx.train import sweep

    commands = []
    monkeypatch.setattr(sweep.subprocess, "run",
                        lambda cmd, timeout=None: commands.append(cmd) or
                        type("Done", (), {"returncode": 0})())
    config = str(sweep.Path(__file__).resolve().parents[1] / "experiments" / "smoke.py")
    for verbose in (False, True):
        log.configure(verbose=verbose)
        sweep.run_sweep(config, tmp_path / str(verbose), {"train.seed": ["0"]}, [])
    log.configure()
    assert ["-v" in cmd for cmd in commands] == [False, True]
