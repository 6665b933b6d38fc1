"""The training loop: schedules pmapped steps, logs, checkpoints, resumes exactly.

`train` reads as its steps: check that the run can start (before anything is written),
make the dataset, build the state or restore the latest checkpoint's, run the steps,
write the summary.

Exact resume: everything the next step depends on (parameters, optimiser state, step,
PRNG key, every lane's memory and the data iterators' positions) is in each checkpoint,
and the step is a pure function of it; so a run killed at any moment and restarted from
its latest checkpoint ends bit-identical to an uninterrupted one (same device count).
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import time
from dataclasses import asdict, dataclass, replace
from functools import lru_cache
from pathlib import Path
from typing import Any

import jax
import numpy as np

from longctx.config import Config, ConfigError, OptimConfig
from longctx.errors import UserError
from longctx.rundir.lock import RunLock
from longctx.train import checkpoint, memory_fit, parallel, profiling, resume, validation, warm_start
from longctx.train.interrupts import StopSignals, fault_after_step, fault_point, kill_self
from longctx.train.limits import stop_at_limits
from longctx.train.metrics import MetricsWriter
from longctx.train.optimizer import learning_rate_schedule, make_optimizer
from longctx.train.step import TrainState, make_train_step

log = logging.getLogger(__name__)


class TrainingDiverged(UserError):
    """The loss became NaN or infinite."""


def train(cfg: Config, workdir: str | Path) -> dict:
    """Train `cfg` in `workdir`, resuming from its latest checkpoint; return the summary."""
    # One owner per run directory (process 0 of a multi-process run holds it for all).
    with RunLock(workdir, "train", enabled=jax.process_index() == 0) as lock:
        workdir = lock.workdir
        topo = _check_can_start(cfg, workdir)
        ds = _prepare_data(cfg, topo)
        # From here on SIGINT and SIGTERM stop the loop cleanly (compilation, restore and the
        # steps are never cut half-way); before, Ctrl-C stops a data build like any command.
        with StopSignals() as stop, stop_at_limits(workdir, topo.is_primary):
            run = _build_or_restore(_with_vocab(cfg, ds), workdir, ds, topo)
            step, started = _run_steps(run, stop)
            return _finish(run, step, started)


def _check_can_start(cfg: Config, workdir: Path) -> parallel.Topology:
    """Refuse, before anything is allocated or written, a config these devices cannot run,
    a run that cannot fit in memory, or a workdir trained with trajectory-changing settings."""
    from longctx.models import archs

    topo = parallel.topology(cfg.train.batch_size)
    archs.check_run(cfg, num_devices=topo.num_local, num_processes=topo.process_count)
    memory_fit.check_fits(cfg, list(topo.local_devices), topo.process_count)
    resume.check_workdir_config(workdir, cfg)
    return topo


def _prepare_data(cfg: Config, topo: parallel.Topology) -> Any:
    """The dataset and tokenizer: the primary process builds them (if missing) while the
    others wait, then every process opens them."""
    from longctx.data import prepare_dataset

    if topo.is_primary:
        ds = prepare_dataset(cfg.data)
    if topo.process_count > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices("longctx-dataset-ready")
    if not topo.is_primary:
        ds = prepare_dataset(cfg.data)
    return ds


def _with_vocab(cfg: Config, ds: Any) -> Config:
    """`cfg` with model.n_token taken from the tokenizer when 0 (too small: refused)."""
    if cfg.model.n_token == 0:
        return replace(cfg, model=replace(cfg.model, n_token=ds.vocab_size))
    if cfg.model.n_token < ds.vocab_size:
        raise ConfigError(f"config key 'model.n_token': {cfg.model.n_token} is smaller than the "
                          f"tokenizer's {ds.vocab_size}; use 0 to take it from the tokenizer")
    return cfg


def _write_run_files(workdir: Path, cfg: Config, tokenizer_dir: Path,
                     source: warm_start.Source | None) -> None:
    """config.json (the resolved config), the dataset's tokenizer and, on a warm start's
    first step, init_from.json; each written atomically."""
    workdir.mkdir(parents=True, exist_ok=True)
    if source is not None:
        warm_start.write_record(workdir, source)
    tmp = workdir / "config.json.tmp"
    tmp.write_text(cfg.to_json())
    tmp.replace(workdir / "config.json")
    if not (workdir / "tokenizer").exists():
        shutil.copytree(tokenizer_dir, workdir / "tokenizer.tmp", dirs_exist_ok=True)
        (workdir / "tokenizer.tmp").replace(workdir / "tokenizer")


@dataclass
class _HostState:
    """Parameters, optimiser state, dropout key and this process's lanes' memory, on the host."""
    params: Any
    opt_state: Any
    rng: np.ndarray
    memory: Any


def _fresh_state(cfg: Config, num_lanes: int, num_steps: int) -> _HostState:
    """The state of step 0 (also the shape templates a checkpoint is restored into)."""
    from longctx.models import init_memory

    init_key, dropout_key = jax.random.split(jax.random.PRNGKey(cfg.train.seed))
    params, opt_state = jax.tree.map(np.asarray, _initializer(
        cfg.model, _optim_key(cfg.optim), num_steps)(init_key))
    memory = jax.tree.map(np.asarray, init_memory(cfg.model, num_lanes))
    return _HostState(params, opt_state, np.asarray(dropout_key), memory)


def _optim_key(optim: OptimConfig) -> tuple:
    """The optimiser config as a hashable key of the process's cached programs."""
    return tuple(sorted(asdict(optim).items()))


@lru_cache(maxsize=4)
def _initializer(model_cfg: Any, optim_items: tuple, num_steps: int) -> Any:
    """key -> (parameters, optimiser state) of step 0, as one jitted program (as flax's
    examples initialise): run eagerly, `init` dispatches each operation of the forward pass
    as its own small program (~150 for the smoke XL, ~2 s of a fresh process's start-up,
    12 s at the README size). Cached like the step, for the process's later runs."""
    from longctx.models import archs, build_model, init_memory

    model = build_model(model_cfg)
    optimizer = make_optimizer(OptimConfig(**dict(optim_items)), num_steps)
    dummy = np.zeros((1, archs.tokens_per_step(model_cfg)), np.int32)
    memory, reset = init_memory(model_cfg, 1), np.zeros((1,), bool)

    @jax.jit
    def initialize(key: jax.Array) -> tuple[Any, Any]:
        params = model.init({"params": key}, dummy, memory, reset)["params"]
        return params, optimizer.init(params)

    return initialize


@lru_cache(maxsize=4)
def _optimizer_init(optim_items: tuple, num_steps: int) -> Any:
    """params -> the optimiser's state of step 0, jitted (a warm start's fresh state)."""
    return jax.jit(make_optimizer(OptimConfig(**dict(optim_items)), num_steps).init)


@dataclass
class _Run:
    """A run ready to step: its config, data lanes, checkpoints and state on the devices."""
    cfg: Config
    workdir: Path
    topo: parallel.Topology
    num_steps: int
    start: int  # the step this process starts from (0, or the restored one)
    lanes: Any
    manager: Any
    stateful: bool  # the architecture carries state between steps: it is checkpointed
    p_step: Any
    traces: list[int]  # how many times the step was traced in this process
    traces_before: int  # ... before this run started (a step shared with an earlier run)
    state: Any  # TrainState, replicated on the local devices
    mem_dev: Any  # this process's lanes' memory, sharded over the local devices
    lane_ids: np.ndarray

    def save(self, step: int) -> None:
        """Checkpoint the state after `step` (asynchronously when checkpoint.async_save)."""
        host_state = parallel.unreplicate(self.state)
        checkpoint.save(self.manager, step, params=host_state.params,
                        opt_state=host_state.opt_state, rng=host_state.rng,
                        memory=(parallel.memory_from_devices(self.mem_dev) if self.stateful
                                else None),
                        data_state=self.lanes.get_state(), cfg=self.cfg, topo=self.topo)


def _build_or_restore(cfg: Config, workdir: Path, ds: Any, topo: parallel.Topology) -> _Run:
    """Model, optimiser, data lanes and state: fresh, or the latest readable checkpoint's.
    The run files (config.json, tokenizer/) are written only once a resume is accepted, so
    a refused one leaves the run directory as it was."""
    from longctx.data import make_lanes
    from longctx.models import archs, init_memory

    arch = archs.get(cfg.model)
    num_steps = archs.resolved_steps(cfg)
    host = _fresh_state(cfg, len(topo.process_lanes), num_steps)
    source = None  # read on the first start only: a resume never needs the source again
    if cfg.train.init_from and not warm_start.has_checkpoints(workdir):
        source = warm_start.read_source(cfg, ds.tokenizer_dir)
        params = warm_start.merge(host.params, source)
        opt_state = _optimizer_init(_optim_key(cfg.optim), num_steps)(params)
        host = _HostState(params, jax.tree.map(np.asarray, opt_state), host.rng, host.memory)
        if topo.is_primary:
            log.info(f"starting from {source.path} step {source.step} ({source.arch})")
    lanes = make_lanes(ds, "train", cfg.train.batch_size, arch.tokens_per_step(cfg.model),
                       mode=arch.lane_mode, lane_ids=topo.process_lanes, seed=cfg.train.seed)

    manager = checkpoint.make_manager(workdir, cfg.checkpoint.keep, cfg.checkpoint.async_save)
    stateful = arch.carries_state(cfg.model)
    memory_global = (jax.tree.map(np.asarray, init_memory(cfg.model, cfg.train.batch_size))
                     if stateful else None)
    restored = checkpoint.restore_latest(manager, params=host.params, opt_state=host.opt_state,
                                         rng=host.rng, memory_global=memory_global, topo=topo,
                                         cfg=cfg)
    if topo.is_primary:
        _write_run_files(workdir, cfg, ds.tokenizer_dir, source)
    start = 0
    if restored is not None:
        start = restored.step
        host = _HostState(restored.params, restored.opt_state, restored.rng,
                          restored.memory if stateful else host.memory)
        lanes.set_state(restored.data_state)
        if topo.is_primary:
            log.info(f"resumed from step {start} ({workdir})")

    p_step, traces = _step_for(cfg, num_steps)
    state, mem_dev = _to_devices(host, start, topo)
    return _Run(cfg=cfg, workdir=workdir, topo=topo, num_steps=num_steps, start=start,
                lanes=lanes, manager=manager, stateful=stateful, p_step=p_step, traces=traces,
                traces_before=traces[0],
                state=state, mem_dev=mem_dev,
                lane_ids=topo.process_lanes.reshape(topo.num_local, -1))


def _to_devices(host: _HostState, start: int, topo: parallel.Topology) -> tuple[Any, Any]:
    """The state replicated and the memory sharded over the local devices, placed the way
    the step returns them (so step 2 does not compile a second version)."""
    state = parallel.to_devices(parallel.replicate(
        TrainState(np.asarray(start, np.int32), host.params, host.opt_state, host.rng), topo))
    return state, parallel.to_devices(parallel.memory_to_devices(host.memory, topo))


def _step_for(cfg: Config, num_steps: int) -> tuple[Any, list[int]]:
    """The step of `cfg` pmapped over the local devices (state and memory donated), and a
    counter of its traces (Python runs once per trace). Shared by the process's runs of the
    same model, optimiser and number of steps (what the step closes over): a second
    training in one process (a notebook, a script that trains several seeds, the tests)
    reuses the traced step instead of tracing and lowering it again."""
    return _pmapped_step(cfg.model, _optim_key(cfg.optim), num_steps)


@lru_cache(maxsize=4)
def _pmapped_step(model_cfg: Any, optim_items: tuple, num_steps: int) -> tuple[Any, list[int]]:
    from longctx.models import build_model

    optim = OptimConfig(**dict(optim_items))
    schedule = learning_rate_schedule(optim, max(num_steps // optim.grad_accum, 1))
    step_fn = make_train_step(build_model(model_cfg), make_optimizer(optim, num_steps),
                              schedule, optim.grad_accum)
    traces = [0]

    def counted_step(*args):
        traces[0] += 1
        return step_fn(*args)

    return jax.pmap(counted_step, axis_name="data", donate_argnums=(0, 1)), traces


@dataclass
class _Pending:
    step: int
    metrics: Any
    time: float


class _Progress:
    """Steps whose metrics are still on the devices, and the throughput window they are
    timed over; `flush` waits on them and logs the rows that are due."""

    def __init__(self, writer: MetricsWriter, cfg: Config, num_steps: int) -> None:
        self.writer, self.cfg, self.num_steps = writer, cfg, num_steps
        self.pending: list[_Pending] = []
        from longctx.models import archs

        self.tokens_per_step = cfg.train.batch_size * archs.tokens_per_step(cfg.model)
        self.window_start, self.window_tokens = time.time(), 0

    def record(self, step: int, metrics: Any) -> None:
        self.window_tokens += self.tokens_per_step
        self.pending.append(_Pending(step, metrics, time.time()))

    def restart_window(self) -> None:
        """Leave the time a save took out of the next throughput figure."""
        self.window_start = time.time()

    def flush(self) -> None:
        """Wait on the queued steps' metrics, stop on a non-finite loss, log the due rows."""
        host = jax.device_get([p.metrics for p in self.pending])
        now = time.time()
        elapsed = max(now - self.window_start, 1e-9)
        tokens_per_sec = self.window_tokens / elapsed
        step_time = elapsed / max(len(self.pending), 1)
        for p, m in zip(self.pending, host, strict=True):
            loss = float(m["loss"][0])
            if not math.isfinite(loss):
                raise TrainingDiverged(f"loss is {loss} at step {p.step}; the last good "
                                       "checkpoint is kept; lower optim.learning_rate or check "
                                       "the data")
            if p.step % self.cfg.train.log_every == 0 or p.step == self.num_steps:
                self.writer.write({
                    "step": p.step,
                    "loss": loss,
                    "perplexity": math.exp(min(loss, 50.0)),
                    "lr": float(m["lr"][0]),
                    "grad_norm": float(m["grad_norm"][0]),
                    "tokens": float(m["tokens"][0]),
                    "tokens_per_sec": tokens_per_sec,
                    "step_time": step_time,
                })
        self.pending.clear()
        self.window_start, self.window_tokens = now, 0


def _run_steps(run: _Run, stop: StopSignals) -> tuple[int, float]:
    """Step until num_steps or a stop signal, logging and saving on schedule; returns the
    step reached and when the steps started. Waits for the last save before returning."""
    cfg = run.cfg
    writer = MetricsWriter(run.workdir, run.start, run.num_steps, enabled=run.topo.is_primary)
    progress = _Progress(writer, cfg, run.num_steps)
    validator = validation.for_run(cfg, run.workdir, writer, run.num_steps)  # None: off
    profiler = profiling.for_run(cfg, run.workdir, run.topo.is_primary, run.start)
    fault = fault_point()
    step = saved = run.start
    started = time.time()
    try:
        # A stop signal counts once every process has seen it (at once on one process).
        stopping = stop.agreed(step, cfg.train.host_sync_every, run.topo.process_count)
        if run.num_steps == 0 and step == 0:  # init_from, no training: the source's params
            run.save(0)
        while step < run.num_steps and not stopping:
            profiler.before(step + 1)
            batch = parallel.shard_batch(next(run.lanes), run.topo.num_local)
            run.state, run.mem_dev, metrics = run.p_step(run.state, run.mem_dev, batch,
                                                         run.lane_ids)
            step += 1
            profiler.after(step, run.state)
            progress.record(step, metrics)
            fault_after_step(fault, step)
            stopping = stop.agreed(step, cfg.train.host_sync_every, run.topo.process_count)
            save_now = step % cfg.checkpoint.every_steps == 0 or step == run.num_steps
            save_now = save_now or stopping
            if (step % cfg.train.host_sync_every == 0 or step % cfg.train.log_every == 0
                    or save_now):
                progress.flush()
            if validator is not None and validator.due(step):  # before the step's save
                progress.flush()
                validator.run(step, parallel.unreplicate(run.state.params))
                progress.restart_window()
            if save_now:
                run.save(step)
                saved = step
                if fault == ("save", step):
                    kill_self()
                progress.restart_window()
        if stopping:
            _stop_early(run, progress, step, saved, stop.signal)
    finally:
        profiler.close()
        try:
            run.manager.wait_until_finished()
        finally:  # even after a failed save: its threads end before anything is cleaned
            try:
                run.manager.close()
            finally:
                writer.close()
    return step, started


def _stop_early(run: _Run, progress: _Progress, step: int, saved: int, signal_name: str) -> None:
    """After SIGINT/SIGTERM: save the steps since the last checkpoint, say how to resume."""
    if step > saved:  # the signal came between a step's save check and the next
        progress.flush()
        run.save(step)
    if run.topo.is_primary:
        what = (f"saved step {step}" if step > run.start
                else f"stopped before the first step (step {step} is as it was)")
        log.info(f"{signal_name}: {what}; rerun the same command to resume")


def _finish(run: _Run, step: int, started: float) -> dict:
    """This process's summary; the primary process also writes it to summary.json."""
    from longctx.models import archs, count_params

    cfg = run.cfg
    final = parallel.unreplicate(run.state)
    summary = {
        "config_name": cfg.name,
        "arch": cfg.model.arch,
        "span": archs.span(cfg.model),
        "seed": cfg.train.seed,
        "step": step,
        "num_steps": run.num_steps,
        "done": step >= run.num_steps,
        "train_tokens": step * cfg.train.batch_size * archs.tokens_per_step(cfg.model),
        "num_params": count_params(final.params),
        "params_sha256": params_sha256(final.params),
        "session_seconds": round(time.time() - started, 2),
        # traces of the step in this run: 1 (static shapes: compiled once), or 0 when an
        # earlier run of this process with the same config had traced it; more: a recompile
        "step_traces": run.traces[0] - run.traces_before,
    }
    started_from = warm_start.read_record(run.workdir)
    if started_from is not None:
        summary["init_from"] = started_from
    if run.topo.is_primary:
        tmp = run.workdir / "summary.json.tmp"
        tmp.write_text(json.dumps(summary, indent=2, sort_keys=True))
        tmp.replace(run.workdir / "summary.json")
    return summary


def params_sha256(params: Any) -> str:
    """SHA-256 of the parameters' float32 bytes, leaves in sorted path order (one copy)."""
    import hashlib

    flat = jax.tree_util.tree_flatten_with_path(params)[0]
    digest = hashlib.sha256()
    for path, leaf in sorted(flat, key=lambda kv: jax.tree_util.keystr(kv[0])):
        digest.update(jax.tree_util.keystr(path).encode())
        digest.update(np.ascontiguousarray(np.asarray(leaf, np.float32)).tobytes())
    return digest.hexdigest()
