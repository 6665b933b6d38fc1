"""Orbax checkpoints of the whole training state, and reading run directories.

A checkpoint at step s holds, as separate orbax items:
- `params`: the model parameters (replicated global arrays);
- `state`: optimiser state, step and base PRNG key;
- `memory`: the model memory of every lane (global, sharded over lanes; XL only);
- `data`: every process's data-iterator state (JSON);
- `config`: the resolved config (JSON).
Saving is asynchronous; a save killed half-way leaves an orbax temporary directory that
is never listed as a step. Restoring tries the latest step first and falls back, with a
warning, to earlier ones when a step is unreadable.

A run directory: `config.json`, `tokenizer/`, `checkpoints/<step>/`, `metrics.jsonl`,
`tb/` (TensorBoard), `summary.json`, and later `eval.json`.
"""

from __future__ import annotations

import json
import logging
import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

from longctx.config import Config, ConfigError, from_dict
from longctx.errors import UserError
from longctx.train import parallel

log = logging.getLogger(__name__)


def checkpoint_dir(workdir: str | Path) -> Path:
    return Path(workdir).absolute() / "checkpoints"


def make_manager(workdir: str | Path, keep: int, async_save: bool = True,
                 read_only: bool = False) -> ocp.CheckpointManager:
    options = ocp.CheckpointManagerOptions(
        max_to_keep=keep,
        enable_async_checkpointing=async_save,
        create=not read_only,
        read_only=read_only,
    )
    return ocp.CheckpointManager(checkpoint_dir(workdir), options=options)


def save(manager: ocp.CheckpointManager, step: int, *, params: Any, opt_state: Any, rng: Any,
         memory: Any, data_state: Any, cfg: Config, topo: parallel.Topology) -> None:
    """Start an (async) save of the full state at `step` (steps completed)."""
    items = {
        "params": ocp.args.StandardSave(parallel.to_global_replicated(params)),
        "state": ocp.args.StandardSave(parallel.to_global_replicated(
            {"step": np.asarray(step, np.int32), "rng": np.asarray(rng),
             "opt_state": opt_state})),
        "data": ocp.args.JsonSave({"lanes": parallel.allgather_json(data_state)}),
        "config": ocp.args.JsonSave(cfg.to_dict()),
    }
    if memory is not None:
        items["memory"] = ocp.args.StandardSave(parallel.to_global_lanes(memory, topo))
    manager.save(step, args=ocp.args.Composite(**items), force=True)


@dataclass
class Restored:
    step: int
    params: Any
    opt_state: Any
    rng: np.ndarray
    memory: Any
    data_state: Any


def restore_latest(manager: ocp.CheckpointManager, *, params: Any, opt_state: Any, rng: Any,
                   memory_global: Any, topo: parallel.Topology) -> Restored | None:
    """Restore the newest readable step (host templates give shapes); None if there is none.

    `memory_global` is a host template of the memory of ALL lanes (global shape).
    """
    steps = sorted(manager.all_steps(), reverse=True)
    for step in steps:
        items = {
            "params": ocp.args.StandardRestore(parallel.abstract_global_replicated(params)),
            "state": ocp.args.StandardRestore(parallel.abstract_global_replicated(
                {"step": np.zeros((), np.int32), "rng": np.asarray(rng), "opt_state": opt_state})),
            "data": ocp.args.JsonRestore(),
        }
        if memory_global is not None:
            items["memory"] = ocp.args.StandardRestore(
                parallel.abstract_global_lanes(memory_global))
        try:
            out = manager.restore(step, args=ocp.args.Composite(**items))
            state = parallel.local_from_global(out["state"])
            lanes = out["data"]["lanes"]
            if len(lanes) != topo.process_count:
                raise ValueError(f"saved by {len(lanes)} processes, now {topo.process_count}")
            memory = (parallel.local_from_global(out["memory"])
                      if memory_global is not None else None)
            return Restored(
                step=int(state["step"]),
                params=parallel.local_from_global(out["params"]),
                opt_state=state["opt_state"],
                rng=state["rng"],
                memory=memory,
                data_state=lanes[topo.process_index],
            )
        except Exception as exc:  # unreadable step: warn, set it aside, fall back
            aside = Path(manager.directory).parent / "unreadable_checkpoints" / str(step)
            msg = (f"checkpoint step {step} in {manager.directory} is unreadable ({exc!s:.200}); "
                   f"falling back to the previous one (moved to {aside})")
            warnings.warn(msg, stacklevel=2)
            log.warning(msg)
            if topo.is_primary:
                aside.parent.mkdir(parents=True, exist_ok=True)
                shutil.move(str(Path(manager.directory) / str(step)), str(aside))
            if topo.process_count > 1:
                from jax.experimental import multihost_utils

                multihost_utils.sync_global_devices(f"longctx-set-aside-{step}")
            manager.reload()
    return None


# ----------------------------------------------------------------------------- run directories


@dataclass
class Run:
    """A trained (or imported) run, ready for evaluation or chat."""

    workdir: Path
    cfg: Config
    params: Any
    step: int
    tokenizer: Any  # transformers.PreTrainedTokenizerFast, or None (imported weights)


def read_config(workdir: str | Path) -> Config:
    path = Path(workdir) / "config.json"
    if not path.is_file():
        raise UserError(f"{path}: no config.json; is '{workdir}' a longctx run directory?")
    try:
        return from_dict(json.loads(path.read_text()))
    except (json.JSONDecodeError, ConfigError) as exc:
        raise UserError(f"{path}: unreadable config ({exc})") from exc


def load_tokenizer(workdir: str | Path) -> Any:
    tok_dir = Path(workdir) / "tokenizer"
    if not tok_dir.is_dir():
        return None
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast.from_pretrained(str(tok_dir), local_files_only=True)


def load_run(workdir: str | Path, step: int | None = None) -> Run:
    """Read a run directory's config, tokenizer and (latest readable) parameters."""
    workdir = Path(workdir)
    cfg = read_config(workdir)
    if not checkpoint_dir(workdir).is_dir():
        raise UserError(f"{workdir}: no checkpoints/ directory; train it first (longctx train)")
    manager = make_manager(workdir, keep=cfg.checkpoint.keep, read_only=True)
    steps = [step] if step is not None else sorted(manager.all_steps(), reverse=True)
    if not steps:
        raise UserError(f"{workdir}: no finished checkpoint; train it (longctx train)")
    for s in steps:
        try:
            out = manager.restore(s, args=ocp.args.Composite(params=ocp.args.StandardRestore()))
            params = jax.tree.map(np.asarray, out["params"])
            return Run(workdir, cfg, params, int(s), load_tokenizer(workdir))
        except Exception as exc:
            warnings.warn(f"checkpoint step {s} of {workdir} unreadable ({exc!s:.200}); "
                          "trying the previous one", stacklevel=2)
    raise UserError(f"{workdir}: no readable checkpoint")


def save_params_run(workdir: str | Path, cfg: Config, params: Any,
                    tokenizer_dir: str | Path | None = None, step: int = 0) -> Path:
    """Write a run directory holding only parameters (e.g. imported weights)."""
    workdir = Path(workdir)
    if checkpoint_dir(workdir).exists():
        raise UserError(f"{workdir}: already holds checkpoints; choose an empty --workdir")
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "config.json").write_text(cfg.to_json())
    if tokenizer_dir is not None:
        shutil.copytree(tokenizer_dir, workdir / "tokenizer", dirs_exist_ok=True)
    manager = make_manager(workdir, keep=1, async_save=False)
    manager.save(step, args=ocp.args.Composite(
        params=ocp.args.StandardSave(parallel.to_global_replicated(params))), force=True)
    manager.wait_until_finished()
    manager.close()
    return workdir
