"""A run loaded for inference (config, tokenizer, parameters), and a parameters-only run
written for imported weights."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

from longctx.config import Config
from longctx.errors import UserError
from longctx.rundir import readable, settings
from longctx.rundir.layout import CONFIG, TOKENIZER, checkpoint_dir, load_tokenizer, make_manager, read_config


@dataclass
class Run:
    """A trained (or imported) run, ready for evaluation or chat."""

    workdir: Path
    cfg: Config
    params: Any
    step: int
    tokenizer: Any  # transformers.PreTrainedTokenizerFast, or None (imported weights)


def load_run(workdir: str | Path, step: int | None = None) -> Run:
    """Read a run directory's config, tokenizer and (latest readable, or `step`'s) parameters.

    Steps are judged by the rule `train` uses (`readable.read_step`), so every command agrees
    on the latest readable one; unreadable steps are skipped with a warning, never moved.
    config.json must agree with the checkpoint (one line naming the keys if not).
    """
    workdir = Path(workdir)
    cfg = read_config(workdir)
    if not checkpoint_dir(workdir).is_dir():
        raise UserError(f"{workdir}: no checkpoints/ directory; train it first (longctx train)")
    for _ in range(_RELISTS):  # a running train may rotate steps away while we read
        try:
            return _load_latest(workdir, cfg, step)
        # a step folder deleted while the checkpoint manager lists it surfaces as
        # FileNotFoundError or, mid-deletion, NotADirectoryError
        except (readable.StepsVanished, FileNotFoundError, NotADirectoryError) as exc:
            changed = exc
    raise UserError(f"{workdir}: its checkpoints kept changing while being read "
                    f"({readable.one_line(changed)}); rerun in a moment")


_RELISTS = 10


def _load_latest(workdir: Path, cfg: Config, step: int | None) -> Run:
    """load_run on one listing of the steps."""
    manager = make_manager(workdir, keep=cfg.checkpoint.keep, read_only=True)
    directory = Path(manager.directory)
    saved = sorted(manager.all_steps(), reverse=True)
    if not saved:
        if any(p.name.isdigit() for p in directory.iterdir()):  # listed mid-rotation
            raise readable.StepsVanished(f"{directory}: its steps changed while being listed")
        raise UserError(f"{workdir}: no finished checkpoint; train it (longctx train)")
    if step is not None:
        if step not in saved:
            raise UserError(f"{workdir}: no checkpoint step {step} (saved steps: "
                            f"{', '.join(map(str, sorted(saved)))})")
        saved = [step]

    def attempt(s: int) -> Run:
        info = readable.read_step(directory / str(s))
        where = f"checkpoint step {s} of {workdir}"
        settings.check_saved_config(info, cfg, where, "checkpoint", CONFIG,
                                    f"{CONFIG} was edited: put the saved values back in "
                                    f"{workdir / CONFIG}")
        if "config" not in info.json:  # imported weights: check the shapes config.json implies
            readable.check_shapes(info, {"params": param_shapes(cfg)},
                               f"{where} (against {CONFIG})")
        out = manager.restore(s, args=ocp.args.Composite(params=ocp.args.StandardRestore()))
        params = jax.tree.map(np.asarray, out["params"])
        return Run(workdir, cfg, params, int(s), tokenizer)

    tokenizer = load_tokenizer(workdir)  # read first: a damaged one is named, not a step
    run, bad = readable.newest_readable(directory, saved, attempt)
    for s, problem in bad:
        readable.warn(f"checkpoint step {s} of {workdir} is unreadable ({problem:.200}); "
                   f"using step {run.step}")
    return run


def param_shapes(cfg: Config) -> Any:
    """The parameter shapes the config's model has (no computation)."""
    from longctx.models import archs, build_model, init_memory

    model = build_model(cfg.model)
    dummy = np.zeros((1, archs.tokens_per_step(cfg.model)), np.int32)
    shapes = jax.eval_shape(lambda: model.init({"params": jax.random.PRNGKey(0)}, dummy,
                                               init_memory(cfg.model, 1), np.zeros((1,), bool)))
    return shapes["params"]


def save_params_run(workdir: str | Path, cfg: Config, params: Any,
                    tokenizer_dir: str | Path | None = None, step: int = 0) -> Path:
    """Write a run directory holding only parameters (e.g. imported weights); one process."""
    workdir = Path(workdir)
    if checkpoint_dir(workdir).exists():
        raise UserError(f"{workdir}: already holds checkpoints; choose an empty --workdir")
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / CONFIG).write_text(cfg.to_json())
    if tokenizer_dir is not None:
        shutil.copytree(tokenizer_dir, workdir / TOKENIZER, dirs_exist_ok=True)
    manager = make_manager(workdir, keep=1, async_save=False)
    host = jax.tree.map(np.asarray, params)
    manager.save(step, args=ocp.args.Composite(params=ocp.args.StandardSave(host)), force=True)
    manager.wait_until_finished()
    manager.close()
    return workdir
