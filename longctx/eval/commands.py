"""The `evaluate` and `compare` subcommands."""

from __future__ import annotations

import argparse
from pathlib import Path

from longctx.errors import UserError


def _evaluate(args: argparse.Namespace) -> int:
    from longctx.eval import evaluate
    from longctx.fsguard import check_dir_arg, machine_limits, remove_tree
    from longctx.rundir import load_run
    from longctx.rundir.lock import RunLock
    from longctx.rundir.outputs import check_output

    workdir = check_dir_arg(args.workdir, "--workdir")
    if not workdir.is_dir():
        raise UserError(f"--workdir {workdir}: no such directory")
    out = check_output(args.out if args.out is not None else workdir / "eval.json", "--out",
                       reads=(args.source,))
    # Writing into the run makes this command its owner while it runs (a file elsewhere
    # does not: evaluating a run that is training is fine then).
    run_path = workdir.absolute().resolve()
    inside = run_path in out.absolute().resolve().parents
    with RunLock(workdir, "evaluate", enabled=inside, create=False,
                 busy_hint="wait for it, or pass --out outside the run directory"):
        run = load_run(workdir)
        result = evaluate.evaluate(run, args.dataset, args.split, with_speed=not args.no_speed,
                                   source=args.source)
        with machine_limits(f"--out {out}", "cannot write the results",
                            cleanup=remove_tree(out.with_suffix(".json.tmp"))):
            path = evaluate.write(result, out)
    print(summary_lines(result))
    print(f"wrote {path}")
    return 0


def summary_lines(result: dict) -> str:
    """A few lines of the headline numbers of one eval.json."""
    r, ds = result["run"], result["dataset"]
    ppl = result["perplexity"]["overall"]
    lines = [f"{r['name']} ({r['arch']}, W={r['span']}, step {r['step']}, "
             f"{r['num_params']:,} params) on {ds['name']}/{ds['split']}: "
             f"{ds['conversations']} conversations, {ds['tokens']:,} tokens",
             f"  perplexity {ppl['ppl']:.3f} over {ppl['tokens']:,} turn tokens"]
    if ds.get("source"):
        lines.insert(1, f"  source {ds['source']['path']} (sha256 {ds['source']['sha256'][:12]})")
    rec_nll = (result.get("recurrence") or {}).get("buckets")
    if rec_nll:
        cells = [f"{b} {v['nll']:.2f} (n={v['count']})" if v["nll"] is not None
                 else f"{b} – (n=0)" for b, v in rec_nll.items()]
        lines.append("  recurrence NLL/word: " + ", ".join(cells))
    rec = result.get("recall")
    if rec:
        cells = [f"{b} {v['accuracy']:.3f} (n={v['count']})" if v["accuracy"] is not None
                 else f"{b} – (n=0)" for b, v in rec["buckets"].items()]
        lines.append(f"  recall (N={rec['num_candidates']}, chance {rec['chance']:.3f}): "
                     + ", ".join(cells))
    for key, label in (("shuffle", "shuffle accuracy"), ("hits_at_1", "hits@1")):
        v = result[key]
        acc = "–" if v["accuracy"] is None else f"{v['accuracy']:.3f}"
        lines.append(f"  {label} {acc} (n={v['count']}, chance {v['chance']:.3f})"
                     if v.get("chance") else f"  {label} {acc} (n={v['count']})")
    cc = result["context_curve"]
    if cc["num_targets"]:
        pts = ", ".join(f"{c}: {x:.3f}" for c, x in zip(cc["context_lengths"], cc["mean_nll"],
                                                        strict=True))
        lines.append(f"  context curve ({cc['num_targets']} targets) NLL {pts}")
    sp = result.get("speed")
    if sp:
        lines.append(f"  speed {sp['stream']['tokens_per_s']:.0f} tok/s ({sp['stream']['mode']}); "
                     f"vanilla stride-1 recompute {sp['vanilla_recompute']['tokens_per_s']:.0f}"
                     f" tok/s (x{sp['speedup_vs_recompute']:.1f})")
    return "\n".join(lines)


def _compare(args: argparse.Namespace) -> int:
    from longctx.eval.compare import compare

    for d in args.workdirs:
        if not (Path(d).is_dir() or Path(d).is_file()):
            raise UserError(f"'{d}': no such directory or file; pass run directories (or "
                            "their evaluation files, RUN/NAME.json) to compare")
    from longctx.fsguard import machine_limits
    from longctx.rundir.outputs import check_output, staged_folder

    out = check_output(args.out, "--out", folder=True)
    # a full or read-only disk: one line; the results already in `out` stay as they were
    with machine_limits(f"--out {out}", "cannot write the results"), \
            staged_folder(out) as stage:
        table = compare(args.workdirs, stage)
    print(table)
    print(f"wrote {Path(args.out) / 'results.md'}, results.csv and plots (curves.png: training "
          "and validation curves)")
    return 0


def add_parser(subparsers) -> None:
    """Register `evaluate` and `compare`."""
    p = subparsers.add_parser("evaluate", help="run the coherence suite; writes DIR/eval.json")
    p.add_argument("--workdir", required=True, help="run directory (from longctx train)")
    p.add_argument("--dataset", default=None,
                   help="synthetic, msc or qmsum (default: the run's own dataset)")
    p.add_argument("--source", default=None,
                   help="corpus file to read (msc/qmsum JSON lines), tokenized with the "
                        "run's own tokenizer; default: the dataset's source")
    p.add_argument("--split", default="validation",
                   help="train, validation (the builder's split) or all (default validation)")
    p.add_argument("--out", default=None, help="where to write (default WORKDIR/eval.json)")
    p.add_argument("--no-speed", action="store_true", help="skip the timing measurements")
    p.set_defaults(func=_evaluate)

    p = subparsers.add_parser("compare", help="table and plots over evaluated run directories")
    p.add_argument("workdirs", nargs="+",
                   help="run directories holding eval.json, or evaluation files "
                        "(RUN/NAME.json from evaluate --out); datasets get separate tables; "
                        "a run without eval.json yet adds its training/validation curves")
    p.add_argument("--out", default="results", help="output folder (default ./results)")
    p.set_defaults(func=_compare)
