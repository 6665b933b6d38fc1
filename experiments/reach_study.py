"""How far does memory reach? Recall by distance, in fine buckets up to 8W, against depth.

The Transformer-XL paper's claim: the longest dependency an XL model can carry grows with
depth times memory (O(N·L)), while a sliding window's receptive field grows as L·W too but
only through chains of attention hops. This study trains XL and the window at n_layer in
{2, 3, 4, 6} (span W = 64, XL mem_len = W), and at one depth XL with mem_len in {W, 2W}
against a window of the same attention cost (the mean number of keys an XL query sees,
mem_len + (tgt_len + 1) / 2), all with the README recipe of
`experiments/dialogue_comparison.py` and 3 seeds; evaluates the forced-choice recall of
every validation probe (nothing else: the rest of the suite is the main experiment's);
and tabulates recall by distance / W in buckets 0.5W wide up to 2W, then 2-3, 3-4, 4-6,
6-8 and 8-12W, with a plot, one line per (architecture, depth, memory).

    python experiments/reach_study.py                 # the study (about an hour on 2 cores)
    python experiments/reach_study.py --depths 2 --seeds 0 train.train_tokens=20000  # smoke

Finished trainings are skipped and finished evaluations reused (each run's reach.json).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
EDGES = (0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, 8.0, 12.0, np.inf)  # in units of W


def _comparison_config():
    """The main comparison's config (experiments/dialogue_comparison.py, read as the
    experiment file it is; its README size is `presets.COMPARISON['readme']`)."""
    from longctx.config import load_experiment

    return load_experiment(HERE / "dialogue_comparison.py")


def bucket_names() -> list[str]:
    """'0-0.5W', ..., '8-12W', '>12W'."""
    names = []
    for lo, hi in zip(EDGES[:-1], EDGES[1:], strict=True):
        names.append(f">{lo:g}W" if hi == np.inf else f"{lo:g}-{hi:g}W")
    return names


def fine_buckets(distances, credits, span: int) -> dict[str, dict[str, float | int | None]]:
    """Mean forced-choice credit, its standard error and the count per fine bucket
    (a probe at distance d is in the bucket with lo·W < d <= hi·W)."""
    d = np.asarray(distances, dtype=float) / span
    c = np.asarray(credits, dtype=float)
    out = {}
    for name, lo, hi in zip(bucket_names(), EDGES[:-1], EDGES[1:], strict=True):
        sel = c[(d > lo) & (d <= hi)]
        out[name] = {"accuracy": float(sel.mean()) if sel.size else None,
                     "stderr": float(sel.std(ddof=1) / np.sqrt(sel.size)) if sel.size > 1
                     else None, "count": int(sel.size)}
    return out


def direct_split(result: dict, tgt_len: int, lo: float = 1.0, hi: float = 2.0
                 ) -> dict[str, dict[str, float | int | None]]:
    """XL probes lo-hi W back, split by whether ONE attention step can reach the fact: the
    query predicting the answer's first value token sits at offset i = (pos - 1) mod
    tgt_len of its segment and sees mem_len + i + 1 positions back, so the fact's last token
    is in view exactly when distance <= mem_len + i + 1. Recall on the probes out of view
    is what depth (memory carried layer to layer) adds."""
    span, mem = result["span"], result["mem_len"]
    d = np.asarray(result["probes"]["distance"])
    pos = np.asarray(result["probes"]["position"])
    c = np.asarray(result["probes"]["credit"], dtype=float)
    band = (d > lo * span) & (d <= hi * span)
    in_view = d <= mem + (pos - 1) % tgt_len + 1
    out = {}
    for name, sel in (("in view", band & in_view), ("out of view", band & ~in_view)):
        x = c[sel]
        out[name] = {"accuracy": float(x.mean()) if x.size else None,
                     "stderr": float(x.std(ddof=1) / np.sqrt(x.size)) if x.size > 1 else None,
                     "count": int(x.size)}
    return out


def variants(depths: list[int], cost_depth: int, span: int, tgt_len: int,
             part: str = "all") -> list[dict]:
    """(label, arch, overrides) of the study's models: `part` 'depth' (XL and the window
    at each depth), 'cost' (the equal-attention-cost pairs) or 'all'."""
    out = []
    for depth in depths if part in ("depth", "all") else ():
        for arch in ("xl", "window"):
            out.append({"label": f"{arch} L{depth}", "arch": arch, "depth": depth,
                        "overrides": [f"model.n_layer={depth}"]})
    for mem in (span, 2 * span) if part in ("cost", "all") else ():
        # XL memory W and 2W, each against a window of equal attention cost
        cost = mem + (tgt_len + 1) // 2
        if mem != span:
            out.append({"label": f"xl L{cost_depth} mem {mem}", "arch": "xl", "depth": cost_depth,
                        "overrides": [f"model.n_layer={cost_depth}", f"model.xl.mem_len={mem}"]})
        out.append({"label": f"window L{cost_depth} W'={cost}", "arch": "window",
                    "depth": cost_depth,
                    "overrides": [f"model.n_layer={cost_depth}", f"model.window.window={cost}",
                                  "model.window.seq_len=512"]})
    return out


def _tag(label: str) -> str:
    """A folder name for a model label ('window L2 W'=96' -> 'window_L2_W96')."""
    return label.replace(" ", "_").replace("'", "").replace("=", "")


def evaluate_reach(workdir: Path) -> dict:
    """Forced-choice recall of every validation probe of a finished run -> reach.json."""
    from longctx.eval import probes
    from longctx.eval.corpus import load_corpus
    from longctx.eval.evaluate import SEED, recall
    from longctx.eval.scoring import Scorer
    from longctx.rundir import load_run

    path = workdir / "reach.json"
    if path.is_file():
        return json.loads(path.read_text())
    run = load_run(workdir)
    cfg = run.cfg
    corpus = load_corpus(run, None, "validation", cfg.eval.max_conversations)
    convs, value_tokens = corpus.convs, corpus.value_tokens
    rng = np.random.default_rng(SEED)
    items, skipped = probes.recall_items(convs, value_tokens, cfg.eval.num_candidates, rng)
    scorer = Scorer(cfg.model, run.params, cfg.eval.vanilla_stride)
    _, scored = scorer.stream_logprobs([c.ids for c in convs], [it.request for it in items])
    rec = recall(items, scored, skipped, cfg.data.span, cfg.eval.num_candidates)
    result = {"arch": cfg.model.arch, "n_layer": cfg.model.n_layer, "span": cfg.data.span,
              "mem_len": cfg.model.xl.mem_len, "window": cfg.model.window.window,
              "chance": rec["chance"], "probes": rec["probes"],
              "fine": fine_buckets(rec["probes"]["distance"], rec["probes"]["credit"],
                                   cfg.data.span)}
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(result) + "\n")
    tmp.replace(path)
    return result


def table(rows: list[tuple[str, list[dict]]]) -> str:
    """Markdown: recall per fine bucket, mean ± sample std over seeds (one seed: ± standard
    error over probes), probe counts of one seed in the last line."""
    names = bucket_names()
    lines = ["| model | seeds | " + " | ".join(names) + " |", "|---|---|" + "---|" * len(names)]
    for label, results in rows:
        cells = []
        for name in names:
            vals = [r["fine"][name]["accuracy"] for r in results
                    if r["fine"][name]["accuracy"] is not None]
            if not vals:
                cells.append("–")
            elif len(vals) > 1:
                cells.append(f"{np.mean(vals):.3f} ± {np.std(vals, ddof=1):.3f}")
            else:
                se = results[0]["fine"][name]["stderr"]
                cells.append(f"{vals[0]:.3f}" + (f" ± {se:.3f}" if se is not None else ""))
        lines.append(f"| {label} | {len(results)} | " + " | ".join(cells) + " |")
    counts = [str(rows[0][1][0]["fine"][n]["count"]) for n in names] if rows else []
    lines.append("| probes (one seed) | | " + " | ".join(counts) + " |")
    return "\n".join(lines) + "\n"


def view_table(rows: list[tuple[str, list[dict]]], tgt_len: int) -> str:
    """Markdown: XL recall beyond W with the fact in one attention step's view or not
    (`direct_split`), mean over seeds with the probe count of all seeds."""
    lines = ["| model | 1-2W in view | 1-2W out of view | 2-4W out of view |",
             "|---|---|---|---|"]
    for label, results in rows:
        if results[0]["arch"] != "xl" or "position" not in results[0]["probes"]:
            continue
        cells = []
        for lo, hi, part in ((1, 2, "in view"), (1, 2, "out of view"), (2, 4, "out of view")):
            parts = [direct_split(r, tgt_len, lo, hi)[part] for r in results]
            vals = [p["accuracy"] for p in parts if p["accuracy"] is not None]
            n = sum(p["count"] for p in parts)
            cells.append(f"{np.mean(vals):.3f} (n={n})" if vals else "–")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n" if len(lines) > 2 else ""


def plot(rows: list[tuple[str, list[dict]]], path: Path) -> Path:
    """Recall against distance / W (bucket centres), one line per model, chance dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    centres = [(lo + hi) / 2 if hi != np.inf else lo * 1.25
               for lo, hi in zip(EDGES[:-1], EDGES[1:], strict=True)]
    names = bucket_names()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for label, results in rows:
        arr = np.array([[np.nan if r["fine"][n]["accuracy"] is None else r["fine"][n]["accuracy"]
                         for n in names] for r in results])
        mean = np.nanmean(arr, axis=0) if arr.size else arr
        std = np.nanstd(arr, axis=0, ddof=1) if len(results) > 1 else np.zeros(len(names))
        style = "-" if results[0]["arch"] == "xl" else "--"
        ax.errorbar(centres, mean, yerr=std, ls=style, marker="o", ms=3, capsize=2, label=label)
    ax.axhline(rows[0][1][0]["chance"], color="grey", lw=1, ls=":", label="chance")
    ax.axvline(1.0, color="black", lw=0.5)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("distance from fact to answer / W")
    ax.set_ylabel("forced-choice recall")
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", default="runs/reach_study")
    parser.add_argument("--depths", default="2,3,4,6")
    parser.add_argument("--cost-depth", type=int, default=2,
                        help="depth of the equal-attention-cost XL/window pairs")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--part", choices=("all", "depth", "cost"), default="all",
                        help="depth sweep, equal-cost pairs, or both")
    parser.add_argument("--parallel", type=int, default=1, help="trainings at a time")
    parser.add_argument("--report", action="store_true",
                        help="train nothing: tabulate the evaluated runs found under --root")
    parser.add_argument("overrides", nargs="*", help="extra section.key=value for every run")
    args = parser.parse_args(argv)
    from longctx import log

    log.configure()  # library notes hidden, as in the longctx command

    from longctx.config import parse_overrides
    from longctx.train import presets
    from longctx.train.sweep import run_sweep

    size = presets.COMPARISON["readme"]
    root = Path(args.root)
    seeds = args.seeds.split(",")
    base = ["name=reach_study", *size.overrides(), *args.overrides]
    cfg = parse_overrides(_comparison_config(), base)
    models = variants([int(d) for d in args.depths.split(",")], args.cost_depth,
                      cfg.data.span, cfg.model.xl.tgt_len, args.part)
    start = time.time()

    def train_and_evaluate(job: tuple[dict, str]) -> dict:
        """One (model, seed): train (skipped when done), then its reach.json."""
        model, seed = job
        common = base + model["overrides"]
        common += presets.batch_overrides(_comparison_config(), model["arch"],
                                          size.tokens_per_step, common)
        (run,) = run_sweep(str(HERE / "dialogue_comparison.py"), root / _tag(model["label"]),
                           {"train.seed": [seed], "model.arch": [model["arch"]]}, common)
        if run.status == "failed":
            raise SystemExit(f"training failed for {run.workdir}")
        result = evaluate_reach(run.workdir)
        print(f"{model['label']} seed {seed}: done ({time.time() - start:.0f}s so far)",
              flush=True)
        return result

    if args.report:
        rows = []
        for model in models:
            found = sorted((root / _tag(model["label"])).glob("*/reach.json"))
            if found:
                rows.append((model["label"], [json.loads(p.read_text()) for p in found]))
        if not rows:
            raise SystemExit(f"no evaluated runs (reach.json) under {root}")
    else:
        jobs = [(model, seed) for model in models for seed in seeds]
        with ThreadPoolExecutor(max_workers=max(args.parallel, 1)) as pool:
            results = list(pool.map(train_and_evaluate, jobs))
        rows = [(model["label"], results[i * len(seeds):(i + 1) * len(seeds)])
                for i, model in enumerate(models)]
    text = table(rows) + "\n" + view_table(rows, cfg.model.xl.tgt_len)
    out = root / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "reach.md").write_text("# Reach study\n\n" + text)
    plot(rows, out / "recall_vs_distance_fine.png")
    print(text)
    print(f"done in {time.time() - start:.0f}s; table and plot in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
