"""Outputs never overwrite inputs: a file a command writes (`evaluate --out`, `compare
--out`) may not be one a run directory needs (its config, tokenizer, checkpoints, logs,
saved chats), in this run or any other, nor a file the same command reads. A folder of
outputs is written whole or not at all (`staged_folder`).
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

from longctx.errors import UserError
from longctx.fsguard import check_dir_arg
from longctx.rundir.layout import CHECKPOINTS, CONFIG, TOKENIZER
from longctx.rundir.lock import LOCK

# A run directory's own files and folders (eval.json and other evaluation files are
# outputs: writing them again is what evaluate does).
RUN_FILES = (CONFIG, "summary.json", "metrics.jsonl", LOCK)
RUN_FOLDERS = (TOKENIZER, CHECKPOINTS, "chats", "tb", "unreadable_checkpoints")


def run_part(path: str | Path) -> tuple[Path, str] | None:
    """(run directory, its part) when `path` is or lies inside a file or folder that a run
    directory needs; None otherwise. A run directory is a folder holding config.json."""
    path = Path(path).absolute().resolve()
    if (path / CONFIG).is_file():
        return path, "the run directory itself"
    for parent in path.parents:
        if not (parent / CONFIG).is_file():
            continue
        first = path.relative_to(parent).parts[0]
        if first in RUN_FILES or first in RUN_FOLDERS:
            return parent, first
        return None
    return None


def check_output(out: str | Path, flag: str, reads: tuple[str | Path, ...] = (),
                 folder: bool = False) -> Path:
    """Refuse an output path that is a run's input, a file this command reads, or (for a
    `folder` output) an existing file; returns the path."""
    if out is None or not str(out).strip():
        raise UserError(f"{flag} is empty; pass a {'folder' if folder else 'file'} to write")
    path = check_dir_arg(out, flag) if folder else Path(out)
    if not folder and path.is_dir():
        path = path / "eval.json"
    for source in reads:
        if source is not None and path.absolute().resolve() == Path(source).absolute().resolve():
            raise UserError(f"{flag} {path} is the file this command reads; pass another path")
    part = run_part(path)
    if part is not None and not (folder and part[1] == "the run directory itself"):
        run, what = part
        what = what if what == "the run directory itself" else f"its {what}"
        raise UserError(f"{flag} {path} would overwrite {what} of the run {run}; "
                        f"pass another path, e.g. {run / 'eval_other.json'}"
                        if not folder else
                        f"{flag} {path} would write into {what} of the run {run}; pass "
                        "another folder, e.g. results")
    return path


@contextlib.contextmanager
def staged_folder(out: Path) -> Iterator[Path]:
    """A temporary folder inside `out` to write a command's outputs into; when the block
    ends without error its files replace their namesakes in `out` (each `os.replace`, a
    rename: no space needed), otherwise it is removed, with `out` if this made it. A full
    disk or Ctrl-C half-way leaves `out`'s earlier results as they were and nothing
    half-written."""
    made = not out.exists()
    stage = out / f".staged.tmp{os.getpid()}"
    try:
        shutil.rmtree(stage, ignore_errors=True)
        stage.mkdir(parents=True)
        yield stage
        for path in sorted(stage.iterdir()):
            os.replace(path, out / path.name)
    except BaseException:
        if made:
            shutil.rmtree(out, ignore_errors=True)
        raise
    finally:
        shutil.rmtree(stage, ignore_errors=True)
