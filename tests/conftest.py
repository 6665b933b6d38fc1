"""Shared test setup: offline, quiet, fast XLA compilation, persistent JAX compilation cache."""

import os
from pathlib import Path

# The tests' models are tiny: XLA spends far longer optimising their programs than running
# them. These options halve the suite's CPU time (measured on tests/test_models_xl.py: 53 s
# -> 25 s, cold cache). They change no semantics (float32 stays IEEE float32; no fast-math),
# and every test process (this one, its xdist siblings and the `longctx` children started
# through `subprocess_env`) compiles with the same options, so numbers compared bit for
# bit across processes stay comparable. Users' runs keep XLA's defaults.
FAST_COMPILE_XLA_FLAGS = ("--xla_backend_optimization_level=0 "
                          "--xla_llvm_disable_expensive_passes=true "
                          "--xla_cpu_use_fusion_emitters=false "
                          "--xla_cpu_parallel_codegen_split_count=1")
if FAST_COMPILE_XLA_FLAGS not in os.environ.get("XLA_FLAGS", ""):  # xdist workers inherit it
    os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {FAST_COMPILE_XLA_FLAGS}".strip()
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import jax  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
jax.config.update("jax_compilation_cache_dir", str(REPO / ".jax_cache"))
# Every compiled program is cached, however quick to compile: a new process (each `longctx`
# child) otherwise compiles again each small program its eager start-up runs (parameter
# and optimiser initialisation: ~7 s of a fresh smoke training's start on this machine, 1.7 s
# from the cache).
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
# Lowering writes each operation's full Python traceback into the program as its location;
# the suite does not read them, and building them took ~30% of a model test file's time.
jax.config.update("jax_include_full_tracebacks_in_locations", False)

FIXTURES = Path(__file__).resolve().parent / "fixtures"

import fcntl  # noqa: E402
import json  # noqa: E402
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
    for arch in spec.arch_names():
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
        "XLA_FLAGS": f"{FAST_COMPILE_XLA_FLAGS} --xla_force_host_platform_device_count={devices}",
        "JAX_PLATFORMS": "cpu",
        "JAX_COMPILATION_CACHE_DIR": str(REPO / ".jax_cache"),
        "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
        "JAX_INCLUDE_FULL_TRACEBACKS_IN_LOCATIONS": "false",
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


def run_main(args: list[str], capsys, code: int = 0):
    """Run `longctx ARGS` in this process (the command's own `main`, where the process
    boundary is not what a test checks: no interpreter start or JAX import to pay);
    asserts its exit status, returns what it printed (`capsys.readouterr()`)."""
    from longctx.cli import main

    capsys.readouterr()
    status = main(args)
    out = capsys.readouterr()
    if status != code:
        raise AssertionError(f"longctx {' '.join(args)} exited {status}, not {code}:\n"
                             f"{out.out[-3000:]}\n{out.err[-3000:]}")
    return out


def shared_path(tmp_path_factory, name: str, build=None) -> Path:
    """`name` under the session's temporary root, shared by every pytest-xdist worker of
    the session: the first worker to get here runs `build(path)` (others wait on a file
    lock), later ones reuse the result. Without xdist the root is this session's basetemp."""
    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent  # the workers' basetemps are siblings under one session root
    path = root / name
    done = root / f"{name}.done"
    with open(root / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        if not done.exists():
            if build is None:
                path.mkdir(parents=True, exist_ok=True)
            else:
                build(path)
            done.touch()
    return path


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory) -> Path:
    """One directory of built datasets shared by every test of the session and every xdist
    worker (concurrent builds of one dataset are safe, `longctx.data.dataset`). The smoke
    dataset, which most tests train on, is built first, once, while other workers wait."""

    def build(path: Path) -> None:
        from longctx.data import prepare_dataset

        prepare_dataset(smoke_config(path).data)

    return shared_path(tmp_path_factory, "datasets", build)


def smoke_config(data_dir: Path, *overrides: str):
    """experiments/smoke.py with the session's data directory and extra overrides."""
    from longctx.config import load_experiment, parse_overrides

    return parse_overrides(load_experiment(SMOKE), [f"data.data_dir={data_dir}", *overrides])


def _train_tiny(tmp_path_factory, data_dir: Path, name: str, *overrides: str) -> Path:
    """A smoke run trained once per session (shared by the xdist workers); tests read it,
    and copy it before changing anything in it."""
    from longctx.train.loop import train

    def build(root: Path) -> None:
        train(smoke_config(data_dir, *overrides), root / "run")

    return shared_path(tmp_path_factory, name, build) / "run"


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory, data_dir) -> Path:
    """A trained smoke XL run directory, shared by the evaluation and chat tests."""
    return _train_tiny(tmp_path_factory, data_dir, "tiny_xl", "model.arch=xl")


def warm_started_run(tmp_path_factory, data_dir: Path, source: Path, name: str,
                     *overrides: str) -> Path:
    """A smoke run started from `source`'s parameters (`train.init_from`), trained once per
    session under `name` (shared by the xdist workers: copy it before changing it)."""
    return _train_tiny(tmp_path_factory, data_dir, name, *overrides, f"train.init_from={source}")


def run_info(workdir: Path, capsys) -> dict:
    """`longctx info --workdir WORKDIR`'s JSON (the command's `main`, in this process)."""
    return json.loads(run_main(["info", "--workdir", str(workdir)], capsys).out.strip()
                      .splitlines()[-1])


@pytest.fixture(scope="session")
def tiny_window_run(tmp_path_factory, data_dir) -> Path:
    """A trained smoke sliding-window run directory."""
    return _train_tiny(tmp_path_factory, data_dir, "tiny_window", "model.arch=window")


@pytest.fixture(scope="session")
def two_device_run(tmp_path_factory, data_dir) -> Path:
    """The smoke XL run (as `tiny_run`) trained on 2 fake devices in a child process, logged
    every step, checkpointed every 4 steps; shared: copy it before changing it."""

    def build(root: Path) -> None:
        run_cli(["train", "--config", str(SMOKE), "--workdir", str(root / "run"),
                 f"data.data_dir={data_dir}", "train.log_every=1", "checkpoint.every_steps=4"],
                devices=2, timeout=300)

    return shared_path(tmp_path_factory, "two_devices", build) / "run"


@pytest.fixture(scope="session")
def tiny_vanilla_run(tmp_path_factory, data_dir) -> Path:
    """A trained smoke vanilla (fixed-context) run directory."""
    return _train_tiny(tmp_path_factory, data_dir, "tiny_vanilla", "model.arch=vanilla")


# Files that take longest (subprocess trainings, multi-process runs, timeouts waited out),
# longest first: pytest-xdist hands whole files to its workers in collection order, so
# starting these first keeps one long file from running alone at the end.
SLOW_FILES = ("test_train_parallel.py", "test_gpu_scripts.py", "test_arch_plugin.py",
              "test_comparison_jobs.py", "test_experiments.py",
              "test_train_resume.py", "test_machine_limits.py", "test_train_resume_safety.py",
              "test_train_signals.py", "test_train_loop.py", "test_damaged_run_files.py",
              "test_generate_chat.py", "test_run_owner.py", "test_eval_evaluate.py")


def pytest_collection_modifyitems(config, items):
    """Slow files first (SLOW_FILES order), then the rest as collected; a file's tests
    stay together and in order."""
    rank = {name: k for k, name in enumerate(SLOW_FILES)}
    order = {id(item): k for k, item in enumerate(items)}
    items.sort(key=lambda item: (rank.get(item.path.name, len(rank)), order[id(item)]))
