"""`train.init_from`: start a new run from another run's trained parameters.

The new run takes every parameter the source run's latest readable checkpoint shares with
it by name (path in the parameter tree) and shape; parameters only the new architecture has
(e.g. rmt's `memory_init`) keep their fresh initialisation. Optimiser, step, dropout key and
data position are the new run's own (step 0). A source parameter the new model lacks, a
shape that differs, or a source trained on another vocabulary is refused in one line.

Only the first start reads the source: once the run has checkpoints it resumes from them
(bit-exact, the source may be gone). Where the run started is recorded in the run
directory's `init_from.json` (source path, its step, its parameters' SHA-256), which
`summary.json`, `eval.json` and `longctx info` repeat.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jax
import numpy as np

from longctx.config import Config
from longctx.data.tokenizer import files_sha256
from longctx.errors import UserError
from longctx.rundir.layout import TOKENIZER, checkpoint_dir

RECORD = "init_from.json"
_KEY = "config key 'train.init_from'"


@dataclass
class Source:
    """The run a new run starts from: where, at which step, its parameters and fingerprint."""

    path: Path
    step: int
    arch: str
    params: Any
    params_sha256: str

    def record(self) -> dict[str, Any]:
        return {"path": str(self.path), "step": self.step, "arch": self.arch,
                "params_sha256": self.params_sha256}


def has_checkpoints(workdir: Path) -> bool:
    """Whether the run directory already holds a checkpoint step (then it resumes from it)."""
    ckpt = checkpoint_dir(workdir)
    return ckpt.is_dir() and any(p.name.isdigit() for p in ckpt.iterdir())


def read_source(cfg: Config, tokenizer_dir: Path) -> Source:
    """The source run's latest readable parameters, refused (one line) when it is missing,
    has no checkpoint, or was trained on another vocabulary than `cfg`'s dataset
    (`tokenizer_dir`, `cfg.model.n_token` already resolved)."""
    from longctx.rundir import load_run
    from longctx.train.loop import params_sha256

    path = Path(cfg.train.init_from).expanduser().absolute()
    if not path.is_dir():
        raise UserError(f"{_KEY}: {path}: no such run directory; give the directory of a "
                        "trained run (longctx train --workdir)")
    try:
        run = load_run(path)
    except UserError as exc:
        raise UserError(f"{_KEY}: {exc}") from None
    _check_vocabulary(run, cfg, tokenizer_dir)
    return Source(path, run.step, run.cfg.model.arch, run.params, params_sha256(run.params))


def _check_vocabulary(run: Any, cfg: Config, tokenizer_dir: Path) -> None:
    """Refuse a source whose tokenizer or vocabulary size is not the new run's."""
    fix = "warm-start from a run trained on the same dataset (data.* settings and data_dir)"
    if run.cfg.model.n_token != cfg.model.n_token:
        raise UserError(f"{_KEY}: {run.workdir} has a vocabulary of {run.cfg.model.n_token} "
                        f"tokens, this run's dataset {cfg.model.n_token}; {fix}")
    src_tok = Path(run.workdir) / TOKENIZER
    if not src_tok.is_dir():
        raise UserError(f"{_KEY}: {run.workdir} records no tokenizer/ folder, so its "
                        f"vocabulary cannot be checked against {tokenizer_dir}; {fix}")
    if files_sha256(src_tok) != files_sha256(tokenizer_dir):
        raise UserError(f"{_KEY}: {src_tok} is another tokenizer than this run's dataset's "
                        f"({tokenizer_dir}); {fix}")


def merge(fresh: Any, source: Source) -> Any:
    """`fresh` with every leaf the source has replaced by the source's (same path, same
    shape); a source leaf the new model lacks or shapes that differ: UserError naming it."""
    src = {jax.tree_util.keystr(p): leaf
           for p, leaf in jax.tree_util.tree_flatten_with_path(source.params)[0]}
    flat, treedef = jax.tree_util.tree_flatten_with_path(fresh)
    names = {jax.tree_util.keystr(p) for p, _ in flat}
    extra = sorted(set(src) - names)
    if extra:
        raise UserError(f"{_KEY}: parameter {extra[0]} {np.shape(src[extra[0]])} of "
                        f"{source.path} ({source.arch}) has no place in this model "
                        f"({len(extra)} such); warm-start from a run of a compatible "
                        "architecture and size")
    leaves = []
    for p, leaf in flat:
        name = jax.tree_util.keystr(p)
        if name in src:
            if np.shape(src[name]) != np.shape(leaf):
                raise UserError(f"{_KEY}: parameter {name} is {np.shape(src[name])} in "
                                f"{source.path}, {np.shape(leaf)} in this model; give both "
                                "runs the same model sizes (model.d_model, n_layer, ...)")
            leaf = np.asarray(src[name], np.asarray(leaf).dtype)
        leaves.append(leaf)
    return jax.tree_util.tree_unflatten(treedef, leaves)


def write_record(workdir: Path, source: Source) -> None:
    """init_from.json, written atomically."""
    tmp = workdir / f"{RECORD}.tmp"
    tmp.write_text(json.dumps(source.record(), indent=2, sort_keys=True))
    tmp.replace(workdir / RECORD)


def read_record(workdir: str | Path) -> dict[str, Any] | None:
    """The run's init_from.json (None: it started from scratch, or the file is unreadable)."""
    path = Path(workdir) / RECORD
    try:
        out = json.loads(path.read_text()) if path.is_file() else None
    except (OSError, ValueError, RecursionError):
        return None
    return out if isinstance(out, dict) else None
