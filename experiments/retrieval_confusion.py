"""Does a retrieval memory confuse the two speakers' facts of one slot?

Every synthetic conversation states a value of each slot for *both* speakers. Retrieved
keys all sit at one clamped distance, so beyond XL's memory the model has content alone
to tell whose fact a stored value was. This scores each validation probe twice: forced
choice between the true value and the other speaker's value of the same slot (only
probes where both have the same number of tokens), against chance 0.5; and, for
reference, the same pairs' true value against one random value of the slot of that
length. The pairs against the other speaker are also split by whether that speaker's fact
was stated before the answer (both values are then in the model's past: the only case where
it can confuse them) or only later. Prints pairwise accuracy by distance bucket (stderr);
`--out` writes JSON.

    python experiments/retrieval_confusion.py --workdir RUN --k 32 --store 2048 \\
        [--data-from XL_RUN] [--xl]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))


def pairs(convs, value_tokens, rng):
    """(requests vs the other speaker, requests vs a random value, distances, whether the
    other speaker's value was stated before the answer)."""
    from longctx.eval.scoring import Request

    other_req, random_req, distances, twin_before = [], [], [], []
    for i, conv in enumerate(convs):
        for p in conv.probes:
            a, b = p.answer_value_span
            true = np.asarray(conv.ids[a:b], np.int32)
            twin = [q for q in conv.probes if q.slot == p.slot and q.speaker != p.speaker]
            if len(twin) != 1:
                continue
            fa, fb = twin[0].fact_value_span
            other = np.asarray(conv.ids[fa:fb], np.int32)
            pool = [v for v in value_tokens(p.slot) if v.size == true.size
                    and not np.array_equal(v, true) and not np.array_equal(v, other)]
            if other.size != true.size or np.array_equal(other, true) or not pool:
                continue
            other_req.append(Request(i, a, (true, other)))
            random_req.append(Request(i, a, (true, pool[rng.integers(len(pool))])))
            distances.append(int(p.distance))
            twin_before.append(bool(fb <= a))
    return other_req, random_req, distances, twin_before


def by_bucket(wins: list[float], distances: list[int], span: int) -> dict:
    from longctx.data.buckets import distance_bucket

    out = {}
    for name in ("inside", "1-2x", "2-4x", ">4x", "all"):
        w = np.asarray([x for x, d in zip(wins, distances, strict=True)
                        if name == "all" or distance_bucket(d, span) == name])
        acc = float(w.mean()) if w.size else None
        err = float(w.std(ddof=1) / np.sqrt(w.size)) if w.size > 1 else None
        out[name] = {"accuracy": acc, "stderr": err, "count": int(w.size)}
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", required=True, help="an xl or xl_retrieval run")
    parser.add_argument("--k", type=int, default=32, help="retrieval_k")
    parser.add_argument("--store", type=int, default=2048, help="store_len")
    parser.add_argument("--xl", action="store_true", help="score as plain XL instead")
    parser.add_argument("--data-from", default="", help="as in retrieval_reach.py")
    parser.add_argument("--out", default="", help="write the result as JSON here")
    args = parser.parse_args(argv)

    from retrieval_reach import other_data

    from longctx.eval.corpus import load_corpus
    from longctx.eval.scoring import Scorer
    from longctx.models import archs
    from longctx.rundir import load_run

    run = load_run(args.workdir)
    if args.data_from and (problem := other_data(run, Path(args.data_from))):
        print(f"--data-from {args.data_from}: {problem}", file=sys.stderr)
        return 2
    model = (run.cfg.model.replace(arch="xl") if args.xl else run.cfg.model.replace(
        arch="xl_retrieval", xl_retrieval=dict(retrieval_k=args.k, store_len=args.store)))
    corpus = load_corpus(run, None, "validation", run.cfg.eval.max_conversations)
    other_req, random_req, distances, twin_before = pairs(corpus.convs, corpus.value_tokens,
                                                          np.random.default_rng(0))
    _, scored = Scorer(model, run.params, run.cfg.eval.vanilla_stride).stream_logprobs(
        [c.ids for c in corpus.convs], other_req + random_req)
    wins = [float(s.logprobs[0].sum() > s.logprobs[1].sum()) for s in scored]
    span = archs.span(model)
    result = {"label": "xl" if args.xl else f"xl+retrieval k={args.k} store={args.store}",
              "vs_other_speaker": by_bucket(wins[:len(other_req)], distances, span),
              "vs_random_value": by_bucket(wins[len(other_req):], distances, span)}
    for key, stated in (("vs_other_speaker_stated_before", True),
                        ("vs_other_speaker_stated_later", False)):
        keep = [i for i, b in enumerate(twin_before) if b == stated]
        result[key] = by_bucket([wins[i] for i in keep], [distances[i] for i in keep], span)
    for key in ("vs_other_speaker", "vs_other_speaker_stated_before",
                "vs_other_speaker_stated_later", "vs_random_value"):
        cells = [f"{b} {x['accuracy']:.3f} ± {x['stderr']:.3f} (n {x['count']})"
                 for b, x in result[key].items() if x["accuracy"] is not None]
        print(f"{result['label']} {key}: " + "; ".join(cells))
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
