"""A training run that hits the machine's limits (full disk, read-only, too many open
files) stops with one line, keeps its last complete checkpoint and leaves nothing
half-written: the temporaries it was writing (an orbax step still in its temporary
folder, `tokenizer.tmp/`, `config.json.tmp`, ...) are removed, so rerunning the same
command once the limit is lifted resumes exactly.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from longctx.fsguard import machine_limits, remove_all, remove_until_quiet
from longctx.rundir.layout import CHECKPOINTS

# What is written under a temporary name and renamed into place when complete:
# `<name>.tmp` at the top of the run (config.json.tmp, tokenizer.tmp/, metrics.tmp, ...) and
# orbax's `<step>.orbax-checkpoint-tmp*` folders. Under the run's lock any of them found is
# a dead or failed writer's.


def _temporaries(workdir: Path) -> list[Path]:
    paths = sorted(workdir.glob("*.tmp")) if workdir.is_dir() else []
    ckpt = workdir / CHECKPOINTS
    if ckpt.is_dir():
        paths += [p for p in ckpt.iterdir() if ".orbax-checkpoint-tmp" in p.name]
    return [p for p in paths if p.exists() or p.is_symlink()]


def remove_temporaries(workdir: Path) -> None:
    """Remove half-written run files and orbax's temporary step folders."""
    remove_all(_temporaries(workdir))


def remove_failed_writes(workdir: Path) -> None:
    """After a failed save: remove the temporaries, and again while late writes of that
    save recreate them (`fsguard.remove_until_quiet`)."""
    remove_until_quiet(lambda: _temporaries(workdir))


def latest_complete_step(workdir: Path) -> int | None:
    ckpt = workdir / CHECKPOINTS
    steps = [int(p.name) for p in ckpt.iterdir() if p.name.isdigit()] if ckpt.is_dir() else []
    return max(steps, default=None)


@contextlib.contextmanager
def stop_at_limits(workdir: Path, primary: bool = True) -> Iterator[None]:
    """Turn a machine limit met while training in `workdir` into one UserError line.

    Entered under the run's lock, so any temporary found then is a dead run's: removed."""
    if primary:
        remove_temporaries(workdir)

    def kept() -> str:
        step = latest_complete_step(workdir)
        return (f"checkpoint step {step} is intact and the rerun resumes from it"
                if step is not None else "no checkpoint was saved yet")

    cleanup = (lambda: remove_failed_writes(workdir)) if primary else None
    with machine_limits(f"--workdir {workdir}", "training stopped", cleanup, kept):
        yield
