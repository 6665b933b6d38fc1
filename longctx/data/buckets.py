"""Probe-distance buckets relative to the matched span W: the one definition that the
synthetic benchmark plans with, `longctx data stats` counts by and the evaluation reports
recall by (their names are eval.json's keys, so they stay as they are).

A probe `distance` tokens after its fact falls in the first bucket whose upper end, in
units of W, it does not pass: inside (d <= W), 1-2x (W < d <= 2W), 2-4x, >4x.
"""

from __future__ import annotations

import math

BUCKETS: tuple[tuple[str, float], ...] = (  # (name, upper end in units of W)
    ("inside", 1.0),
    ("1-2x", 2.0),
    ("2-4x", 4.0),
    (">4x", math.inf),
)
BUCKET_NAMES = tuple(name for name, _ in BUCKETS)


def distance_bucket(distance: int, span: int) -> str:
    """The bucket name of a probe whose value is recalled `distance` tokens after its fact."""
    if span <= 0:
        raise ValueError(f"span must be > 0, got {span}")
    return next(name for name, upper in BUCKETS if distance <= upper * span)


def bucket_ranges(nearest: float, farthest: float) -> tuple[tuple[float, float], ...]:
    """Each bucket's (lower, upper) end in units of W, the first starting at `nearest` and
    the last (unbounded above) ending at `farthest`: ranges to plan distances in."""
    uppers = [upper for _, upper in BUCKETS[:-1]]
    return tuple(zip((nearest, *uppers), (*uppers, farthest), strict=True))
