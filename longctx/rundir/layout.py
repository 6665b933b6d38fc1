"""Where things are in a run directory, and reading its config and tokenizer."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import orbax.checkpoint as ocp

from longctx.config import Config, ConfigError, from_dict
from longctx.errors import UserError
from longctx.rundir.steps import quiet_absl

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
        return from_dict(json.loads(path.read_text()))
    except (json.JSONDecodeError, ConfigError) as exc:
        raise UserError(f"{path}: unreadable config ({exc})") from exc


def load_tokenizer(workdir: str | Path) -> Any:
    """The run's tokenizer (transformers.PreTrainedTokenizerFast), or None if it has none."""
    tok_dir = Path(workdir) / TOKENIZER
    if not tok_dir.is_dir():
        return None
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast.from_pretrained(str(tok_dir), local_files_only=True)
