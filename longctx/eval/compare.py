"""Many evaluated run directories -> one table (markdown + CSV) and plots.

Runs whose configs differ only in the training seed form one row: each number is the mean
over those seeds with the sample standard deviation (ddof = 1; none for a single seed) and
the number of seeds. RECL is computed over all compared runs measured on the same context
targets (`context_curve.recl`). A recall bucket with fewer than 20 items in any seed is
marked with '*' (shown, not hidden).
"""

from __future__ import annotations

import csv
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from longctx.config import from_dict
from longctx.data.buckets import BUCKET_NAMES
from longctx.errors import UserError
from longctx.eval import context_curve
from longctx.eval.eval_schema import check_config, check_eval
from longctx.eval.metrics import MIN_RELIABLE_COUNT
from longctx.eval.recurrence import RECURRENCE_BUCKETS
from longctx.models import archs

# Keys that do not make two runs different experiments.
_IGNORED = {("name",), ("train", "seed"), ("checkpoint",), ("data", "data_dir"),
            ("train", "log_every"), ("train", "host_sync_every"), ("train", "eval_every_steps"),
            ("train", "eval_tokens"), ("train", "profile_steps")}


@dataclass
class RunResult:
    """One run directory's config (as a dict) and eval.json."""

    workdir: Path
    config: dict[str, Any]
    ev: dict[str, Any]
    recl: dict[str, dict[str, Any]] = field(default_factory=dict)  # 'r=0.1' -> result


def load_result(where: str | Path) -> RunResult:
    """Read DIR/config.json and DIR/eval.json, or, given an evaluation file
    DIR/NAME.json (`evaluate --out`), that file and DIR/config.json (UserError naming the
    missing file)."""
    where = Path(where)
    workdir = where.parent if where.is_file() else where
    paths = {"config": workdir / "config.json",
             "eval": where if where.is_file() else workdir / "eval.json"}
    if not paths["config"].is_file():
        raise UserError(f"{paths['config']}: missing; is '{workdir}' a longctx run directory?")
    if not paths["eval"].is_file():
        raise UserError(f"{paths['eval']}: missing; run `longctx evaluate --workdir {workdir}`")
    loaded = {}
    for name, path in paths.items():
        try:
            loaded[name] = json.loads(path.read_text())
        except (OSError, ValueError, RecursionError) as exc:  # ValueError: JSON and UTF-8
            text = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
            raise UserError(f"{path}: not valid JSON ({text}); re-create it") from None
    check_config(loaded["config"], paths["config"])
    return RunResult(workdir, loaded["config"], check_eval(loaded["eval"], paths["eval"]))


def group_key(r: RunResult) -> str:
    """The config without seed/bookkeeping keys and other architectures' sections (read as
    `train` reads it: missing keys at their defaults and flat model keys in their
    architecture's section, so a run saved before a field existed groups with its later
    seeds), plus the evaluated dataset and split."""
    cfg = from_dict(r.config).to_dict()
    for arch in [k for k, v in cfg["model"].items() if isinstance(v, dict)]:
        if arch != cfg["model"]["arch"]:
            del cfg["model"][arch]  # another architecture's section changes nothing
    for path in _IGNORED:
        node = cfg
        for key in path[:-1]:
            node = node.get(key, {})
        node.pop(path[-1], None)
    if cfg["train"].get("init_from"):
        # each seed starts from its own seed's source run: the source's architecture and
        # step (eval.json's record), not its path, tell experiments apart
        source = r.ev.get("run", {}).get("init_from") or {}
        if source.get("arch") is not None:
            cfg["train"]["init_from"] = {"arch": source["arch"], "step": source.get("step")}
    return json.dumps([cfg, dataset_key(r)], sort_keys=True)


def dataset_key(r: RunResult) -> str:
    """What the run was evaluated on: dataset/split, and the source file's digest."""
    ds = r.ev.get("dataset", {})
    src = ds.get("source") or {}
    digest = f" @ {src['sha256'][:12]}" if src.get("sha256") else ""
    return f"{ds.get('name')}/{ds.get('split')}{digest}"


def _label(runs: list[RunResult]) -> str:
    names = [re.sub(r"[-_.]?(seed|s)\d+$", "", r.config.get("name", r.workdir.name))
             for r in runs]
    return names[0] if len(set(names)) == 1 else runs[0].workdir.name


def add_recl(runs: list[RunResult], ratios=context_curve.DEFAULT_RATIOS) -> None:
    """Compute RECL within each set of runs sharing context targets; store on each run."""
    sets: dict[str, list[RunResult]] = {}
    for r in runs:
        cc = r.ev.get("context_curve") or {}
        if cc.get("nll") and cc.get("num_targets", 0) > 0:
            sets.setdefault(cc["fingerprint"], []).append(r)
    for members in sets.values():
        lengths = sorted(set.intersection(*(set(m.ev["context_curve"]["context_lengths"])
                                            for m in members)))
        if len(lengths) < 2:
            continue
        losses = np.stack([[m.ev["context_curve"]["nll"][
            m.ev["context_curve"]["context_lengths"].index(c)] for c in lengths]
            for m in members])
        for ratio in ratios:
            for m, res in zip(members, context_curve.recl(losses, lengths, ratio), strict=True):
                m.recl[f"r={ratio:g}"] = {**res, "group_size": len(members)}


# ----------------------------------------------------------------------------- columns


def _get(ev: dict, *path: str) -> Any:
    node: Any = ev
    for key in path:
        if not isinstance(node, dict) or node.get(key) is None:
            return None
        node = node[key]
    return node


def columns(ratios=context_curve.DEFAULT_RATIOS) -> list[tuple[str, Any, int]]:
    """(header, getter(run) -> (value, count or None), decimals) of every numeric column."""
    cols: list[tuple[str, Any, int]] = [
        ("params", lambda r: (_get(r.ev, "run", "num_params"), None), 0),
        ("train FLOPs/token", lambda r: (_get(r.ev, "run", "flops_per_token", "train"), None), 0),
        ("train tokens", lambda r: (_get(r.ev, "run", "train_tokens"), None), 0),
        ("span W", lambda r: (_get(r.ev, "run", "span"), None), 0),
    ]
    for b in BUCKET_NAMES:
        cols.append((f"recall {b}", lambda r, b=b: (
            _get(r.ev, "recall", "buckets", b, "accuracy"),
            _get(r.ev, "recall", "buckets", b, "count"),
            _get(r.ev, "recall", "buckets", b, "stderr")), 3))
    cols += [
        ("exact match", lambda r: (_get(r.ev, "recall", "buckets", "all", "exact_match"),
                                   _get(r.ev, "recall", "buckets", "all", "count")), 3),
        ("ppl", lambda r: (_get(r.ev, "perplexity", "overall", "ppl"),
                           _get(r.ev, "perplexity", "overall", "tokens")), 2),
    ]
    for b in RECURRENCE_BUCKETS:
        cols.append((f"recur NLL {b}", lambda r, b=b: (
            _get(r.ev, "recurrence", "buckets", b, "nll"),
            _get(r.ev, "recurrence", "buckets", b, "count")), 3))
    cols += [
        ("shuffle acc", lambda r: (_get(r.ev, "shuffle", "accuracy"),
                                   _get(r.ev, "shuffle", "count")), 3),
        ("hits@1", lambda r: (_get(r.ev, "hits_at_1", "accuracy"),
                              _get(r.ev, "hits_at_1", "count")), 3),
        ("eval tok/s", lambda r: (_get(r.ev, "speed", "stream", "tokens_per_s"), None), 0),
    ]
    for ratio in ratios:
        key = f"r={ratio:g}"
        cols.append((f"RECL {key}", lambda r, key=key: (_get(r.recl, key, "recl"), None), 0))
    return cols


@dataclass
class Row:
    label: str
    runs: list[RunResult]
    cells: dict[str, dict[str, Any]]  # header -> {mean, std, n, min_count, marked}


def _aggregate(values: list[float | None], counts: list[int | None],
               stderrs: list[float | None] | None = None) -> dict[str, Any]:
    """Mean, sample std over seeds, item counts, and the standard error of the mean: over
    seeds (std / sqrt(seeds)) with several seeds, over items (eval.json's) with one."""
    vals = [float(v) for v in values if v is not None]
    cnts = [c for c in counts if c is not None]
    mean = float(np.mean(vals)) if vals else None
    std = float(np.std(vals, ddof=1)) if len(vals) > 1 else None
    if std is not None:
        stderr = std / np.sqrt(len(vals))
    else:
        stderr = next((float(e) for e in (stderrs or []) if e is not None), None)
    min_count = min(cnts) if cnts else None
    marked = min_count is not None and min_count < MIN_RELIABLE_COUNT
    return {"mean": mean, "std": std, "stderr": stderr, "n": len(vals),
            "min_count": min_count, "marked": marked}


def build_rows(results: list[RunResult]) -> list[Row]:
    """Group runs by config (minus seed), in the order first seen, and aggregate columns."""
    add_recl(results)
    groups: dict[str, list[RunResult]] = {}
    for r in results:
        groups.setdefault(group_key(r), []).append(r)
    rows = []
    for runs in groups.values():
        cells = {}
        for header, getter, _ in columns():
            got = [getter(r) for r in runs]
            cells[header] = _aggregate([g[0] for g in got], [g[1] for g in got],
                                       [g[2] if len(g) > 2 else None for g in got])
        rows.append(Row(_label(runs), runs, cells))
    return rows


# Columns that describe the setup: shown without a spread (it is zero within a row).
_SETUP = ("params", "train FLOPs/token", "train tokens", "span W")


def _fmt(cell: dict[str, Any], decimals: int, spread: bool = True) -> str:
    """'mean ± std over seeds'; with one seed, 'mean ± standard error' where items give one."""
    if cell["mean"] is None:
        return "–"
    std = (cell["std"] if cell["std"] is not None else cell["stderr"]) if spread else None
    if decimals == 0 and abs(cell["mean"]) >= 1e6:
        text = f"{cell['mean']:.3g}" + (f" ± {std:.2g}" if std is not None else "")
    else:
        text = f"{cell['mean']:.{decimals}f}"
        text += f" ± {std:.{decimals}f}" if std is not None else ""
    return text + ("*" if cell["marked"] else "")


def _recl_prefix(row: Row, header: str) -> str:
    """'≥' when RECL reached the longest measured context in some seed (a lower bound)."""
    key = header.removeprefix("RECL ")
    return "≥" if any(r.recl.get(key, {}).get("lower_bound") for r in row.runs) else ""


def markdown(rows: list[Row]) -> str:
    """The results table (mean ± std over seeds; '*' = fewer than 20 items)."""
    cols = columns()
    head = ["run", "arch", "seeds"] + [h for h, _, _ in cols]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        arch = row.runs[0].ev.get("run", {}).get("arch", "?")
        cells = [row.label, arch, str(len(row.runs))]
        for h, _, d in cols:
            text = _fmt(row.cells[h], d, spread=h not in _SETUP)
            cells.append(_recl_prefix(row, h) + text if h.startswith("RECL") else text)
        lines.append("| " + " | ".join(cells) + " |")
    notes = [
        "",
        f"Mean ± sample std over seeds (a single seed's recall: ± its standard error over "
        f"probes, sample std of the per-probe credit / √n); `*` marks a metric with fewer "
        f"than {MIN_RELIABLE_COUNT} items in some seed. Recall buckets are probe distances "
        "relative to the span W (inside ≤ W, 1–2×, 2–4×, >4×); chance is 1/N. Recurrence "
        "NLL: nats per content word by distance to its previous occurrence (new = first "
        "occurrence; docs/eval_json.md).",
    ]
    notes += memory_check(rows)
    if any(r.recl for row in rows for r in row.runs):
        size = max(v["group_size"] for row in rows for r in row.runs for v in r.recl.values())
        notes.append(f"RECL over the {size} compared runs sharing context targets (threshold "
                     "0.01, r = share of hardest targets; ≥: the longest length measured).")
    return "\n".join(lines + notes) + "\n"


def memory_check(rows: list[Row]) -> list[str]:
    """Lines saying, per recall bucket, how far each memory mechanism's recall (an
    architecture with `Arch.has_memory`, one row) stands above the memory-free baseline's
    (`archs.BASELINE`, the window: the same attention span without memory) and above
    chance, in standard errors (the errors of independent means combined: z = difference /
    sqrt(se_a² + se_baseline²)); every other mechanism also against the paper's memory
    (`archs.MEMORY_REFERENCE`, XL) when it is in the table. Empty without such a pair."""
    by_arch: dict[str, list[Row]] = {}
    for row in rows:
        by_arch.setdefault(row.runs[0].ev.get("run", {}).get("arch", "?"), []).append(row)
    lines = []
    for reference in (archs.BASELINE, archs.MEMORY_REFERENCE):
        if len(by_arch.get(reference, [])) != 1:
            continue
        for name, found in by_arch.items():
            if (name != reference and name in archs.names() and archs.get(name).has_memory
                    and len(found) == 1):
                lines += _against(archs.get(name).label, found[0], reference,
                                  by_arch[reference][0])
    return lines


def _against(label: str, mem: Row, reference: str, base: Row) -> list[str]:
    """memory_check's lines for one mechanism's row against a reference architecture's."""
    chance = _get(mem.runs[0].ev, "recall", "chance")
    base_label = archs.get(reference).label
    lines = ["", f"{label} against the {base_label} and chance, by recall bucket (z = "
             "difference / combined standard error; |z| ≥ 3 is a clear effect):", ""]
    for b in BUCKET_NAMES:
        a, w = mem.cells[f"recall {b}"], base.cells[f"recall {b}"]
        if None in (a["mean"], w["mean"], a["stderr"], w["stderr"], chance):
            continue
        z_base = (a["mean"] - w["mean"]) / max(np.hypot(a["stderr"], w["stderr"]), 1e-12)
        z_mem = (a["mean"] - chance) / max(a["stderr"], 1e-12)
        z_w = (w["mean"] - chance) / max(w["stderr"], 1e-12)
        lines.append(f"- {b}: {label} {a['mean']:.3f} ± {a['stderr']:.3f}, {base_label} "
                     f"{w['mean']:.3f} ± {w['stderr']:.3f}, chance {chance:.3f}: {label} − "
                     f"{base_label} z = {z_base:+.1f}; {label} − chance z = {z_mem:+.1f}; "
                     f"{base_label} − chance z = {z_w:+.1f}")
    return lines if len(lines) > 3 else []


def write_csv(rows: list[tuple[str, Row]], path: Path) -> None:
    """One line per (dataset, row): mean, std and min item count of every column."""
    cols = columns()
    head = ["run", "arch", "seeds", "dataset", "workdirs"]
    for h, _, _ in cols:
        head += [f"{h} mean", f"{h} std", f"{h} count"]
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(head)
        for key, row in rows:
            arch = row.runs[0].ev.get("run", {}).get("arch", "?")
            line = [row.label, arch, len(row.runs), key,
                    ";".join(str(r.workdir) for r in row.runs)]
            for h, _, _ in cols:
                c = row.cells[h]
                line += ["" if c[k] is None else repr(c[k]) for k in ("mean", "std", "min_count")]
            w.writerow(line)


def sections(results: list[RunResult]) -> dict[str, list[RunResult]]:
    """Results by what they were evaluated on (dataset_key), in the order first seen:
    numbers on different corpora are never rows of one table."""
    out: dict[str, list[RunResult]] = {}
    for r in results:
        out.setdefault(dataset_key(r), []).append(r)
    return out


def _slug(key: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "_", key.split(" @ ")[0]).strip("_")


def _has_eval(where: Path) -> bool:
    return where.is_file() or (where / "eval.json").is_file()


def compare(workdirs: list[str | Path], out: str | Path) -> str:
    """Load, group, write results.md/.csv and plots to `out`; return the markdown. Runs
    evaluated on different datasets (or source files) get separate sections, CSV rows
    tagged with the dataset, and plots named `<dataset>_<split>_*.png`. curves.png plots
    every run's training and validation curves (metrics.jsonl); a run that has those but
    no eval.json yet (still training) is drawn there and left out of the table."""
    if not workdirs:
        raise UserError("compare needs at least one run directory")
    from longctx.eval import curves, plots

    paths = [Path(d) for d in workdirs]
    training_only = [p for p in paths if not _has_eval(p) and (p / curves.METRICS).is_file()]
    results = [load_result(p) for p in paths if p not in training_only]
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    run_dirs = list(dict.fromkeys(p.parent if p.is_file() else p for p in paths))
    drawn = curves.plot([c for c in map(curves.read, run_dirs) if c is not None],
                        out / "curves.png")
    parts = sections(results)
    texts, all_rows = [], []
    for key, members in parts.items():
        rows = build_rows(members)
        all_rows += [(key, row) for row in rows]
        table = markdown(rows)
        texts.append(f"## {key}\n\n{table}" if len(parts) > 1 else table)
        plots.write_all(rows, out, prefix=f"{_slug(key)}_" if len(parts) > 1 else "")
    if training_only:
        names = ", ".join(str(p) for p in training_only)
        texts.append(f"Not evaluated yet (curves only{' in curves.png' if drawn else ''}): "
                     f"{names}\n")
    text = "\n".join(texts)
    (out / "results.md").write_text("# Results\n\n" + text)
    write_csv(all_rows, out / "results.csv")
    return text
