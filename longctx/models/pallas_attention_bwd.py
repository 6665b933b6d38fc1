"""Backward pass of the fused XL attention as a Pallas kernel (flash-attention style).

One program per (batch, head, query block) walks every key block, recomputes the tile's
probabilities from the forward's log-sum-exp, and writes dq for its rows plus its own
partial dk, dv (one key block each) and dr (one r window each): every store goes to a place
no other program writes, so there are no atomics; the partials are summed by XLA after.
The dr window of a tile is the transpose of the forward's per-row shift (`unskew_rows`).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import pallas as pl
from jax.experimental.pallas import triton as plt

from longctx.models.pallas_attention import barrel_rotate, tile_scores, window_len


def _rotate_groups_right(x: jax.Array) -> jax.Array:
    """[R, G, n] -> out[:, g] = x[:, (g - 1) % G] (G a power of two; splits and stacks only)."""
    rows, groups, n = x.shape
    if groups == 1:
        return x
    even, odd = jnp.split(x.reshape(rows, groups // 2, 2 * n), 2, axis=-1)
    pairs = jnp.stack([_rotate_groups_right(odd), even], axis=-1)  # [R, G/2, n, 2]
    return pairs.transpose(0, 1, 3, 2).reshape(rows, groups, n)


def unskew_rows(x: jax.Array, width: int) -> jax.Array:
    """[bq, n] -> [bq, width]: out[a, c + bq - 1 - a] = x[a, c], zeros elsewhere (the
    transpose of `skew_rows`)."""
    bq, n = x.shape
    while x.shape[1] < width:  # append zero columns by doubling: [x | 0]
        x = jnp.stack([x, jnp.zeros_like(x)], axis=-1).transpose(0, 2, 1).reshape(bq, -1)
    return barrel_rotate(x, _rotate_groups_right)


def _bwd_kernel(kstart_ref, qw_ref, qr_ref, k_ref, v_ref, r_ref, do_ref, lse_ref, delta_ref,
                dqw_ref, dqr_ref, dk_ref, dv_ref, dr_ref, *, mem_rows: int, seg_len: int,
                span: int, block_q: int, block_k: int, n_kblocks: int, scale: float):
    """One (batch, head, query block): dq, and this block's partial dk, dv, dr."""
    i0 = pl.program_id(2) * block_q
    key_start = kstart_ref[0]
    qw, qr, do = qw_ref[...], qr_ref[...], do_ref[...]
    lse, delta = lse_ref[...], delta_ref[...]
    width = window_len(block_q, block_k)
    tile = functools.partial(tile_scores, mem_rows=mem_rows, seg_len=seg_len, span=span,
                             block_q=block_q, block_k=block_k, scale=scale)

    def body(jb, carry):
        dqw, dqr = carry
        j0 = jb * block_k
        k = k_ref[pl.ds(j0, block_k), :]
        v = v_ref[pl.ds(j0, block_k), :]
        s, ok, r_win = tile(qw, qr, k, r_ref, i0, j0, key_start)
        p = jnp.where(ok, jnp.exp(s - lse[:, None]), 0.0)
        dp = jnp.dot(do, v.T, preferred_element_type=jnp.float32)
        ds = p * (dp - delta[:, None]) * scale  # d loss / d (content + position term)
        dbd = unskew_rows(ds, width)
        dk_ref[pl.ds(j0, block_k), :] = jnp.dot(
            ds.T.astype(qw.dtype), qw, preferred_element_type=jnp.float32).astype(dk_ref.dtype)
        dv_ref[pl.ds(j0, block_k), :] = jnp.dot(
            p.T.astype(do.dtype), do, preferred_element_type=jnp.float32).astype(dv_ref.dtype)
        dr_ref[jb] = jnp.dot(dbd.T.astype(qr.dtype), qr,
                             preferred_element_type=jnp.float32).astype(dr_ref.dtype)
        dqw = dqw + jnp.dot(ds.astype(k.dtype), k, preferred_element_type=jnp.float32)
        dqr = dqr + jnp.dot(dbd.astype(r_win.dtype), r_win, preferred_element_type=jnp.float32)
        return dqw, dqr

    zero = jnp.zeros((block_q, qw.shape[-1]), jnp.float32)
    # every key block, masked ones included: their partials must be written (as zeros)
    dqw, dqr = jax.lax.fori_loop(0, n_kblocks, body, (zero, zero))
    dqw_ref[...] = dqw.astype(dqw_ref.dtype)
    dqr_ref[...] = dqr.astype(dqr_ref.dtype)


def backward(qw, qr, k, v, r, key_start, out, lse, g, *, mem_rows: int, span: int,
             block_q: int, block_k: int, interpret: bool):
    """Gradients (dqw, dqr, dk, dv, dr) of the padded-shape fused attention."""
    b, t, h, d = qw.shape
    n_keys = k.shape[1]
    nq, nk = t // block_q, n_keys // block_k
    width = window_len(block_q, block_k)
    delta = jnp.einsum("bthd,bthd->bht", out.astype(jnp.float32), g.astype(jnp.float32))
    kernel = functools.partial(
        _bwd_kernel, mem_rows=mem_rows, seg_len=t, span=span, block_q=block_q,
        block_k=block_k, n_kblocks=nk, scale=1.0 / np.sqrt(d))
    q_spec = pl.BlockSpec((None, block_q, None, d), lambda bi, hi, qi: (bi, qi, hi, 0))
    kv_spec = pl.BlockSpec((None, n_keys, None, d), lambda bi, hi, qi: (bi, 0, hi, 0))
    row_spec = pl.BlockSpec((None, None, block_q), lambda bi, hi, qi: (bi, hi, qi))
    part_spec = pl.BlockSpec((None, None, None, n_keys, d), lambda bi, hi, qi: (bi, hi, qi, 0, 0))
    f32 = jnp.float32
    dqw, dqr, dk, dv, dr = pl.pallas_call(
        kernel,
        grid=(b, h, nq),
        in_specs=[
            pl.BlockSpec((1,), lambda bi, hi, qi: (bi,)),
            q_spec, q_spec, kv_spec, kv_spec,
            pl.BlockSpec((r.shape[0], None, d), lambda bi, hi, qi: (0, hi, 0)),
            q_spec, row_spec, row_spec,
        ],
        out_specs=[q_spec, q_spec, part_spec, part_spec,
                   pl.BlockSpec((None, None, None, nk, width, d),
                                lambda bi, hi, qi: (bi, hi, qi, 0, 0, 0))],
        out_shape=[jax.ShapeDtypeStruct(qw.shape, qw.dtype),
                   jax.ShapeDtypeStruct(qr.shape, qr.dtype),
                   jax.ShapeDtypeStruct((b, h, nq, n_keys, d), f32),
                   jax.ShapeDtypeStruct((b, h, nq, n_keys, d), f32),
                   jax.ShapeDtypeStruct((b, h, nq, nk, width, d), f32)],
        interpret=interpret,
        compiler_params=None if interpret else plt.CompilerParams(num_warps=4, num_stages=2),
        name="xl_rel_attention_bwd",
    )(key_start, qw, qr, k, v, r, g.astype(qw.dtype), lse, delta)
    dk = dk.sum(axis=2).transpose(0, 2, 1, 3)
    dv = dv.sum(axis=2).transpose(0, 2, 1, 3)
    # tile (iq, jk)'s window starts at r row t - iq*block_q - block_q + jk*block_k
    start = (t - block_q - block_q * np.arange(nq))[:, None] + block_k * np.arange(nk)[None, :]
    index = (start[:, :, None] + np.arange(width)).reshape(-1)
    parts = dr.sum(axis=0).transpose(1, 2, 3, 0, 4).reshape(-1, h, d)  # [nq*nk*width, H, D]
    dr = jnp.zeros(r.shape, f32).at[index].add(parts)
    return (dqw, dqr, dk.astype(k.dtype), dv.astype(v.dtype), dr.astype(r.dtype))
