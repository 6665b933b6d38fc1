"""Fused Transformer-XL relative attention: a Pallas flash-attention kernel (online softmax
over key blocks) with the relative shift done per tile, never the T x (M+T) score matrix.

Same maths as `attention.rel_scores` + `attention.attend` under `xl_visibility`'s mask:
score(i, j) = ((q_i + r_w) . k_j + (q_i + r_r) . r[T-1-i+j]) / sqrt(D), query i of T at key
M + i, visible iff dist = M + i - j >= 0, j >= key_start[b] (the first valid memory row) and,
with `span`, dist < span (same_length). For a (query block, key block) tile only the
~block_q + block_k rows of r that the tile's distances need are read; their product with
q + r_r is moved into place per row by `skew_rows` (rotations only, so it lowers to Triton).

Forward: one Pallas kernel per (batch, head, query block), a fori_loop over the visible key
blocks (blocks wholly in the future or before the first valid key are skipped).
Backward: by default the Pallas kernel in `pallas_attention_bwd` (probabilities recomputed
from the forward's log-sum-exp); backward='xla' instead recomputes in plain JAX, a scan over
query blocks, one [B, H, block_q, M+T] strip at a time. Any T and M: the wrapper pads queries
and keys to whole blocks (padded keys lie in every real query's future, so they are masked).
Block sizes are powers of two (Triton tiles); off a GPU the kernels run in interpret mode.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import pallas as pl
from jax.experimental.pallas import triton as plt

from longctx.models import attention as A


def default_interpret() -> bool:
    """Interpret mode unless a GPU runs the kernel (CPU: the kernel is emulated by XLA)."""
    return jax.default_backend() != "gpu"


def _visible(rows: jax.Array, cols: jax.Array, mem_rows: int, key_start, span: int) -> jax.Array:
    """[len(rows), len(cols)] bool: query rows (segment index) see key cols (key index)."""
    dist = mem_rows + rows[:, None] - cols[None, :]
    ok = (dist >= 0) & (cols[None, :] >= key_start)
    if span > 0:
        ok = ok & (dist < span)
    return ok


def _rotate_groups(x: jax.Array) -> jax.Array:
    """[R, G, n] -> out[:, g] = x[:, (g + 1) % G], G a power of two, built from even/odd
    splits, a last-axis stack and transposes only (what Pallas' Triton lowering accepts)."""
    rows, groups, n = x.shape
    if groups == 1:
        return x
    even, odd = jnp.split(x.reshape(rows, groups // 2, 2 * n), 2, axis=-1)
    pairs = jnp.stack([odd, _rotate_groups(even)], axis=-1)  # [R, G/2, n, 2]
    return pairs.transpose(0, 1, 3, 2).reshape(rows, groups, n)


def barrel_rotate(x: jax.Array, rotate) -> jax.Array:
    """Row a of x [bq, W] rotated by bq-1-a group steps of `rotate` ([R, G, n] -> [R, G, n],
    one group along): one conditional rotation per bit of the shift (a barrel shifter), so
    no pad, slice or gather is needed."""
    bq, width = x.shape
    shift = (bq - 1) - jnp.arange(bq)
    bit = 1
    while bit < bq:
        rolled = rotate(x.reshape(bq, width // bit, bit)).reshape(bq, width)
        x = jnp.where((jnp.bitwise_and(shift, bit) != 0)[:, None], rolled, x)
        bit *= 2
    return x


def skew_rows(x: jax.Array, n_keys: int) -> jax.Array:
    """[bq, W] -> [bq, n_keys]: out[a, c] = x[a, c + bq - 1 - a] (the tile's relative shift).
    W and n_keys powers of two, W >= bq + n_keys - 1; row a is rotated left by bq-1-a."""
    width = x.shape[1]
    return jnp.split(barrel_rotate(x, _rotate_groups), width // n_keys, axis=-1)[0]


def window_len(block_q: int, block_k: int) -> int:
    """r rows one tile reads: the smallest power of two >= block_q + block_k - 1."""
    return int(pl.next_power_of_2(block_q + block_k - 1))


def tile_scores(qw, qr, k, r_ref, i0, j0, key_start, *, mem_rows: int, seg_len: int,
                span: int, block_q: int, block_k: int, scale: float):
    """Query block i0 against key block j0 -> (scaled scores [block_q, block_k]: the content
    term plus the position term relative-shifted within the tile; which are visible; the
    window of r rows the tile read, which the backward needs again)."""
    # distances of this tile: r rows seg_len-1-i+j for i in the block, j in the key block
    r_win = r_ref[pl.ds(seg_len - i0 - block_q + j0, window_len(block_q, block_k)), :]
    ac = jnp.dot(qw, k.T, preferred_element_type=jnp.float32)
    bd = jnp.dot(qr, r_win.T, preferred_element_type=jnp.float32)
    ok = _visible(i0 + jnp.arange(block_q), j0 + jnp.arange(block_k), mem_rows, key_start,
                  span)
    return (ac + skew_rows(bd, block_k)) * scale, ok, r_win


# ----------------------------------------------------------------------------- forward kernel


def _fwd_kernel(kstart_ref, qw_ref, qr_ref, k_ref, v_ref, r_ref, o_ref, lse_ref, *,
                mem_rows: int, seg_len: int, span: int, block_q: int, block_k: int,
                n_kblocks: int, scale: float):
    """One (batch, head, query block): online softmax over the visible key blocks."""
    i0 = pl.program_id(2) * block_q
    key_start = kstart_ref[0]
    qw = qw_ref[...]
    qr = qr_ref[...]
    tile = functools.partial(tile_scores, mem_rows=mem_rows, seg_len=seg_len, span=span,
                             block_q=block_q, block_k=block_k, scale=scale)

    def body(jb, carry):
        acc, m_prev, l_prev = carry
        j0 = jb * block_k
        k = k_ref[pl.ds(j0, block_k), :]
        v = v_ref[pl.ds(j0, block_k), :]
        s, ok, _ = tile(qw, qr, k, r_ref, i0, j0, key_start)
        s = jnp.where(ok, s, A.NEG_INF)
        m_new = jnp.maximum(m_prev, jnp.max(s, axis=-1))
        p = jnp.where(ok, jnp.exp(s - m_new[:, None]), 0.0)
        alpha = jnp.exp(m_prev - m_new)
        l_new = alpha * l_prev + jnp.sum(p, axis=-1)
        pv = jnp.dot(p.astype(v.dtype), v, preferred_element_type=jnp.float32)
        return alpha[:, None] * acc + pv, m_new, l_new

    first = jnp.maximum(key_start, mem_rows + i0 - span + 1) if span > 0 else key_start
    lo = jnp.maximum(first, 0) // block_k
    hi = jnp.minimum(n_kblocks, (mem_rows + i0 + block_q - 1) // block_k + 1)
    init = (jnp.zeros((block_q, qw.shape[-1]), jnp.float32),
            jnp.full((block_q,), A.NEG_INF, jnp.float32),
            jnp.zeros((block_q,), jnp.float32))
    acc, m, total = jax.lax.fori_loop(lo, hi, body, init)
    o_ref[...] = (acc / total[:, None]).astype(o_ref.dtype)
    lse_ref[...] = m + jnp.log(total)


def _forward(qw, qr, k, v, r, key_start, *, mem_rows: int, span: int, block_q: int,
             block_k: int, interpret: bool):
    """Padded shapes (T % block_q == 0, K % block_k == 0, r of the padded layout) ->
    (out [B, T, H, D], lse [B, H, T] float32)."""
    b, t, h, d = qw.shape
    n_keys = k.shape[1]
    kernel = functools.partial(
        _fwd_kernel, mem_rows=mem_rows, seg_len=t, span=span, block_q=block_q,
        block_k=block_k, n_kblocks=n_keys // block_k, scale=1.0 / np.sqrt(d))
    q_spec = pl.BlockSpec((None, block_q, None, d), lambda bi, hi, qi: (bi, qi, hi, 0))
    kv_spec = pl.BlockSpec((None, n_keys, None, d), lambda bi, hi, qi: (bi, 0, hi, 0))
    return pl.pallas_call(
        kernel,
        grid=(b, h, t // block_q),
        in_specs=[
            pl.BlockSpec((1,), lambda bi, hi, qi: (bi,)),
            q_spec, q_spec, kv_spec, kv_spec,
            pl.BlockSpec((r.shape[0], None, d), lambda bi, hi, qi: (0, hi, 0)),
        ],
        out_specs=[q_spec, pl.BlockSpec((None, None, block_q), lambda bi, hi, qi: (bi, hi, qi))],
        out_shape=[jax.ShapeDtypeStruct(qw.shape, qw.dtype),
                   jax.ShapeDtypeStruct((b, h, t), jnp.float32)],
        interpret=interpret,
        compiler_params=None if interpret else plt.CompilerParams(num_warps=4, num_stages=2),
        name="xl_rel_attention_fwd",
    )(key_start, qw, qr, k, v, r)


# ----------------------------------------------------------------------------- backward


def _attend_rows(qw, qr, k, v, r_win, key_start, rows, *, mem_rows: int, span: int):
    """Reference maths for the query rows `rows` (qw/qr [B, n, H, D]) against all keys,
    r_win [n + K, H, D] the r rows their distances need -> [B, n, H, D]."""
    n_keys = k.shape[1]
    scale = 1.0 / np.sqrt(qw.shape[-1])
    ac = jnp.einsum("bqhd,bkhd->bhqk", qw, k, preferred_element_type=jnp.float32)
    bd = jnp.einsum("bqhd,khd->bhqk", qr, r_win, preferred_element_type=jnp.float32)
    scores = (ac + A.rel_shift(bd)[..., :n_keys]) * scale
    cols = jnp.arange(n_keys)
    ok = jax.vmap(lambda ks: _visible(rows, cols, mem_rows, ks, span))(key_start)
    return A.attend(scores, ok[:, None], v)


def _backward(qw, qr, k, v, r, key_start, g, *, mem_rows: int, span: int, block_q: int):
    """Gradients by recomputing one query block's strip at a time (lax.scan over blocks)."""
    b, t, h, d = qw.shape
    n_keys = k.shape[1]
    nq = t // block_q

    def blocks(x):
        return x.reshape(b, nq, block_q, h, d).swapaxes(0, 1)

    def one(carry, xs):
        dk, dv, dr = carry
        qw_b, qr_b, g_b, qi = xs
        i0 = qi * block_q
        start = t - i0 - block_q
        r_win = jax.lax.dynamic_slice_in_dim(r, start, block_q + n_keys)
        rows = i0 + jnp.arange(block_q)
        fn = functools.partial(_attend_rows, key_start=key_start, rows=rows,
                               mem_rows=mem_rows, span=span)
        _, vjp = jax.vjp(fn, qw_b, qr_b, k, v, r_win)
        dqw_b, dqr_b, dk_b, dv_b, dr_win = vjp(g_b)
        dr = jax.lax.dynamic_update_slice_in_dim(
            dr, jax.lax.dynamic_slice_in_dim(dr, start, block_q + n_keys) + dr_win, start, 0)
        return (dk + dk_b, dv + dv_b, dr), (dqw_b, dqr_b)

    zeros = (jnp.zeros(k.shape, jnp.float32), jnp.zeros(v.shape, jnp.float32),
             jnp.zeros(r.shape, jnp.float32))
    (dk, dv, dr), (dqw, dqr) = jax.lax.scan(
        one, zeros, (blocks(qw), blocks(qr), blocks(g), jnp.arange(nq)))

    def unblock(x):
        return x.swapaxes(0, 1).reshape(b, t, h, d)

    return (unblock(dqw).astype(qw.dtype), unblock(dqr).astype(qr.dtype),
            dk.astype(k.dtype), dv.astype(v.dtype), dr.astype(r.dtype))


@functools.partial(jax.custom_vjp, nondiff_argnums=(6, 7, 8, 9, 10, 11))
def _fused(qw, qr, k, v, r, key_start, mem_rows, span, block_q, block_k, interpret, backward):
    """The differentiable fused attention on padded shapes -> out [B, T, H, D]."""
    return _forward(qw, qr, k, v, r, key_start, mem_rows=mem_rows, span=span,
                    block_q=block_q, block_k=block_k, interpret=interpret)[0]


def _fused_fwd(qw, qr, k, v, r, key_start, mem_rows, span, block_q, block_k, interpret,
               backward):
    out, lse = _forward(qw, qr, k, v, r, key_start, mem_rows=mem_rows, span=span,
                        block_q=block_q, block_k=block_k, interpret=interpret)
    return out, (qw, qr, k, v, r, key_start, out, lse)


def _fused_bwd(mem_rows, span, block_q, block_k, interpret, backward, res, g):
    qw, qr, k, v, r, key_start, out, lse = res
    if backward == "pallas":
        from longctx.models import pallas_attention_bwd  # imports this module's helpers

        grads = pallas_attention_bwd.backward(
            qw, qr, k, v, r, key_start, out, lse, g, mem_rows=mem_rows, span=span,
            block_q=block_q, block_k=block_k, interpret=interpret)
    else:
        grads = _backward(qw, qr, k, v, r, key_start, g, mem_rows=mem_rows, span=span,
                          block_q=block_q)
    return (*grads, np.zeros(key_start.shape, jax.dtypes.float0))


_fused.defvjp(_fused_fwd, _fused_bwd)


# ----------------------------------------------------------------------------- public entry


def reference_attention(q, k, v, r, r_w_bias, r_r_bias, key_start, *, span: int = 0):
    """The unfused maths `rel_attention` must match: `attention.rel_scores` + `attend` under
    XL's mask (dist >= 0, key >= key_start[b], dist < span when span > 0). Full scores."""
    t, n_keys = q.shape[1], k.shape[1]
    cols = jnp.arange(n_keys)
    ok = jax.vmap(lambda ks: _visible(jnp.arange(t), cols, n_keys - t, ks, span))(key_start)
    return A.attend(A.rel_scores(q, k, r, r_w_bias, r_r_bias), ok[:, None], v)


def rel_attention(
    q: jax.Array,
    k: jax.Array,
    v: jax.Array,
    r: jax.Array,
    r_w_bias: jax.Array,
    r_r_bias: jax.Array,
    key_start: jax.Array,
    *,
    span: int = 0,
    block_q: int = 64,
    block_k: int = 64,
    interpret: bool | None = None,
    backward: str = "pallas",
) -> jax.Array:
    """q [B, T, H, D], k/v [B, M+T, H, D], r [M+T, H, D] (distances M+T-1 .. 0), biases
    [H, D], key_start [B] int (first valid key) -> softmax-weighted v [B, T, H, D] in v's
    dtype, as `attention.attend(attention.rel_scores(...), xl_visibility mask, v)`.
    span > 0: keys at distance >= span are hidden (same_length). Differentiable: backward
    'pallas' (the kernel in pallas_attention_bwd) or 'xla' (blocked recompute in plain JAX)."""
    b, t, h, d = q.shape
    n_keys = k.shape[1]
    mem_rows = n_keys - t
    if mem_rows < 0 or r.shape[0] != n_keys or v.shape[1] != n_keys:
        raise ValueError(f"rel_attention: expected k, v [B, M+T, H, D] and r [M+T, H, D] with "
                         f"M >= 0 for q of length T={t}; got k {k.shape}, v {v.shape}, r {r.shape}")
    if backward not in ("pallas", "xla"):
        raise ValueError(f"rel_attention: backward must be 'pallas' or 'xla', got {backward!r}")
    for name, size in (("block_q", block_q), ("block_k", block_k)):
        if size <= 0 or size & (size - 1):
            raise ValueError(f"rel_attention: {name} must be a power of two, got {size}")
    block_q = min(block_q, int(pl.next_power_of_2(t)))
    t_pad = -(-t // block_q) * block_q
    block_k = min(block_k, int(pl.next_power_of_2(mem_rows + t_pad)))
    k_pad = -(-(mem_rows + t_pad) // block_k) * block_k
    if interpret is None:
        interpret = default_interpret()
    dt = q.dtype
    qw = jnp.pad(q + r_w_bias.astype(dt), [(0, 0), (0, t_pad - t), (0, 0), (0, 0)])
    qr = jnp.pad(q + r_r_bias.astype(dt), [(0, 0), (0, t_pad - t), (0, 0), (0, 0)])
    kv_pad = [(0, 0), (0, k_pad - n_keys), (0, 0), (0, 0)]
    # r in the padded layout: row idx holds distance (M + t_pad - 1) - idx; the tail covers
    # the (masked) future distances of the last key block.
    tail = k_pad + window_len(block_q, block_k)
    r_p = jnp.pad(r.astype(dt), [(t_pad - t, tail), (0, 0), (0, 0)])
    starts = jnp.asarray(key_start, jnp.int32).reshape(b)
    out = _fused(qw, qr, jnp.pad(k, kv_pad), jnp.pad(v.astype(dt), kv_pad), r_p, starts,
                 mem_rows, int(span), block_q, block_k, bool(interpret), backward)
    return out[:, :t].astype(v.dtype)
