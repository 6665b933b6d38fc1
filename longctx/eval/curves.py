"""Training and validation curves of several runs, from their metrics.jsonl.

`longctx compare` draws them next to its table (curves.png) and can be pointed at runs
that are still training and have no eval.json yet. Rows marked `"kind": "validation"` are
validation passes (`longctx.train.validation`); the others are training steps.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

METRICS = "metrics.jsonl"


@dataclass
class Curves:
    """One run's training loss and validation loss / recall by step."""

    label: str
    train: dict[int, float] = field(default_factory=dict)
    validation: dict[int, float] = field(default_factory=dict)
    recall: dict[int, float] = field(default_factory=dict)  # the 'all' bucket


def read(workdir: str | Path, label: str | None = None) -> Curves | None:
    """The curves in `workdir`/metrics.jsonl, or None when it has none (a row that is not a
    whole JSON object, e.g. cut by a kill mid-write, is skipped)."""
    workdir = Path(workdir)
    path = workdir / METRICS
    if not path.is_file():
        return None
    curves = Curves(label or _name(workdir))
    for line in path.read_text(errors="replace").splitlines():
        try:
            row: dict[str, Any] = json.loads(line)
        except (ValueError, RecursionError):
            continue
        if not isinstance(row, dict):
            continue
        step, loss = row.get("step"), row.get("loss")
        if not isinstance(step, int) or not isinstance(loss, int | float):
            continue
        if row.get("kind") == "validation":
            curves.validation[step] = float(loss)
            recall = (row.get("recall") or {}).get("all")
            if recall is not None:
                curves.recall[step] = float(recall)
        else:
            curves.train[step] = float(loss)
    return curves


def _name(workdir: Path) -> str:
    """The run's config name and folder (runs of a sweep share the name)."""
    try:
        name = json.loads((workdir / "config.json").read_text()).get("name")
    except (OSError, json.JSONDecodeError):
        name = None
    return f"{name} ({workdir.name})" if name and name != workdir.name else workdir.name


def plot(runs: list[Curves], path: Path) -> Path | None:
    """curves.png: loss by step (training solid, validation dashed with markers, one colour
    per run) and, when any run has probes, validation recall by step. None: nothing to draw."""
    runs = [r for r in runs if r.train or r.validation]
    if not runs:
        return None
    from longctx.eval.plots import _pyplot, _save

    plt = _pyplot()
    with_recall = any(r.recall for r in runs)
    fig, axes = plt.subplots(1, 2 if with_recall else 1, figsize=(11 if with_recall else 6, 4),
                             squeeze=False)
    loss_ax = axes[0][0]
    for k, r in enumerate(runs):
        colour = f"C{k % 10}"
        if r.train:
            loss_ax.plot(list(r.train), list(r.train.values()), color=colour, alpha=0.6,
                         label=f"{r.label} train")
        if r.validation:
            loss_ax.plot(list(r.validation), list(r.validation.values()), "o--", color=colour,
                         label=f"{r.label} validation")
        if with_recall and r.recall:
            axes[0][1].plot(list(r.recall), list(r.recall.values()), "o--", color=colour,
                            label=r.label)
    loss_ax.set_xlabel("step")
    loss_ax.set_ylabel("loss (NLL per token)")
    loss_ax.legend(fontsize=7)
    if with_recall:
        axes[0][1].set_xlabel("step")
        axes[0][1].set_ylabel("validation recall (all buckets)")
        axes[0][1].set_ylim(0, 1.02)
        axes[0][1].legend(fontsize=7)
    return _save(plt, fig, path)
