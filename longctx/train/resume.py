"""Continuing a run directory: refuse other settings, set unreadable steps aside.

A run directory continues only with the settings it was trained with (the rule is
`longctx.rundir.settings`). Which step it continues from is the newest readable one (the
rule is `longctx.rundir.readable`, shared with `info`, `evaluate` and `chat`). Only `train`
sets unreadable steps aside, under a unique name, and only when an older step is readable;
with none readable it stops with one line and nothing is moved.
"""

from __future__ import annotations

import os
from pathlib import Path

from longctx.config import Config
from longctx.errors import UserError
from longctx.rundir.layout import CONFIG, read_config
from longctx.rundir.readable import one_line
from longctx.rundir.settings import config_differences, format_differences

ASIDE = "unreadable_checkpoints"


def check_workdir_config(workdir: Path, cfg: Config) -> None:
    """Refuse to continue a run directory with settings that change its trajectory."""
    if not (workdir / CONFIG).exists():
        return
    diffs = config_differences(read_config(workdir), cfg)
    if diffs:
        raise UserError(
            f"--workdir {workdir} holds a run trained with other settings: "
            f"{format_differences(diffs, 'saved', 'now')}; resuming would silently change that "
            f"run: use the saved values ({CONFIG}) or another --workdir")


def set_aside(directory: Path, step: int, problem: str) -> Path:
    """Move an unreadable step out of the checkpoints (next to them) under a unique name."""
    aside = directory.parent / ASIDE
    src = directory / str(step)
    try:
        aside.mkdir(exist_ok=True)
        dst, k = aside / str(step), 1
        while dst.exists():
            k += 1
            dst = aside / f"{step}-{k}"
        os.rename(src, dst)
    except OSError as exc:
        raise UserError(f"checkpoint step {step} in {directory} is unreadable ({problem:.120}) "
                        f"and could not be moved to {aside}/ ({one_line(exc)}); move it out of "
                        f"{directory} by hand and rerun") from None
    return dst
