"""Shared test setup: offline, quiet, persistent JAX compilation cache."""

import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import jax  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
jax.config.update("jax_compilation_cache_dir", str(REPO / ".jax_cache"))
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)

FIXTURES = Path(__file__).resolve().parent / "fixtures"

import subprocess  # noqa: E402
import sys  # noqa: E402

import pytest  # noqa: E402

SMOKE = REPO / "experiments" / "smoke.py"


def load_script(name: str):
    """Import `experiments/NAME.py` as a module (the scripts are not a package)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, REPO / "experiments" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def size_configs(exp, spec) -> dict:
    """Each architecture's validated config at one of an experiment's sizes, with the batch
    the experiment gives it."""
    from longctx.config import parse_overrides
    from longctx.models.archs import check_run

    configs = {}
    for arch in exp.ARCHS:
        overrides = [*spec.overrides(), f"model.arch={arch}"]
        overrides += exp.batch_overrides(arch, spec.tokens_per_step, spec.overrides())
        cfg = parse_overrides(exp.get_config(), overrides)
        check_run(cfg)
        configs[arch] = cfg
    return configs


def subprocess_env(devices: int = 1, **extra: str) -> dict:
    """Environment for a child `longctx` process: offline, shared compile cache, N fake devices."""
    env = dict(os.environ)
    env.update({
        "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}",
        "JAX_PLATFORMS": "cpu",
        "JAX_COMPILATION_CACHE_DIR": str(REPO / ".jax_cache"),
        "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0.5",
        "PYTHONPATH": str(REPO),
    })
    env.update(extra)
    return env


def run_cli(args: list[str], *, devices: int = 1, timeout: float = 240, check: bool = True,
            env: dict | None = None) -> subprocess.CompletedProcess:
    """Run `python -m longctx.cli ARGS` in a child process, bounded by a timeout."""
    proc = subprocess.run([sys.executable, "-m", "longctx.cli", *args], cwd=REPO,
                          env=env or subprocess_env(devices), capture_output=True, text=True,
                          timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"longctx {' '.join(args)} exited {proc.returncode}:\n"
                             f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory) -> Path:
    """One directory of built datasets shared by every test of the session."""
    return tmp_path_factory.mktemp("datasets")


def smoke_config(data_dir: Path, *overrides: str):
    """experiments/smoke.py with the session's data directory and extra overrides."""
    from longctx.config import load_experiment, parse_overrides

    return parse_overrides(load_experiment(SMOKE), [f"data.data_dir={data_dir}", *overrides])


def _train_tiny(tmp_path_factory, data_dir: Path, name: str, *overrides: str) -> Path:
    from longctx.train.loop import train

    workdir = tmp_path_factory.mktemp(name) / "run"
    train(smoke_config(data_dir, *overrides), workdir)
    return workdir


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory, data_dir) -> Path:
    """A trained smoke XL run directory, shared by the evaluation and chat tests."""
    return _train_tiny(tmp_path_factory, data_dir, "tiny_xl", "model.arch=xl")


@pytest.fixture(scope="session")
def tiny_window_run(tmp_path_factory, data_dir) -> Path:
    """A trained smoke sliding-window run directory."""
    return _train_tiny(tmp_path_factory, data_dir, "tiny_window", "model.arch=window")


@pytest.fixture(scope="session")
def tiny_vanilla_run(tmp_path_factory, data_dir) -> Path:
    """A trained smoke vanilla (fixed-context) run directory."""
    return _train_tiny(tmp_path_factory, data_dir, "tiny_vanilla", "model.arch=vanilla")
