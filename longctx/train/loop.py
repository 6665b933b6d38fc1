"""The training loop: schedules pmapped steps, logs, checkpoints, resumes exactly.

Exact resume: everything the next step depends on (parameters, optimiser state, step,
PRNG key, every lane's memory and the data iterators' positions) is in each checkpoint,
and the step is a pure function of it; so a run killed at any moment and restarted from
its latest checkpoint ends bit-identical to an uninterrupted one (same device count).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import jax
import numpy as np

from longctx.config import Config, ConfigError, resolved_steps, validate
from longctx.errors import UserError
from longctx.train import budget, checkpoint, parallel, resume
from longctx.train.metrics import MetricsWriter
from longctx.train.optimizer import learning_rate_schedule, make_optimizer
from longctx.train.step import TrainState, make_train_step

# Test hook for fault injection: "step:N" SIGKILLs the process after step N is dispatched;
# "save:N" SIGKILLs it right after the async save of step N has started; "term:N" sends
# it SIGTERM after step N (as a scheduler's preemption would), "int:N" SIGINT (Ctrl-C).
FAULT_ENV = "LONGCTX_FAULT"


class TrainingDiverged(UserError):
    """The loss became NaN or infinite."""


def resolve_num_steps(cfg: Config) -> int:
    """Steps for the configured budget: a token budget (fair across models) wins over num_steps."""
    return resolved_steps(cfg)


def _write_run_files(workdir: Path, cfg: Config, tokenizer_dir: Path) -> None:
    """config.json (the resolved config) and the dataset's tokenizer, each written atomically."""
    workdir.mkdir(parents=True, exist_ok=True)
    tmp = workdir / "config.json.tmp"
    tmp.write_text(cfg.to_json())
    tmp.replace(workdir / "config.json")
    if not (workdir / "tokenizer").exists():
        shutil.copytree(tokenizer_dir, workdir / "tokenizer.tmp", dirs_exist_ok=True)
        (workdir / "tokenizer.tmp").replace(workdir / "tokenizer")


def _fault_point() -> tuple[str, int] | None:
    spec = os.environ.get(FAULT_ENV, "")
    if not spec:
        return None
    kind, _, n = spec.partition(":")
    return kind, int(n)


def _kill_self() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


class StopSignals:
    """SIGINT and SIGTERM alike ask the training loop to stop after the current step (which
    it saves); a second SIGINT interrupts at once. Installed only in the main thread."""

    def __init__(self) -> None:
        self.signal: str | None = None
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, _frame: Any) -> None:
        if self.signal is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.signal = signal.Signals(signum).name

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            self._previous = {s: signal.signal(s, self._handle)
                              for s in (signal.SIGINT, signal.SIGTERM)}
        return self

    def __exit__(self, *exc: Any) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)


@dataclass
class _Pending:
    step: int
    metrics: Any
    time: float


def train(cfg: Config, workdir: str | Path) -> dict:
    """Train `cfg` in `workdir`, resuming from its latest checkpoint; return the summary."""
    from longctx.data import prepare_dataset

    workdir = Path(workdir)
    topo = parallel.topology(cfg.train.batch_size)
    validate(cfg, num_devices=topo.num_local, num_processes=topo.process_count)
    budget.check_fits(cfg, list(topo.local_devices), topo.process_count)  # before any allocation
    resume.check_workdir_config(workdir, cfg)

    if topo.is_primary:
        ds = prepare_dataset(cfg.data)
    if topo.process_count > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices("longctx-dataset-ready")
    if not topo.is_primary:
        ds = prepare_dataset(cfg.data)
    # From here on SIGINT and SIGTERM stop the loop cleanly (compilation, restore and the
    # steps are never cut half-way); before, Ctrl-C stops a data build like any command.
    with StopSignals() as stop:
        return _train(cfg, workdir, ds, topo, stop)


def _train(cfg: Config, workdir: Path, ds: Any, topo: parallel.Topology,
           stop: StopSignals) -> dict:
    """The part of `train` after the dataset is ready: restore, compile, step, save."""
    from longctx.data import make_lanes
    from longctx.models import build_model, count_params, init_memory

    if cfg.model.n_token == 0:
        cfg = replace(cfg, model=replace(cfg.model, n_token=ds.vocab_size))
    elif cfg.model.n_token < ds.vocab_size:
        raise ConfigError(f"config key 'model.n_token': {cfg.model.n_token} is smaller than the "
                          f"tokenizer's {ds.vocab_size}; use 0 to take it from the tokenizer")

    num_steps = resolve_num_steps(cfg)
    seg_len = cfg.model.row_len
    model = build_model(cfg.model)
    optimizer = make_optimizer(cfg.optim, num_steps)
    schedule = learning_rate_schedule(cfg.optim, max(num_steps // cfg.optim.grad_accum, 1))

    # Fresh state (also the shape templates for restoring).
    lanes_here = len(topo.process_lanes)
    init_key, dropout_key = jax.random.split(jax.random.PRNGKey(cfg.train.seed))
    dummy = np.zeros((1, seg_len), np.int32)
    params = model.init({"params": init_key}, dummy, init_memory(cfg.model, 1),
                        np.zeros((1,), bool))["params"]
    params = jax.tree.map(np.asarray, params)
    opt_state = jax.tree.map(np.asarray, optimizer.init(params))
    rng = np.asarray(dropout_key)
    memory = init_memory(cfg.model, lanes_here)
    memory = None if memory is None else jax.tree.map(np.asarray, memory)
    lanes = make_lanes(ds, "train", cfg.train.batch_size, seg_len,
                       mode="segments" if cfg.model.arch == "xl" else "sequences",
                       lane_ids=topo.process_lanes, seed=cfg.train.seed)

    manager = checkpoint.make_manager(workdir, cfg.checkpoint.keep, cfg.checkpoint.async_save)
    # Only XL carries state between steps; the others' (empty) memory is not checkpointed.
    stateful = cfg.model.arch == "xl" and cfg.model.mem_len > 0
    memory_global = (jax.tree.map(np.asarray, init_memory(cfg.model, cfg.train.batch_size))
                     if stateful else None)
    restored = checkpoint.restore_latest(manager, params=params, opt_state=opt_state, rng=rng,
                                         memory_global=memory_global, topo=topo, cfg=cfg)
    if topo.is_primary:  # only now: a refused resume leaves the run directory as it was
        _write_run_files(workdir, cfg, ds.tokenizer_dir)
    start = 0
    if restored is not None:
        start = restored.step
        params, opt_state, rng = restored.params, restored.opt_state, restored.rng
        memory = restored.memory if stateful else memory
        lanes.set_state(restored.data_state)
        if topo.is_primary:
            print(f"resumed from step {start} ({workdir})", flush=True)

    step_fn = make_train_step(model, optimizer, schedule, cfg.optim.grad_accum)
    traces = [0]  # Python runs once per trace: more than one would mean a recompilation

    def counted_step(*args):
        traces[0] += 1
        return step_fn(*args)

    p_step = jax.pmap(counted_step, axis_name="data", donate_argnums=(0, 1))
    # Placed the way the step returns them, so step 2 does not compile a second version.
    state = parallel.to_devices(
        parallel.replicate(TrainState(np.asarray(start, np.int32), params, opt_state, rng), topo))
    mem_dev = parallel.to_devices(parallel.memory_to_devices(memory, topo))
    lane_ids = topo.process_lanes.reshape(topo.num_local, -1)

    writer = MetricsWriter(workdir, start, num_steps, enabled=topo.is_primary)
    fault = _fault_point()
    pending: list[_Pending] = []
    window_start, window_tokens = time.time(), 0
    tokens_per_step = cfg.train.batch_size * seg_len
    step = saved = start
    started = time.time()

    def save() -> None:
        host_state = parallel.unreplicate(state)
        checkpoint.save(manager, step, params=host_state.params,
                        opt_state=host_state.opt_state, rng=host_state.rng,
                        memory=parallel.memory_from_devices(mem_dev) if stateful else None,
                        data_state=lanes.get_state(), cfg=cfg, topo=topo)

    try:
        while step < num_steps and stop.signal is None:
            batch = parallel.shard_batch(next(lanes), topo.num_local)
            state, mem_dev, metrics = p_step(state, mem_dev, batch, lane_ids)
            step += 1
            window_tokens += tokens_per_step
            pending.append(_Pending(step, metrics, time.time()))
            if fault == ("step", step):
                _kill_self()
            if fault is not None and fault[0] in ("term", "int") and fault[1] == step:
                os.kill(os.getpid(), signal.SIGTERM if fault[0] == "term" else signal.SIGINT)
            save_now = step % cfg.checkpoint.every_steps == 0 or step == num_steps
            save_now = save_now or stop.signal is not None
            if (step % cfg.train.host_sync_every == 0 or step % cfg.train.log_every == 0
                    or save_now):
                window_start, window_tokens = _flush(pending, writer, cfg, num_steps,
                                                     window_start, window_tokens)
            if save_now:
                save()
                saved = step
                if fault == ("save", step):
                    _kill_self()
                window_start = time.time()
        if stop.signal is not None:
            if step > saved:  # the signal came between a step's save check and the next
                window_start, window_tokens = _flush(pending, writer, cfg, num_steps,
                                                     window_start, window_tokens)
                save()
            if topo.is_primary:
                what = (f"saved step {step}" if step > start
                        else f"stopped before the first step (step {step} is as it was)")
                print(f"{stop.signal}: {what}; rerun the same command to resume", flush=True)
    finally:
        manager.wait_until_finished()
        manager.close()
        writer.close()

    final = parallel.unreplicate(state)
    summary = {
        "config_name": cfg.name,
        "arch": cfg.model.arch,
        "span": cfg.model.span,
        "seed": cfg.train.seed,
        "step": step,
        "num_steps": num_steps,
        "done": step >= num_steps,
        "train_tokens": step * tokens_per_step,
        "num_params": count_params(final.params),
        "params_sha256": params_sha256(final.params),
        "session_seconds": round(time.time() - started, 2),
        "step_traces": traces[0],  # 1: static shapes, the step compiled once this session
    }
    if topo.is_primary:
        (workdir / "summary.json").write_text(json.dumps(summary, indent=2, sort_keys=True))
    return summary


def _flush(pending: list[_Pending], writer: MetricsWriter, cfg: Config, num_steps: int,
           window_start: float, window_tokens: int) -> tuple[float, int]:
    """Wait on the queued steps' metrics, stop on a non-finite loss, log the due rows."""
    host = jax.device_get([p.metrics for p in pending])
    now = time.time()
    elapsed = max(now - window_start, 1e-9)
    tokens_per_sec = window_tokens / elapsed
    step_time = elapsed / max(len(pending), 1)
    for p, m in zip(pending, host, strict=True):
        loss = float(m["loss"][0])
        if not math.isfinite(loss):
            raise TrainingDiverged(f"loss is {loss} at step {p.step}; the last good checkpoint "
                                   "is kept; lower optim.learning_rate or check the data")
        if p.step % cfg.train.log_every == 0 or p.step == num_steps:
            writer.write({
                "step": p.step,
                "loss": loss,
                "perplexity": math.exp(min(loss, 50.0)),
                "lr": float(m["lr"][0]),
                "grad_norm": float(m["grad_norm"][0]),
                "tokens": float(m["tokens"][0]),
                "tokens_per_sec": tokens_per_sec,
                "step_time": step_time,
            })
    pending.clear()
    return now, 0


def params_sha256(params: Any) -> str:
    """SHA-256 of the parameters' float32 bytes, leaves in sorted path order (one copy)."""
    import hashlib

    flat = jax.tree_util.tree_flatten_with_path(params)[0]
    digest = hashlib.sha256()
    for path, leaf in sorted(flat, key=lambda kv: jax.tree_util.keystr(kv[0])):
        digest.update(jax.tree_util.keystr(path).encode())
        digest.update(np.ascontiguousarray(np.asarray(leaf, np.float32)).tobytes())
    return digest.hexdigest()
