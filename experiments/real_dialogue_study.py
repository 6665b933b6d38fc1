"""Does memory help on real conversations? XL vs window vs vanilla (and, per size, the
memory mechanisms: recurrent memory tokens, XL with a retrieval memory) trained on
Multi-Session Chat, evaluated on MSC validation and, with the same models and tokenizer,
on QMSum.

Fair as in experiments/dialogue_comparison.py: one tokenizer and dataset (MSC, trained on
its training split), the same token budget and tokens per optimiser step, one module tree
(identical parameter counts), and a matched span W (XL `mem_len = W` with `tgt_len <= W`,
`window = W`, `ctx_len = W`). Real text has no planted facts, so the memory metric is the
recurrence NLL (docs/eval_json.md): content words by distance to their previous mention.

    python experiments/real_dialogue_study.py --size tiny     # end-to-end check, minutes
    python experiments/real_dialogue_study.py --size cpu      # downloads MSC and QMSum
    python experiments/real_dialogue_study.py --size cpu \\
        --msc /path/msc/msc_dialogue/session_3/test.txt --qmsum /path/QMSum/data/ALL/jsonl/train.jsonl
    python experiments/real_dialogue_study.py --size cpu-memory --no-qmsum --msc FILE

A size's `archs` are trained first, then its `derived` models, each from the run of its
source architecture with the same seed (`train.init_from`; e.g. the trained XL run with a
retrieval memory, 0 steps). `--no-qmsum` skips the QMSum evaluation and tables.

Every (model, seed) trains in its own run directory under --root (finished runs skipped,
unfinished resumed); each is evaluated on MSC validation (`eval.json`) and on the QMSum
file's validation meetings (`--source`, `eval_qmsum.json`, the MSC run's own tokenizer);
then `longctx compare` writes one section per corpus, and this script prints (and writes
to ROOT/results/study.md) perplexity by session (MSC: sessions 1-3), by part (QMSum: each
meeting cut into 4 equal parts) and recurrence NLL by distance, mean ± std over seeds, for
every model it ran; ROOT/timings.json keeps each stage's wall-clock seconds.
Without --msc / --qmsum the builders download the official releases into the data_dir
(once, checked; on a machine without a network pass the files). `longctx train --config
experiments/real_dialogue_study.py --workdir DIR` trains the cpu size's XL by hand.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from longctx.config import Config, parse_overrides
from longctx.train import presets

SIZES = presets.REAL_DIALOGUE  # tiny, cpu, cpu-memory (longctx/train/presets.py)
REPO = Path(__file__).resolve().parents[1]
SAMPLES = REPO / "tests" / "data"
# Per size: the default (MSC, QMSum) files (None: --msc / --qmsum, else download the
# releases) and the QMSum split evaluated (the samples' 3 meetings: 'all').
SOURCES = {"tiny": (SAMPLES / "msc_sample.jsonl", SAMPLES / "qmsum_sample.jsonl")}
QMSUM_SPLIT = {"tiny": "all"}  # other sizes: "validation"
RECURRENCE = ("new", "inside", "1-2x", "2-4x", ">4x")


def batch_overrides(arch: str, tokens_per_step: int, overrides: list[str]) -> list[str]:
    """The batch giving `arch` the same tokens per optimiser step as the others (the main
    comparison's rule, `presets.batch_overrides`, on this study's config)."""
    return presets.batch_overrides(get_config(), arch, tokens_per_step, overrides)


def get_config() -> Config:
    """The cpu size's XL on MSC; pick another model with `model.arch=window|vanilla`."""
    cfg = Config(name="real_dialogue_study")
    cfg.data.name = "msc"
    cfg.train.host_sync_every = 25
    cfg.checkpoint.keep = 2
    return parse_overrides(cfg, SIZES["cpu"].overrides())


def _download(overrides: list[str], msc: bool, qmsum: bool) -> None:
    """Fetch the releases once, before the trainings start (they then read the copies)."""
    import dataclasses

    from longctx.data.builders import builder_class
    from longctx.data.builders.base import source_path
    from longctx.errors import UserError

    data = parse_overrides(get_config(), overrides).data
    for name in [n for n, want in (("msc", msc), ("qmsum", qmsum)) if want]:
        try:
            path = source_path(dataclasses.replace(data, name=name, source=""),
                               builder_class(name))
        except UserError as exc:
            raise SystemExit(str(exc)) from None
        print(f"[0/4] {name}: {path}", flush=True)


def _longctx(*args: str) -> None:
    """`longctx ARGS` in this process (no interpreter start or JAX import per evaluation,
    and one model config's compiled scoring functions serve every seed); exits on failure."""
    from longctx.cli import main as longctx_main

    status = longctx_main(list(args))
    if status != 0:
        raise SystemExit(f"failed ({status}): longctx {' '.join(args)}")


def _timed(timings: dict[str, float], key: str, work, *args, **kwargs):
    """`work(*args, **kwargs)`, its wall-clock seconds in timings[key] when it did anything:
    the time of the latest invocation that trained or evaluated something for `key` (each
    run's own training time is its summary.json's session_seconds)."""
    t0 = time.time()
    out = work(*args, **kwargs)
    if not (isinstance(out, list) and all(r.status == "skipped" for r in out)):
        timings[key] = time.time() - t0
    return out


def _load_timings(root: Path) -> dict[str, float]:
    path = root / "timings.json"
    return json.loads(path.read_text()) if path.exists() else {}


def _save_timings(root: Path, timings: dict[str, float]) -> None:
    """Each stage's wall-clock seconds, kept across resumed invocations (ROOT/timings.json)."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "timings.json").write_text(json.dumps(timings, indent=1) + "\n")


# ----------------------------------------------------------------------------- tables


def _cell(values: list[float | None], decimals: int = 3, signed: bool = False) -> str:
    v = [x for x in values if x is not None and np.isfinite(x)]
    if not v:
        return "–"
    text = f"{np.mean(v):{'+' if signed else ''}.{decimals}f}"
    return text + (f" ± {np.std(v, ddof=1):.{decimals}f}" if len(v) > 1 else "")


def _table(title: str, head: list[str], body: list[list[str]]) -> str:
    lines = [f"### {title}", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(row) + " |" for row in body]
    return "\n".join(lines) + "\n"


def study_tables(evals: dict[str, list[dict]], corpus: str) -> str:
    """Perplexity by session / part and recurrence NLL by distance, one row per arch
    (mean ± std over its seeds' eval dicts `evals[arch]`)."""
    out = []
    for key, label in (("by_session", "session"), ("by_part", "part")):
        keys = sorted({int(k) for evs in evals.values() for e in evs
                       for k in e["perplexity"][key]})
        if len(keys) < 2:
            continue
        body = [[arch, str(len(evs))] + [_cell([e["perplexity"][key].get(str(k), {}).get("ppl")
                                                for e in evs], 2) for k in keys]
                for arch, evs in evals.items()]
        out.append(_table(f"{corpus}: perplexity by {label}", ["arch", "seeds"] + [
            f"{label} {k + 1}" for k in keys], body))
    body = []
    for arch, evs in evals.items():
        cells = [_cell([e["recurrence"]["buckets"][b]["nll"] for e in evs]) +
                 f" (n={min(e['recurrence']['buckets'][b]['count'] for e in evs)})"
                 for b in RECURRENCE]
        body.append([arch, str(len(evs)), *cells])
    out.append(_table(f"{corpus}: recurrence NLL (nats per content word) by distance to the "
                      "previous mention", ["arch", "seeds", "new", "≤ W", "1-2 W", "2-4 W",
                                           "> 4 W"], body))
    paired = paired_differences(evals)
    if paired:
        out.append(_table(f"{corpus}: paired difference to the window model, same seed "
                          "(nats per content word; mean ± std over seeds)",
                          ["arch", "seeds", "new", "≤ W", "1-2 W", "2-4 W", "> 4 W",
                           "memory effect"], paired))
    return "\n".join(out)


def _nll(ev: dict, bucket: str) -> float:
    value = ev["recurrence"]["buckets"][bucket]["nll"]
    return np.nan if value is None else value


def memory_effect(ev: dict, base: dict) -> float:
    """How much more a model gains over `base` on recurrences beyond W than on those inside
    W, where both see the previous mention directly: the count-weighted mean difference
    over the beyond-W buckets minus the difference inside W. Overall model quality moves
    both terms alike and cancels; a negative value is memory at work."""
    far = [b for b in RECURRENCE[2:] if ev["recurrence"]["buckets"][b]["count"]]
    weights = np.array([ev["recurrence"]["buckets"][b]["count"] for b in far], float)
    diffs = np.array([_nll(ev, b) - _nll(base, b) for b in far])
    return float(np.sum(weights * diffs) / weights.sum()) - (_nll(ev, "inside")
                                                             - _nll(base, "inside"))


def paired_differences(evals: dict[str, list[dict]], base: str = "window") -> list[list[str]]:
    """Rows of per-seed differences to `base` (the lists are in the same seed order), so
    that seed-to-seed variation shared by both models cancels; then the memory effect."""
    if base not in evals:
        return []
    rows = []
    for arch, evs in evals.items():
        if arch == base or len(evs) != len(evals[base]):
            continue
        pairs = list(zip(evs, evals[base], strict=True))
        cells = [_cell([_nll(e, b) - _nll(w, b) for e, w in pairs], signed=True)
                 for b in RECURRENCE]
        rows.append([f"{arch} − {base}", str(len(pairs)), *cells,
                     _cell([memory_effect(e, w) for e, w in pairs], signed=True)])
    return rows


# ----------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", choices=sorted(SIZES), default="tiny")
    parser.add_argument("--root", default=None, help="default: runs/real_<size>")
    parser.add_argument("--seeds", default=None, help="comma list (default: the size's)")
    parser.add_argument("--parallel", type=int, default=1, help="trainings at a time")
    parser.add_argument("--msc", default=None, help="MSC session-3 JSON-lines file (training; "
                        "default: download the release)")
    parser.add_argument("--qmsum", default=None, help="QMSum JSON-lines file (evaluation; "
                        "default: download the release)")
    parser.add_argument("--no-qmsum", action="store_true",
                        help="evaluate on MSC only (no QMSum evaluation or tables)")
    parser.add_argument("overrides", nargs="*", help="extra section.key=value for every run")
    args = parser.parse_args(argv)

    from longctx import log
    from longctx.train.sweep import run_sweep

    log.configure()  # library notes hidden, as in the longctx command

    size = SIZES[args.size]
    defaults = SOURCES.get(args.size, (None, None))
    msc, qmsum = (args.msc or defaults[0]), (args.qmsum or defaults[1])
    checked = (("--msc", msc),) if args.no_qmsum else (("--msc", msc), ("--qmsum", qmsum))
    for flag, path in checked:
        if path is not None and not Path(path).is_file():
            raise SystemExit(f"{flag} '{path}': not found; pass the corpus file")
    root = Path(args.root or f"runs/real_{args.size}")
    seeds = args.seeds.split(",") if args.seeds else [str(s) for s in size.seeds]
    overrides = [f"name=real_dialogue_{args.size}", "data.name=msc",
                 *([f"data.source={Path(msc).resolve()}"] if msc else []),
                 *size.overrides(), *args.overrides]
    want_qmsum = qmsum is None and not args.no_qmsum
    if msc is None or want_qmsum:
        _download(overrides, msc is None, want_qmsum)
    msc_name = msc or "MSC (downloaded)"
    qmsum_name = qmsum or "QMSum (downloaded)"
    qmsum_source = ["--source", str(qmsum)] if qmsum else []
    start = time.time()
    timings = _load_timings(root)
    names = size.arch_names()  # the size's architectures (default: the studied ones)
    print(f"[1/4] training {len(names)} models x {len(seeds)} seeds"
          f"{f' (then {len(size.derived)} derived)' if size.derived else ''} on {msc_name} "
          f"under {root}", flush=True)
    runs = []
    for arch in names:
        common = overrides + batch_overrides(arch, size.tokens_per_step, overrides)
        runs += _timed(timings, f"train {arch}", run_sweep, __file__, root,
                       {"train.seed": seeds, "model.arch": [arch]}, common,
                       parallel=args.parallel)
    for d in size.derived:  # started from the same seed's trained source run
        common = overrides + batch_overrides(d.arch, size.tokens_per_step, overrides)
        for seed in seeds:
            source = next(r.workdir for r in runs if f"train.seed={seed}" in r.overrides
                          and f"model.arch={d.source}" in r.overrides)
            runs += _timed(timings, f"train {d.arch} seed {seed}", run_sweep,
                           __file__, root, {"train.seed": [seed], "model.arch": [d.arch]},
                           common + d.overrides(str(source)), parallel=1)
    failed = [r.workdir for r in runs if r.status == "failed"]
    if failed:
        raise SystemExit(f"training failed for {', '.join(map(str, failed))}")
    _save_timings(root, timings)
    print(f"[2/4] evaluating on MSC validation ({time.time() - start:.0f}s so far)", flush=True)
    for run in runs:
        if not (run.workdir / "eval.json").exists():
            _timed(timings, f"evaluate {run.workdir.name}", _longctx,
                   "evaluate", "--workdir", str(run.workdir), "--no-speed")
            _save_timings(root, timings)
    corpora = [("eval.json", "MSC validation")]
    if args.no_qmsum:
        print("[3/4] no QMSum evaluation (--no-qmsum)", flush=True)
    else:
        split = QMSUM_SPLIT.get(args.size, "validation")
        print(f"[3/4] evaluating on QMSum {split} ({qmsum_name}, the MSC tokenizer; "
              f"{time.time() - start:.0f}s so far)", flush=True)
        for run in runs:
            if not (run.workdir / "eval_qmsum.json").exists():
                _timed(timings, f"evaluate qmsum {run.workdir.name}", _longctx,
                       "evaluate", "--workdir", str(run.workdir), "--dataset", "qmsum",
                       *qmsum_source, "--split", split, "--no-speed",
                       "--out", str(run.workdir / "eval_qmsum.json"))
                _save_timings(root, timings)
        corpora.append(("eval_qmsum.json", "QMSum"))
    print(f"[4/4] comparing ({time.time() - start:.0f}s so far)", flush=True)
    files = [str(r.workdir / n) for n, _ in corpora for r in runs]
    _longctx("compare", *files, "--out", str(root / "results"))
    text = []
    for name, corpus in corpora:
        evals: dict[str, list[dict]] = {}
        for r in runs:
            ev = json.loads((r.workdir / name).read_text())
            evals.setdefault(ev["run"]["arch"], []).append(ev)
        text.append(study_tables(evals, corpus))  # each arch's list in seed order
    study = "\n".join(text)
    print(study)
    evaluated = "MSC only" if args.no_qmsum else f"QMSum: {qmsum_name}"
    (root / "results" / "study.md").write_text(f"# Real dialogue study ({args.size})\n\n"
                                               f"Trained on {msc_name}; {evaluated}.\n\n{study}")
    _save_timings(root, timings)
    print(f"done in {time.time() - start:.0f}s; tables and plots in {root / 'results'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
