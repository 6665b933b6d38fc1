"""Which checkpoint step of a run directory is readable, and the newest readable one.

One rule (`read_step`: every item the step lists has its files and metadata) decides
whether a step is readable, and `newest_readable` walks the steps newest first with it, so
`train`, `info`, `evaluate` and `chat` agree on the latest readable step. A readable step
that does not fit the config is a mismatch (`CheckpointMismatch`: one line, nothing
moved), never corruption. With no step readable every command stops with one line.
"""

from __future__ import annotations

import contextlib
import json
import logging
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import jax
import numpy as np

from longctx.errors import UserError

T = TypeVar("T")


class CheckpointMismatch(UserError):
    """A readable checkpoint that does not fit the current config (not corruption)."""


class Unreadable(Exception):
    """A checkpoint step whose files are missing or corrupt."""


class StepsVanished(UserError):
    """Every listed step that was not readable disappeared while it was read (a running
    `train` rotated its checkpoints): list the steps again and retry (uncaught: one line)."""


@dataclass
class StepInfo:
    """A step's items: tree metadata of the array items, contents of the JSON items."""

    step: int
    trees: dict[str, Any] = field(default_factory=dict)
    json: dict[str, Any] = field(default_factory=dict)


def read_step(step_dir: Path) -> StepInfo:
    """The step's metadata, or Unreadable naming the first missing or corrupt file."""
    import orbax.checkpoint as ocp

    quiet_orbax()
    handlers = _item_handlers(step_dir)
    if "params" not in handlers:
        raise Unreadable("no params item")
    info = StepInfo(int(step_dir.name))
    for name, handler in sorted(handlers.items()):
        item = step_dir / name
        if "Json" in str(handler) or (item / "metadata").is_file():
            try:
                info.json[name] = json.loads((item / "metadata").read_text())
            except (OSError, ValueError, RecursionError) as exc:
                raise Unreadable(f"{name}/metadata: {one_line(exc)}") from None
            continue
        if not (item / "_METADATA").is_file():
            raise Unreadable(f"{name}/_METADATA: missing")
        try:
            info.trees[name] = ocp.StandardCheckpointHandler().metadata(item).tree
        except Exception as exc:  # noqa: BLE001 (json, tensorstore and OS errors alike)
            raise Unreadable(f"{name}: {one_line(exc)}") from None
    if "state" in info.trees:
        saved = _saved_step(step_dir / "state")
        if saved != info.step:
            raise Unreadable(f"state/step holds step {saved}, not {info.step} (a step folder "
                             "copied or renamed)")
    return info


def _item_handlers(step_dir: Path) -> dict[str, str]:
    """{item: handler name} from the step's _CHECKPOINT_METADATA; without a readable one
    (an older layout, or a file lost while the items are whole) the item folders, so a
    step orbax can restore is restored, and a broken item is named when it is read."""
    try:
        handlers = json.loads((step_dir / "_CHECKPOINT_METADATA").read_text()).get(
            "item_handlers")
    except (OSError, ValueError, AttributeError, RecursionError):
        handlers = None
    if isinstance(handlers, dict):
        return handlers
    try:
        return {p.name: "" for p in step_dir.iterdir() if p.is_dir()}
    except OSError as exc:
        raise Unreadable(f"{step_dir.name}: {one_line(exc)}") from None


def _saved_step(item: Path) -> int:
    """The step number saved inside a training step's `state` item (read alone)."""
    import orbax.checkpoint as ocp

    try:
        out = ocp.PyTreeCheckpointHandler().restore(item, args=ocp.args.PyTreeRestore(
            item={"step": np.zeros((), np.int32)},
            restore_args={"step": ocp.RestoreArgs(restore_type=np.ndarray)},
            partial_restore=True))
        return int(out["step"])
    except Exception as exc:  # noqa: BLE001 (tensorstore, json and OS errors alike)
        raise Unreadable(f"state/step: {one_line(exc)}") from None


def check_shapes(info: StepInfo, templates: dict[str, Any], where: str) -> None:
    """CheckpointMismatch naming the first array whose saved shape differs from the model's
    (or that only one side has); arrays are matched by their path in the tree."""
    for name, template in templates.items():
        if template is None:
            continue
        if name not in info.trees:
            raise CheckpointMismatch(f"{where} has no '{name}' item, which this config needs")
        saved, want = _shapes(info.trees[name]), _shapes(template)
        for key in sorted(saved.keys() | want.keys()):
            a, b = saved.get(key), want.get(key)
            if a == b:
                continue
            what = (f"has no {name}{key}" if a is None else f"{name}{key} is not in this model"
                    if b is None else f"{name}{key} has shape {a}, this config needs {b}")
            raise CheckpointMismatch(f"{where}: {what}; it was saved with other model or "
                                     "batch settings")


def _shapes(tree: Any) -> dict[str, tuple[int, ...]]:
    """{path: shape} of a tree as orbax stores it (named tuples as dicts, tuples as lists)."""
    def plain(x: Any) -> Any:
        if isinstance(x, tuple) and hasattr(x, "_fields"):
            return {f: plain(getattr(x, f)) for f in x._fields}
        if isinstance(x, list | tuple):
            return [plain(v) for v in x]
        if isinstance(x, dict):
            return {str(k): plain(v) for k, v in x.items()}
        return x

    flat = jax.tree_util.tree_flatten_with_path(plain(tree))[0]
    return {_path_name(path): tuple(np.shape(leaf) if not hasattr(leaf, "shape")
                                    else leaf.shape) for path, leaf in flat}


def _path_name(path: tuple) -> str:
    """'.hidden', "['hidden']" and '[0]' alike as '/hidden' or '/0': orbax stores dataclass
    fields as dict keys, so attribute and key paths must compare equal."""
    parts = []
    for k in path:
        for attr in ("name", "key", "idx"):
            if hasattr(k, attr):
                parts.append(str(getattr(k, attr)))
                break
        else:
            parts.append(str(k))
    return "/" + "/".join(parts)


def newest_readable(directory: Path, steps: list[int], attempt: Callable[[int], T]
                    ) -> tuple[T, list[tuple[int, str]]]:
    """attempt(step) on `steps` newest first: the first result and the (step, problem) of the
    newer unreadable ones. `attempt` raises Unreadable or any error for a bad step (tried
    the next) or CheckpointMismatch (stops). A step that is gone by then, or older than a
    step finished since, was rotated away while read: skipped, not reported. With none
    readable: one-line UserError, or StepsVanished when steps disappeared (the caller lists
    them again)."""
    bad: list[tuple[int, str]] = []
    vanished: list[int] = []
    for step in sorted(steps, reverse=True):
        try:
            return attempt(step), bad
        except (CheckpointMismatch, MemoryError, KeyboardInterrupt):
            raise
        except Exception as exc:  # noqa: BLE001 (a restore error after the metadata checks)
            if _rotated(directory, step, max(steps)):
                vanished.append(step)  # removed while read (a running train's rotation)
                continue
            bad.append((step, str(exc) if isinstance(exc, Unreadable) else one_line(exc)))
    if vanished:
        raise StepsVanished(f"{directory}: checkpoint steps {vanished} were removed while "
                            "being read; rerun")
    listed = ", ".join(str(s) for s, _ in bad)
    raise UserError(f"{directory}: no readable checkpoint (steps {listed}; step {bad[0][0]}: "
                    f"{bad[0][1]:.150}); nothing was moved: restore the files, or delete the "
                    "checkpoints to train from the start")


def _rotated(directory: Path, step: int, newest_listed: int) -> bool:
    """Whether `step` is gone or going: its folder removed, or a newer step finished since
    the steps were listed (a training run saves the new step before it deletes old ones,
    so a step failing to read then is being deleted, not damaged)."""
    try:
        now = [int(p.name) for p in directory.iterdir() if p.name.isdigit()]
    except OSError:
        return False
    return step not in now or max(now, default=step) > newest_listed


def warn(message: str) -> None:
    """A warning the user should see (`longctx.log` prints it as `warning: ...`)."""
    logging.getLogger(__name__).warning(message)


def one_line(exc: BaseException) -> str:
    """An exception as one short line."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    if isinstance(exc, OSError) and exc.strerror:
        text = exc.strerror
    return f"{text:.200}"


@contextlib.contextmanager
def quiet_absl() -> Iterator[None]:
    """Hide absl (orbax) log records below CRITICAL, e.g. its own note on a corrupt step."""
    logger = logging.getLogger("absl")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(level)


_QUIET = [False]


def quiet_orbax() -> None:
    """Drop the 'Event loop is closed' errors that tensorstore reads still in flight report
    after orbax gave up on a corrupt step (thousands of tracebacks, no information)."""
    if _QUIET[0]:
        return
    previous = sys.unraisablehook

    def hook(unraisable: Any) -> None:
        exc = unraisable.exc_value
        if isinstance(exc, RuntimeError) and "Event loop is closed" in str(exc):
            return
        if "Encountered error while reading array index" in str(exc):
            return  # the other reads of a restore that already failed (reported once)
        previous(unraisable)

    sys.unraisablehook = hook
    _QUIET[0] = True
