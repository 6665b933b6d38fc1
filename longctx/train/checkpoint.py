"""Orbax checkpoints of the whole training state (the run directory's checkpoints/).

A training checkpoint at step s holds, as separate orbax items:
- `params`: the model parameters (replicated global arrays);
- `state`: optimiser state, step and base PRNG key;
- `memory`: the model memory of every lane (global, sharded over lanes; XL only);
- `data`: every process's data-iterator state (JSON);
- `config`: the resolved config (JSON).
Saving is asynchronous; a save killed half-way leaves an orbax temporary directory that
is never listed as a step. Restoring tries the latest step first and falls back, with a
warning, to earlier ones when a step is unreadable (the rule is `longctx.rundir.readable`;
setting steps aside is `longctx.train.resume`). The directory layout, and loading
parameters for inference, are `longctx.rundir`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import orbax.checkpoint as ocp

from longctx.config import Config
from longctx.rundir import readable, settings
from longctx.rundir.layout import make_manager  # noqa: F401  (the loop opens its manager here)
from longctx.train import parallel, resume


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
    saved = list(manager.all_steps())
    if not saved:
        return None
    state_template = {"step": np.zeros((), np.int32), "rng": np.asarray(rng),
                      "opt_state": opt_state}

    def attempt(step: int) -> Restored:
        info = readable.read_step(directory / str(step))
        where = f"checkpoint step {step} in {directory}"
        settings.check_saved_config(info, cfg, where, "saved", "now",
                                    "use the saved values or another --workdir")
        readable.check_shapes(info, {"params": params, "state": state_template,
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
        try:
            data_state = merge_states(out["data"]["lanes"])
        except Exception as exc:  # noqa: BLE001 (any shape of damage in the JSON item)
            raise readable.Unreadable(f"data/metadata: not the data iterators' state "
                                   f"({readable.one_line(exc)})") from None
        return Restored(
            step=int(state["step"]),
            params=parallel.local_from_global(out["params"]),
            opt_state=state["opt_state"],
            rng=state["rng"],
            memory=memory,
            data_state=data_state,
        )

    restored, bad = readable.newest_readable(directory, saved, attempt)
    for step, problem in bad:
        moved = (resume.set_aside(directory, step, problem) if topo.is_primary
                 else directory.parent / resume.ASIDE)
        readable.warn(f"checkpoint step {step} in {directory} is unreadable ({problem:.200}); "
                   f"falling back to step {restored.step} (moved it to {moved})")
    if bad:
        if topo.process_count > 1:
            from jax.experimental import multihost_utils

            multihost_utils.sync_global_devices("longctx-set-aside")
        with readable.quiet_absl():
            manager.reload()
    return restored
