"""Where things are in a run directory, and reading its config and tokenizer."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import orbax.checkpoint as ocp

from longctx.config import Config, from_dict
from longctx.errors import UserError
from longctx.rundir.readable import quiet_absl

CONFIG = "config.json"
TOKENIZER = "tokenizer"
CHECKPOINTS = "checkpoints"


def checkpoint_dir(workdir: str | Path) -> Path:
    return Path(workdir).absolute() / CHECKPOINTS


def make_manager(workdir: str | Path, keep: int, async_save: bool = True,
                 read_only: bool = False) -> ocp.CheckpointManager:
    """The orbax manager of the run's checkpoints/ (read-only: creates and deletes nothing)."""
    options = ocp.CheckpointManagerOptions(
        max_to_keep=keep,
        enable_async_checkpointing=async_save,
        create=not read_only,
        read_only=read_only,
    )
    with quiet_absl():  # a corrupt step's metadata: reported by restore, in one line
        return ocp.CheckpointManager(checkpoint_dir(workdir), options=options)


def read_config(workdir: str | Path) -> Config:
    path = Path(workdir) / CONFIG
    if not path.is_file():
        raise UserError(f"{path}: no {CONFIG}; is '{workdir}' a longctx run directory?")
    try:
        raw = json.loads(path.read_text())
        if not isinstance(raw, dict):
            raise ValueError(f"a JSON {type(raw).__name__}, not an object of sections")
        from longctx.models.archs import check_run

        return check_run(from_dict(raw))
    except (OSError, ValueError, RecursionError) as exc:  # ValueError: JSON, UTF-8, config
        text = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
        raise UserError(f"{path}: unreadable config ({text}); put back the {CONFIG} this run "
                        "was trained with") from None


def load_tokenizer(workdir: str | Path) -> Any:
    """The run's tokenizer (transformers.PreTrainedTokenizerFast), or None if it has none.
    A damaged tokenizer folder is a one-line UserError naming it."""
    tok_dir = Path(workdir) / TOKENIZER
    if not tok_dir.is_dir():
        return None
    return read_tokenizer(tok_dir, "copy the run's tokenizer/ folder back from its "
                                   "dataset's, under data.data_dir")


def read_tokenizer(tok_dir: Path, fix: str) -> Any:
    """A `save_pretrained` tokenizer folder, or a one-line UserError naming its damaged
    file (`fix` says what to do)."""
    from transformers import PreTrainedTokenizerFast

    where = tok_dir
    try:
        for where in sorted(tok_dir.glob("*.json")):  # name the damaged file, if one is
            json.loads(where.read_text())
        where = tok_dir
        return PreTrainedTokenizerFast.from_pretrained(str(tok_dir), local_files_only=True)
    except Exception as exc:  # noqa: BLE001 (tokenizers, json, OS and transformers errors)
        text = " ".join(str(exc).split()) or type(exc).__name__
        raise UserError(f"{where}: unreadable tokenizer ({text:.200}); {fix}") from None
