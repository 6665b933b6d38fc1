"""Dataset statistics: sizes per split and the probe-distance histogram by buckets of W."""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np

from longctx.data.buckets import BUCKET_NAMES, distance_bucket
from longctx.data.builders.base import SPLITS
from longctx.data.dataset import DialogueDataset
from longctx.data.synthetic_dialogues import NUM_CANDIDATES


def split_stats(ds: DialogueDataset, split: str, span: int) -> dict[str, Any]:
    """Counts of one split, and its probes per distance bucket of `span`."""
    convs = ds.conversations(split)
    lengths = np.asarray([len(c.ids) for c in convs])
    probes = [p for c in convs for p in c.probes]
    buckets = Counter(distance_bucket(p.distance, span) for p in probes)
    distances = np.asarray([p.distance for p in probes]) if probes else np.zeros(0)
    out: dict[str, Any] = {
        "conversations": len(convs),
        "turns": sum(len(c.turns) for c in convs),
        "sessions": sum(len(c.sessions) for c in convs),
        "tokens": int(lengths.sum()),
        "tokens_per_conversation": {"mean": float(lengths.mean()) if len(convs) else 0.0,
                                    "max": int(lengths.max()) if len(convs) else 0},
        "probes": len(probes),
        "probe_buckets": {name: buckets.get(name, 0) for name in BUCKET_NAMES},
    }
    if probes:
        out["distance"] = {"min": int(distances.min()), "median": float(np.median(distances)),
                           "max": int(distances.max())}
        out["probes_with_distractors"] = _with_distractors(ds, probes)
    return out


def _with_distractors(ds: DialogueDataset, probes: list) -> int:
    """Probes whose slot has >= NUM_CANDIDATES - 1 other values of the same token length."""
    lengths: dict[str, Counter] = {}
    for slot in {p.slot for p in probes}:
        lengths[slot] = Counter(len(ds.encode_value(v)) for v in ds.slot_values(slot))
    return sum(lengths[p.slot][p.answer_value_span[1] - p.answer_value_span[0]] - 1
               >= NUM_CANDIDATES - 1 for p in probes)


def dataset_stats(ds: DialogueDataset, span: int) -> dict[str, Any]:
    """Statistics of every split (probe buckets relative to `span`)."""
    return {"dataset": str(ds.root), "span": span, "vocab_size": ds.vocab_size,
            "splits": {split: split_stats(ds, split, span) for split in SPLITS}}


def format_stats(stats: dict[str, Any]) -> str:
    """A plain-text table of `dataset_stats`."""
    w = stats["span"]
    lines = [f"dataset {stats['dataset']}  (vocab {stats['vocab_size']}, W = {w})"]
    for split, s in stats["splits"].items():
        tpc = s["tokens_per_conversation"]
        lines.append(f"{split:>10}: {s['conversations']} conversations, {s['turns']} turns, "
                     f"{s['sessions']} sessions, {s['tokens']} tokens "
                     f"(mean {tpc['mean']:.0f}, max {tpc['max']} a conversation)")
        if s["probes"]:
            hist = "  ".join(f"{k}: {v}" for k, v in s["probe_buckets"].items())
            d = s["distance"]
            lines.append(f"{'':>10}  {s['probes']} probes by distance/W  {hist}")
            lines.append(f"{'':>10}  distance min {d['min']}, median {d['median']:.0f}, "
                         f"max {d['max']} ({d['max'] / w:.1f} W); "
                         f"{s['probes_with_distractors']} with >= {NUM_CANDIDATES - 1} "
                         "same-length distractors")
    return "\n".join(lines)
