"""PNG plots of a comparison: recall vs distance, perplexity vs session and vs part,
recurrence NLL vs distance, context curve.

Each row of the table is one line (mean over its seeds, error bars = sample std).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from longctx.data.buckets import BUCKET_NAMES
from longctx.eval.recurrence import RECURRENCE_BUCKETS

if TYPE_CHECKING:
    from longctx.eval.compare import Row


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _mean_std(series: list[list[float | None]]) -> tuple[np.ndarray, np.ndarray]:
    """Per-x mean and sample std over seeds (NaN where no seed has a value)."""
    arr = np.array([[np.nan if v is None else v for v in s] for s in series], dtype=float)
    mean, std = np.full(arr.shape[1], np.nan), np.zeros(arr.shape[1])
    for j in range(arr.shape[1]):
        col = arr[:, j][~np.isnan(arr[:, j])]
        if col.size:
            mean[j] = col.mean()
        if col.size > 1:
            std[j] = col.std(ddof=1)
    return mean, std


def _legend(row: Row) -> str:
    """The row's run name with its architecture (rows of one experiment share the name)."""
    arch = row.runs[0].ev.get("run", {}).get("arch")
    return f"{row.label} ({arch})" if arch else row.label


def _save(plt, fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _lines(rows: list[Row], path: Path, series_of, xlabel: str, ylabel: str,
           finish=None) -> Path | None:
    """One line a row: mean ± std over its seeds of `series_of(row)` -> (x, one list of
    values a run) or None (nothing to draw); `finish(ax)` adds what the plot needs. Writes
    nothing and returns None when no row has data."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    drawn = False
    for row in rows:
        got = series_of(row)
        if got is None:
            continue
        x, series = got
        mean, std = _mean_std(series)
        if np.all(np.isnan(mean)):
            continue
        ax.errorbar(x, mean, yerr=std, marker="o", capsize=3, label=_legend(row))
        drawn = True
    if not drawn:
        plt.close(fig)
        return None
    if finish is not None:
        finish(ax)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=8)
    return _save(plt, fig, path)


def recall_vs_distance(rows: list[Row], path: Path) -> Path | None:
    """Forced-choice recall per distance bucket (relative to W), chance level dashed."""
    chance = None
    for row in rows:
        for r in row.runs:
            chance = (r.ev.get("recall") or {}).get("chance", chance)

    def series_of(row: Row):
        buckets = [(r.ev.get("recall") or {}).get("buckets") or {} for r in row.runs]
        return range(len(BUCKET_NAMES)), [[(b.get(name) or {}).get("accuracy")
                                           for name in BUCKET_NAMES] for b in buckets]

    def finish(ax) -> None:
        if chance:
            ax.axhline(chance, ls="--", color="grey", label="chance")
        ax.set_xticks(range(len(BUCKET_NAMES)), [f"{b} W" if b != "inside" else "≤ W"
                                                  for b in BUCKET_NAMES])
        ax.set_ylim(0, 1.02)

    return _lines(rows, path, series_of, "distance from fact to answer", "forced-choice recall",
                  finish)


def perplexity_vs_session(rows: list[Row], path: Path) -> Path | None:
    """Turn-token perplexity per session index."""

    def series_of(row: Row):
        dicts = [(r.ev.get("perplexity") or {}).get("by_session") or {} for r in row.runs]
        keys = sorted({int(k) for d in dicts for k in d})
        if not keys:
            return None
        return keys, [[(d.get(str(k)) or {}).get("ppl") for k in keys] for d in dicts]

    return _lines(rows, path, series_of, "session index", "perplexity")


def context_curve(rows: list[Row], path: Path) -> Path | None:
    """Mean NLL of the fixed targets against the context length made available."""

    def series_of(row: Row):
        curves = [r.ev.get("context_curve") or {} for r in row.runs]
        lengths = sorted({c for cc in curves for c in cc.get("context_lengths", [])})
        if not lengths:
            return None
        return lengths, [[cc["mean_nll"][cc["context_lengths"].index(c)]
                          if c in cc.get("context_lengths", []) else None for c in lengths]
                         for cc in curves]

    return _lines(rows, path, series_of, "context length (tokens)", "mean NLL of the fixed targets",
                  lambda ax: ax.set_xscale("log", base=2))


def recurrence_vs_distance(rows: list[Row], path: Path) -> Path | None:
    """Mean NLL per content word by distance to its previous occurrence (new = first)."""

    def series_of(row: Row):
        buckets = [(r.ev.get("recurrence") or {}).get("buckets") for r in row.runs]
        if not any(buckets):
            return None
        return range(len(RECURRENCE_BUCKETS)), [[((b or {}).get(name) or {}).get("nll")
                                                 for name in RECURRENCE_BUCKETS]
                                                for b in buckets]

    def finish(ax) -> None:
        ax.set_xticks(range(len(RECURRENCE_BUCKETS)),
                      [{"new": "new", "inside": "≤ W"}.get(b, f"{b} W")
                       for b in RECURRENCE_BUCKETS])

    return _lines(rows, path, series_of, "distance to the previous occurrence",
                  "NLL per content word (nats)", finish)


def perplexity_vs_part(rows: list[Row], path: Path) -> Path | None:
    """Turn-token perplexity per equal part of each conversation (position in a meeting)."""

    def series_of(row: Row):
        dicts = [(r.ev.get("perplexity") or {}).get("by_part") or {} for r in row.runs]
        keys = sorted({int(k) for d in dicts for k in d})
        if not keys:
            return None
        return [k + 1 for k in keys], [[(d.get(str(k)) or {}).get("ppl") for k in keys]
                                       for d in dicts]

    return _lines(rows, path, series_of, "part of the conversation", "perplexity")


def write_all(rows: list[Row], out: Path, prefix: str = "") -> list[Path]:
    """Write every plot that has data (file names start with `prefix`); return them."""
    made = [
        recall_vs_distance(rows, out / f"{prefix}recall_vs_distance.png"),
        perplexity_vs_session(rows, out / f"{prefix}perplexity_vs_session.png"),
        perplexity_vs_part(rows, out / f"{prefix}perplexity_vs_part.png"),
        recurrence_vs_distance(rows, out / f"{prefix}recurrence_vs_distance.png"),
        context_curve(rows, out / f"{prefix}context_curve.png"),
    ]
    return [p for p in made if p is not None]
