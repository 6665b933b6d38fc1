"""Orbax checkpoints of the whole training state, and reading run directories.

A checkpoint at step s holds, as separate orbax items:
- `params`: the model parameters (replicated global arrays);
- `state`: optimiser state, step and base PRNG key;
- `memory`: the model memory of every lane (global, sharded over lanes; XL only);
- `data`: every process's data-iterator state (JSON);
- `config`: the resolved config (JSON).
Saving is asynchronous; a save killed half-way leaves an orbax temporary directory that
is never listed as a step. Restoring tries the latest step first and falls back, with a
warning, to earlier ones when a step is unreadable (the rules are in `longctx.train.resume`).

A run directory: `config.json`, `tokenizer/`, `checkpoints/<step>/`, `metrics.jsonl`,
`tb/` (TensorBoard), `summary.json`, and later `eval.json`.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

from longctx.config import Config, ConfigError, from_dict
from longctx.errors import UserError
from longctx.train import parallel, resume


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
    with resume.quiet_absl():  # a corrupt step's metadata: reported by restore, in one line
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
                   memory_global: Any, topo: parallel.Topology, cfg: Config) -> Restored | None:
    """Restore the newest readable step (host templates give shapes); None if there is none.

    `memory_global` is a host template of the memory of ALL lanes (global shape). Newer
    unreadable steps are set aside (`resume.set_aside`); a step saved with other settings
    or shapes raises CheckpointMismatch; with no step readable, UserError (nothing moved).
    The step may come from another number of processes or devices: arrays are global and
    the data iterators' states are merged, then each process takes its own lanes.
    """
    from longctx.data.lanes import merge_states

    directory = Path(manager.directory)
    steps = list(manager.all_steps())
    if not steps:
        return None
    state_template = {"step": np.zeros((), np.int32), "rng": np.asarray(rng),
                      "opt_state": opt_state}

    def attempt(step: int) -> Restored:
        info = resume.read_step(directory / str(step))
        where = f"checkpoint step {step} in {directory}"
        _check_saved_config(info, cfg, where, "saved", "now",
                            "use the saved values or another --workdir")
        resume.check_shapes(info, {"params": params, "state": state_template,
                                   "memory": memory_global}, where)
        items = {
            "params": ocp.args.StandardRestore(parallel.abstract_global_replicated(params)),
            "state": ocp.args.StandardRestore(parallel.abstract_global_replicated(state_template)),
            "data": ocp.args.JsonRestore(),
        }
        if memory_global is not None:
            items["memory"] = ocp.args.StandardRestore(
                parallel.abstract_global_lanes(memory_global))
        out = manager.restore(step, args=ocp.args.Composite(**items))
        state = parallel.local_from_global(out["state"])
        memory = (parallel.local_from_global(out["memory"])
                  if memory_global is not None else None)
        return Restored(
            step=int(state["step"]),
            params=parallel.local_from_global(out["params"]),
            opt_state=state["opt_state"],
            rng=state["rng"],
            memory=memory,
            data_state=merge_states(out["data"]["lanes"]),
        )

    restored, bad = resume.newest_readable(directory, steps, attempt)
    for step, problem in bad:
        moved = (resume.set_aside(directory, step, problem) if topo.is_primary
                 else directory.parent / resume.ASIDE)
        resume.warn(f"checkpoint step {step} in {directory} is unreadable ({problem:.200}); "
                    f"falling back to step {restored.step} (moved it to {moved})")
    if bad:
        if topo.process_count > 1:
            from jax.experimental import multihost_utils

            multihost_utils.sync_global_devices("longctx-set-aside")
        with resume.quiet_absl():
            manager.reload()
    return restored


def _check_saved_config(info: resume.StepInfo, cfg: Config, where: str, left: str,
                        right: str, fix: str) -> None:
    """CheckpointMismatch if the step's own saved config differs from `cfg` on the run's
    trajectory fields (a step without one, e.g. imported weights, is checked by shapes)."""
    if "config" not in info.json:
        return
    try:
        saved = from_dict(info.json["config"])
    except ConfigError as exc:
        raise resume.Unreadable(f"config: {exc}") from None
    diffs = resume.config_differences(saved, cfg)
    if diffs:
        raise resume.CheckpointMismatch(
            f"{where} was saved with other settings: "
            f"{resume.format_differences(diffs, left, right)}; {fix}")


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
    """Read a run directory's config, tokenizer and (latest readable, or `step`'s) parameters.

    Steps are judged by the same rule as `train`'s (`resume.read_step`), so every command
    agrees on the latest readable one; unreadable steps are skipped with a warning, never
    moved. config.json must agree with the checkpoint (one line naming the keys if not).
    """
    workdir = Path(workdir)
    cfg = read_config(workdir)
    if not checkpoint_dir(workdir).is_dir():
        raise UserError(f"{workdir}: no checkpoints/ directory; train it first (longctx train)")
    manager = make_manager(workdir, keep=cfg.checkpoint.keep, read_only=True)
    directory = Path(manager.directory)
    steps = sorted(manager.all_steps(), reverse=True)
    if not steps:
        raise UserError(f"{workdir}: no finished checkpoint; train it (longctx train)")
    if step is not None:
        if step not in steps:
            raise UserError(f"{workdir}: no checkpoint step {step} (saved steps: "
                            f"{', '.join(map(str, sorted(steps)))})")
        steps = [step]

    def attempt(s: int) -> Run:
        info = resume.read_step(directory / str(s))
        where = f"checkpoint step {s} of {workdir}"
        _check_saved_config(info, cfg, where, "checkpoint", "config.json",
                            f"config.json was edited: put the saved values back in "
                            f"{workdir / 'config.json'}")
        if "config" not in info.json:  # imported weights: check the shapes config.json implies
            resume.check_shapes(info, {"params": _param_shapes(cfg)},
                                f"{where} (against config.json)")
        out = manager.restore(s, args=ocp.args.Composite(params=ocp.args.StandardRestore()))
        params = jax.tree.map(np.asarray, out["params"])
        return Run(workdir, cfg, params, int(s), load_tokenizer(workdir))

    run, bad = resume.newest_readable(directory, steps, attempt)
    for s, problem in bad:
        resume.warn(f"checkpoint step {s} of {workdir} is unreadable ({problem:.200}); "
                    f"using step {run.step}")
    return run


def _param_shapes(cfg: Config) -> Any:
    """The parameter shapes the config's model has (no computation)."""
    from longctx.models import build_model, init_memory

    model = build_model(cfg.model)
    dummy = np.zeros((1, cfg.model.row_len), np.int32)
    shapes = jax.eval_shape(lambda: model.init({"params": jax.random.PRNGKey(0)}, dummy,
                                               init_memory(cfg.model, 1), np.zeros((1,), bool)))
    return shapes["params"]


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
