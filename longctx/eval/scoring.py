"""Driving a trained model over long conversations the way each architecture is used.

Each architecture says how (`Arch.scoring`, a `ScoringPlan`): streams in chunks carrying
its state, continuations from that state or from rows of a bounded left context, or a
fixed context recomputed per window. The built-ins:

- XL: segments of `tgt_len` in order, carrying the memory; a continuation at position p is
  scored from the memory before the segment holding p-1 plus that segment's tokens up to p
  (the true continuation then gets exactly its NLL in the stream while it stays in the
  segment).
- Window: streams go chunk by chunk (W tokens) through the ring-buffer KV cache of W
  entries per layer. Token i sees keys i-W+1 .. i at every layer, so its logits depend on
  exactly the n_layer * (W-1) tokens before it: a continuation is scored on a row of that
  much left context (the ring buffer's values exactly, batched over candidates).
- Vanilla: a fixed context of ctx_len, windows laid out by `vanilla.strided_plan` (stride
  1: token t is predicted from exactly t-ctx_len .. t-1; stride s: one window per s
  targets). Continuations are always scored with stride 1.

Every call goes through one jitted function per row length with a fixed number of rows
(padded), so each shape compiles once and results do not depend on batch composition.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np

from longctx.config import ModelConfig
from longctx.models import archs, build_model, init_memory
from longctx.models.nll import greedy_hits, target_logprobs
from longctx.models.vanilla import strided_plan

ROWS = 32  # streams carried side by side (lanes) in the XL and window streaming modes
ROW_TOKENS = 8192  # tokens per jitted call of independent rows (window/vanilla contexts)


def rows_per_call(length: int) -> int:
    """Fixed rows per call for rows of `length` tokens: the largest power of two (1 .. 512)
    with at most ROW_TOKENS tokens a call, so a deep window model's long context rows keep
    a call's device memory bounded like everyone else's."""
    rows = 1
    while rows < 512 and rows * 2 * length <= ROW_TOKENS:
        rows *= 2
    return rows


@dataclass(frozen=True)
class Request:
    """Score `candidates` (token arrays) as continuations of stream `stream` at `pos`."""

    stream: int
    pos: int
    candidates: tuple[np.ndarray, ...]


@dataclass
class Scored:
    """Per candidate: log-probability and greedy (argmax) hit of each of its tokens."""

    logprobs: list[np.ndarray]
    greedy: list[np.ndarray]


def _bucket(n: int) -> int:
    """Row length for n tokens: the next power of two (at least 16), so few shapes compile."""
    return max(16, 1 << max(0, n - 1).bit_length())


def _pack(rows: Sequence[np.ndarray], length: int, count: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Token rows -> (inputs, targets) [max(count, len(rows)), length] int32: row r predicts
    its own tokens (inputs row[:-1], targets row[1:]), zero-padded on the right."""
    x = np.zeros((max(count, len(rows)), length), np.int32)
    y = np.zeros_like(x)
    for r, row in enumerate(rows):
        if row.size > 1:
            x[r, : row.size - 1] = row[:-1]
            y[r, : row.size - 1] = row[1:]
    return x, y


_JITS: dict[ModelConfig, tuple] = {}


def _compiled(cfg: ModelConfig) -> tuple:
    """The jitted scoring functions of a model config, shared by every Scorer of the process
    (evaluating twice, or the speed check, reuses the compiled code)."""
    if cfg in _JITS:
        return _JITS[cfg]
    model = build_model(cfg)
    arch = archs.get(cfg)

    def score(params, inputs, targets, memory, reset):
        logits, new_memory = model.apply(
            {"params": params}, inputs, memory, reset, deterministic=True)
        lp = target_logprobs(logits, targets)
        hit = greedy_hits(logits, targets)
        return lp, hit, new_memory

    def score_from(params, inputs, targets, memory, idx):
        reset = jnp.zeros(inputs.shape[0], bool)
        lp, hit, _ = score(params, inputs, targets, memory.take_rows(idx), reset)
        return lp, hit

    def feed(params, inputs, targets, state, reset):
        logits, state = arch.stream_feed(model, params, inputs, state, reset)
        return target_logprobs(logits, targets), state

    _JITS[cfg] = (jax.jit(score), jax.jit(score_from), jax.jit(feed))
    return _JITS[cfg]


class Scorer:
    """Per-token log-probabilities of streams and continuations for one model."""

    def __init__(self, model_cfg: ModelConfig, params, vanilla_stride: int = 1):
        self.cfg = model_cfg
        self.params = jax.device_put(params)  # once, not with every call
        self.stride = vanilla_stride
        self.arch = archs.get(model_cfg)
        self.plan = self.arch.scoring(model_cfg)
        self._score, self._score_from, self._feed = _compiled(model_cfg)

    # ------------------------------------------------------------------ low level

    def _rows(self, inputs: np.ndarray, targets: np.ndarray, memory=None, lanes=None):
        """Score [R, L] rows in fixed-size calls; returns host (logprobs, hits) [R, L].
        With `memory` (a carried state), row r continues from the state of lane lanes[r]."""
        n, length = inputs.shape
        per = ROWS if memory is not None else rows_per_call(length)
        lps, hits = [], []
        for a in range(0, n, per):
            k = min(per, n - a)
            x = np.zeros((per, length), np.int32)
            y = np.zeros((per, length), np.int32)
            x[:k], y[:k] = inputs[a : a + k], targets[a : a + k]
            if memory is None:
                mem, reset = init_memory(self.cfg, per), np.ones(per, bool)
                lp, hit, _ = self._score(self.params, x, y, mem, reset)
            else:
                idx = np.zeros(per, np.int32)
                idx[:k] = lanes[a : a + k]
                lp, hit = self._score_from(self.params, x, y, memory, idx)
            lps.append(np.asarray(lp)[:k])
            hits.append(np.asarray(hit)[:k])
        return np.concatenate(lps), np.concatenate(hits)

    # ------------------------------------------------------------------ streams

    def stream_logprobs(self, streams: Sequence[np.ndarray], requests: Sequence[Request] = (),
                        with_stream: bool = True) -> tuple[list[np.ndarray], list[Scored]]:
        """Log p(ids[t] | stream before t) for t >= 1 of every stream (the model's own
        streaming mode), and the requested continuations scored from the stream's state.
        with_stream=False skips the streams where that saves work (requests scored on
        context rows, as the window's and vanilla's)."""
        for q in requests:
            if not 1 <= q.pos <= streams[q.stream].size:
                raise ValueError(f"request position {q.pos} outside stream {q.stream}")
        if self.plan.context is None:  # continuations from the carried state
            return self._lanes(streams, requests)
        skip = [np.zeros(0)] * len(streams)
        if not with_stream:
            lps = skip
        elif self.plan.chunk is not None:
            lps = self._lanes(streams)[0]
        else:
            lps = self._strided_stream(streams)
        return lps, self._rows_requests(streams, requests)

    def _strided_stream(self, streams):
        """Strided windows of `context` tokens (`vanilla.strided_plan`), batched."""
        rows, where = [], []
        for i, ids in enumerate(streams):
            if ids.size < 2:
                continue
            starts, win, pos = strided_plan(ids.size, self.plan.context, self.stride)
            length = min(self.plan.context, ids.size - 1)
            for w, s in enumerate(starts):
                targets = np.nonzero(win == w)[0]  # target t+1 sits at row position pos[t]
                rows.append((int(s), int(s) + length))
                where.append((i, int(targets[0]), int(pos[targets[0]])))
        return self._gather(streams, rows, where, self.plan.context)

    def _gather(self, streams, rows, where, length):
        """Score context rows and scatter each row's tail into per-stream arrays."""
        out = [np.zeros(max(ids.size - 1, 0), np.float64) for ids in streams]
        if not rows:
            return out
        lp, _ = self._rows(*_pack([streams[i][s : e + 1]
                                   for (s, e), (i, _, _) in zip(rows, where, strict=True)], length))
        for r, ((s, e), (i, a, off)) in enumerate(zip(rows, where, strict=True)):
            n = e - s - off
            out[i][a : a + n] = lp[r, off : off + n]
        return out

    def _lanes(self, streams, requests=()):
        """Stream lanes of ROWS conversations chunk by chunk, carrying the model's state
        (XL memory / window ring-buffer cache); requests from the state are scored on the
        way."""
        seg = self.plan.chunk
        out = [np.zeros(max(ids.size - 1, 0), np.float64) for ids in streams]
        scored: list[Scored | None] = [None] * len(requests)
        by_seg: dict[tuple[int, int], list[int]] = {}
        for k, q in enumerate(requests):
            by_seg.setdefault((q.stream, (q.pos - 1) // seg), []).append(k)
        lmax = max((c.size for q in requests for c in q.candidates), default=1)
        req_len = _bucket(seg + lmax)
        for base in range(0, len(streams), ROWS):
            lanes = list(range(base, min(base + ROWS, len(streams))))
            n_seg = max([math.ceil((streams[i].size - 1) / seg) for i in lanes]
                        + [s + 1 for (i, s) in by_seg if i in lanes])
            state = self.arch.stream_init(self.cfg, ROWS)
            for s in range(n_seg):
                ks = [k for i in lanes for k in by_seg.get((i, s), [])]
                if ks:
                    res = self._state_requests(streams, [requests[k] for k in ks], lanes,
                                            state, s * seg, req_len)
                    for k, r in zip(ks, res, strict=True):
                        scored[k] = r
                x, y = _pack([streams[i][s * seg : (s + 1) * seg + 1] for i in lanes], seg, ROWS)
                lp, state = self._feed(self.params, x, y, state, np.full(ROWS, s == 0, bool))
                lp = np.asarray(lp)
                for j, i in enumerate(lanes):
                    n = max(0, min(seg, streams[i].size - 1 - s * seg))
                    out[i][s * seg : s * seg + n] = lp[j, :n]
        return out, scored

    def _state_requests(self, streams, reqs, lanes, memory, seg_start, length):
        """Continuations from the state `memory` (before the chunk at seg_start) + the
        chunk's prefix."""
        rows, lane_idx, offsets = [], [], []
        for q in reqs:
            prefix = streams[q.stream][seg_start : q.pos]
            for c in q.candidates:
                rows.append(np.concatenate([prefix, c]))
                lane_idx.append(lanes.index(q.stream))
                offsets.append(prefix.size - 1)
        lp, hit = self._rows(*_pack(rows, length), memory, np.asarray(lane_idx, np.int32))
        return self._split(reqs, lp, hit, offsets)

    def _rows_requests(self, streams, requests):
        """Continuations on rows of exactly the context each token can see (`plan.context`;
        `plan.per_token`: a full row of it for every candidate token)."""
        if not requests:
            return []
        vanilla = self.plan.per_token
        lmax = max(c.size for q in requests for c in q.candidates)
        ctx = self.plan.context
        length = ctx if vanilla else _bucket(ctx + lmax)
        rows, offsets, spans = [], [], []
        for q in requests:
            for c in q.candidates:
                full = np.concatenate([streams[q.stream][: q.pos], c])
                if vanilla:  # one row per candidate token: its last ctx_len tokens
                    for j in range(c.size):
                        t = q.pos + j
                        rows.append(full[max(0, t - ctx) : t + 1])
                        offsets.append(rows[-1].size - 2)
                    spans.append(c.size)
                else:
                    rows.append(full[max(0, q.pos - 1 - ctx) :])
                    offsets.append(rows[-1].size - c.size - 1)
                    spans.append(1)
        lp, hit = self._rows(*_pack(rows, length))
        if not vanilla:
            return self._split(requests, lp, hit, offsets)
        out, r = [], 0
        for q in requests:
            lps, hits = [], []
            for c in q.candidates:
                idx = np.arange(r, r + c.size)
                off = np.asarray(offsets[r : r + c.size])
                lps.append(lp[idx, off].astype(np.float64))
                hits.append(hit[idx, off])
                r += c.size
            out.append(Scored(lps, hits))
        return out

    @staticmethod
    def _split(reqs, lp, hit, offsets):
        """Cut each candidate's tokens out of its row (row r starts predicting at offset)."""
        out, r = [], 0
        for q in reqs:
            lps, hits = [], []
            for c in q.candidates:
                o = offsets[r]
                lps.append(lp[r, o : o + c.size].astype(np.float64))
                hits.append(hit[r, o : o + c.size])
                r += 1
            out.append(Scored(lps, hits))
        return out
