"""Does a retrieval memory let a trained Transformer-XL reach past 2W, with no retraining?

Scores the forced-choice recall of every validation probe of one trained XL run (or an
`xl_retrieval` run, e.g. one fine-tuned with its store from an XL run by `train.init_from`)
twice over the same parameters: as XL, and as `xl_retrieval` (XL's memory plus a store of the rows
that left it, each query attending to its top-k stored keys at a clamped distance:
Unlimiformer's training-free setting) for each k given. Prints recall by distance bucket
with standard errors and z = (recall - chance) / stderr, and writes the table to
`--out` (JSON). Nothing is written into the run directory.

    python experiments/retrieval_reach.py --workdir runs/xl_readme --k 8 32 --store 2048

`--data-from RUN` scores the validation split of RUN's dataset instead of the run's own
(same tokenizer files required): a run fine-tuned on other training data (e.g. facts
planned farther back, built with `data.tokenizer_from`) is then scored on exactly the
probes of the run it started from. The validation split is not independent of the
training-split options: the synthetic build plans every distance with the characters
per token measured on the training split, so another `data.train_near_max` shifts it.

`--data-seed N` scores a synthetic dataset drawn afresh with generation seed N (other
conversations, facts and values, the same options), tokenized with the run's own tokenizer
(`data.tokenizer_from`): the same question on probes the run never saw in any form.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np


def recall_of(run, model_cfg) -> tuple[dict, float]:
    """eval.json's recall section for `run`'s parameters under `model_cfg`, and seconds."""
    from longctx.eval import probes
    from longctx.eval.corpus import load_corpus
    from longctx.eval.evaluate import SEED, recall
    from longctx.eval.scoring import Scorer
    from longctx.models import archs

    start = time.perf_counter()
    cfg = run.cfg
    corpus = load_corpus(run, None, "validation", cfg.eval.max_conversations)
    rng = np.random.default_rng(SEED)  # the probes `longctx evaluate` draws
    items, skipped = probes.recall_items(corpus.convs, corpus.value_tokens,
                                         cfg.eval.num_candidates, rng)
    scorer = Scorer(model_cfg, run.params, cfg.eval.vanilla_stride)
    _, scored = scorer.stream_logprobs([c.ids for c in corpus.convs],
                                       [it.request for it in items])
    rec = recall(items, scored, skipped, archs.span(model_cfg), cfg.eval.num_candidates)
    return rec, time.perf_counter() - start


def other_data(run, source: Path) -> str:
    """Give `run` the data section of the run at `source` (in place); '' or what is wrong."""
    import dataclasses

    from longctx.data.tokenizer import files_sha256
    from longctx.rundir.layout import TOKENIZER, read_config

    if not (source / TOKENIZER).is_dir() or not (Path(run.workdir) / TOKENIZER).is_dir():
        return "both runs need a tokenizer/ folder, to check they share the tokenizer"
    if files_sha256(source / TOKENIZER) != files_sha256(Path(run.workdir) / TOKENIZER):
        return f"another tokenizer than {run.workdir}'s; give a run on the same tokenizer"
    run.cfg = dataclasses.replace(run.cfg, data=read_config(source).data)
    return ""


def fresh_data(run, seed: int) -> None:
    """Give `run` (in place) its data section with generation seed `seed`, tokenized with
    the run's own tokenizer files."""
    import dataclasses

    data = dataclasses.replace(run.cfg.data, seed=seed, tokenizer_from=str(run.workdir))
    run.cfg = dataclasses.replace(run.cfg, data=data)


def table(rows: list[dict]) -> str:
    """Markdown: recall (stderr, z vs chance) per bucket, one row per variant."""
    buckets = list(rows[0]["recall"]["buckets"])
    out = ["| model | " + " | ".join(buckets) + " | seconds |",
           "|---|" + "---|" * (len(buckets) + 1)]
    for r in rows:
        chance = r["recall"]["chance"]
        cells = []
        for b in buckets:
            x = r["recall"]["buckets"][b]
            if x["accuracy"] is None:
                cells.append("-")
                continue
            z = (x["accuracy"] - chance) / x["stderr"] if x["stderr"] else float("nan")
            cells.append(f"{x['accuracy']:.3f} ± {x['stderr']:.3f} (z {z:.1f}, n {x['count']})")
        out.append(f"| {r['label']} | " + " | ".join(cells) + f" | {r['seconds']:.0f} |")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", required=True, help="a trained XL run directory")
    parser.add_argument("--k", type=int, nargs="+", default=[32], help="retrieval_k values")
    parser.add_argument("--store", type=int, default=2048, help="store_len (rows per layer)")
    parser.add_argument("--distance", type=int, default=0,
                        help="retrieval_distance (0: mem_len + tgt_len - 1)")
    parser.add_argument("--no-xl", action="store_true", help="skip the plain XL row")
    parser.add_argument("--data-from", default="",
                        help="score the validation split of this run's dataset (its data "
                        "section; the same tokenizer files as --workdir's)")
    parser.add_argument("--data-seed", type=int, default=None,
                        help="score a synthetic dataset drawn with this generation seed "
                        "instead (after --data-from; the run's tokenizer)")
    parser.add_argument("--out", default="", help="write the rows as JSON here")
    args = parser.parse_args(argv)

    from longctx.rundir import load_run

    run = load_run(args.workdir)
    if args.data_from:
        problem = other_data(run, Path(args.data_from))
        if problem:
            print(f"--data-from {args.data_from}: {problem}", file=sys.stderr)
            return 2
    if args.data_seed is not None:
        if run.cfg.data.name != "synthetic":
            print(f"--data-seed: the run's dataset is {run.cfg.data.name!r}; only synthetic "
                  "data is drawn from a seed", file=sys.stderr)
            return 2
        fresh_data(run, args.data_seed)
    if run.cfg.model.arch not in ("xl", "xl_retrieval"):  # the same parameters
        print(f"--workdir {args.workdir}: an xl or xl_retrieval run is needed, got "
              f"{run.cfg.model.arch}", file=sys.stderr)
        return 2
    variants = [] if args.no_xl else [("xl", run.cfg.model.replace(arch="xl"))]
    for k in args.k:
        m = run.cfg.model.replace(arch="xl_retrieval", xl_retrieval=dict(
            retrieval_k=k, store_len=args.store, retrieval_distance=args.distance))
        variants.append((f"xl+retrieval k={k} store={args.store}", m))
    rows = []
    for label, m in variants:
        rec, seconds = recall_of(run, m)
        rows.append({"label": label, "recall": {k: v for k, v in rec.items() if k != "probes"},
                     "seconds": seconds})
        print(table(rows[-1:]), flush=True)
    print(table(rows))
    if args.out:
        Path(args.out).write_text(json.dumps(rows, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
