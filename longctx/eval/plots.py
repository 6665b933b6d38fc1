"""PNG plots of a comparison: recall vs distance, perplexity vs session, context curve.

Each row of the table is one line (mean over its seeds, error bars = sample std).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from longctx.eval.metrics import BUCKET_NAMES

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


def recall_vs_distance(rows: list[Row], path: Path) -> Path | None:
    """Forced-choice recall per distance bucket (relative to W), chance level dashed."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    drawn, chance = False, None
    for row in rows:
        series = []
        for r in row.runs:
            buckets = (r.ev.get("recall") or {}).get("buckets") or {}
            series.append([(buckets.get(b) or {}).get("accuracy") for b in BUCKET_NAMES])
            chance = (r.ev.get("recall") or {}).get("chance", chance)
        mean, std = _mean_std(series)
        if np.all(np.isnan(mean)):
            continue
        ax.errorbar(range(len(BUCKET_NAMES)), mean, yerr=std, marker="o", capsize=3,
                    label=_legend(row))
        drawn = True
    if not drawn:
        plt.close(fig)
        return None
    if chance:
        ax.axhline(chance, ls="--", color="grey", label="chance")
    ax.set_xticks(range(len(BUCKET_NAMES)), [f"{b} W" if b != "inside" else "≤ W"
                                              for b in BUCKET_NAMES])
    ax.set_xlabel("distance from fact to answer")
    ax.set_ylabel("forced-choice recall")
    ax.set_ylim(0, 1.02)
    ax.legend(fontsize=8)
    return _save(plt, fig, path)


def _keyed_series(row: Row, getter) -> tuple[list[int], list[list[Any]]]:
    dicts = [getter(r.ev) or {} for r in row.runs]
    keys = sorted({int(k) for d in dicts for k in d})
    return keys, [[(d.get(str(k)) or {}).get("ppl") for k in keys] for d in dicts]


def perplexity_vs_session(rows: list[Row], path: Path) -> Path | None:
    """Turn-token perplexity per session index."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    drawn = False
    for row in rows:
        keys, series = _keyed_series(
            row, lambda ev: (ev.get("perplexity") or {}).get("by_session"))
        if not keys:
            continue
        mean, std = _mean_std(series)
        ax.errorbar(keys, mean, yerr=std, marker="o", capsize=3, label=_legend(row))
        drawn = True
    if not drawn:
        plt.close(fig)
        return None
    ax.set_xlabel("session index")
    ax.set_ylabel("perplexity")
    ax.legend(fontsize=8)
    return _save(plt, fig, path)


def context_curve(rows: list[Row], path: Path) -> Path | None:
    """Mean NLL of the fixed targets against the context length made available."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    drawn = False
    for row in rows:
        curves = [r.ev.get("context_curve") or {} for r in row.runs]
        lengths = sorted({c for cc in curves for c in cc.get("context_lengths", [])})
        if not lengths:
            continue
        series = [[cc["mean_nll"][cc["context_lengths"].index(c)]
                   if c in cc.get("context_lengths", []) else None for c in lengths]
                  for cc in curves]
        mean, std = _mean_std(series)
        ax.errorbar(lengths, mean, yerr=std, marker="o", capsize=3, label=_legend(row))
        drawn = True
    if not drawn:
        plt.close(fig)
        return None
    ax.set_xscale("log", base=2)
    ax.set_xlabel("context length (tokens)")
    ax.set_ylabel("mean NLL of the fixed targets")
    ax.legend(fontsize=8)
    return _save(plt, fig, path)


def write_all(rows: list[Row], out: Path) -> list[Path]:
    """Write every plot that has data; return the files written."""
    made = [
        recall_vs_distance(rows, out / "recall_vs_distance.png"),
        perplexity_vs_session(rows, out / "perplexity_vs_session.png"),
        context_curve(rows, out / "context_curve.png"),
    ]
    return [p for p in made if p is not None]
