"""One decoder layer: relative multi-head attention (fused qkv_net, r_net, o_net) + ReLU
feed-forward, post-LN (the original) or pre-LN. Shared by every architecture.

`__call__` is the training/segment path; how it attends is the pass's `LayerPass` (dense
under a mask, the fused Pallas kernel, or blocked band attention), a static argument found
by name (`static_argnum`), so rematerialisation does not depend on argument positions. The
decoders reuse the pieces (`project`, `rel_proj`, `attend`, `finish`) step by step.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from longctx.config import ModelConfig
from longctx.models import attention as A
from longctx.models import pallas_attention
from longctx.models.primitives import compute_dtype, init


@dataclass(frozen=True)
class LayerPass:
    """How a layer attends in one pass (static: it selects the code path).

    dense (default): `view` is the visibility mask [B|1, T, M+T] over concat(mem, h);
    fused: the Pallas kernel, `view` [B] each row's first valid key (it builds the causal /
    same_length mask itself); band = (block C, history m): blocked band attention, `mem`
    empty, T a multiple of C, `view` [nb, C, (m+1)C] from `attention.band_mask`, pos_emb of
    length (m+1)C."""

    deterministic: bool = True
    fused: bool = False
    band: tuple[int, int] | None = None


def static_argnum(fn, name: str) -> int:
    """The position of parameter `name` in `fn`'s signature (self included, as nn.remat
    counts), so a static argument is found by its name."""
    return list(inspect.signature(fn).parameters).index(name)


class FusedQKV(nn.Module):
    """The fused q/k/v projection (one [d_model, 3 H D] kernel, the original's `qkv_net`).

    `__call__` projects every row to q, k and v in one matmul; `split` projects only the
    query rows to q and all rows to k, v (XL: the memory rows need no queries), reading
    slices of the same kernel.
    """

    features: int  # 3 * n_head * d_head
    dtype: jnp.dtype
    kernel_init: nn.initializers.Initializer

    @nn.compact
    def __call__(self, x: jax.Array, n_query: int | None = None):
        kernel = self.param("kernel", self.kernel_init, (x.shape[-1], self.features), jnp.float32)
        kernel = kernel.astype(self.dtype)
        x = x.astype(self.dtype)
        if n_query is None:
            return jnp.split(x @ kernel, 3, axis=-1)
        hd = self.features // 3
        q = x[..., x.shape[-2] - n_query :, :] @ kernel[:, :hd]
        k, v = jnp.split(x @ kernel[:, hd:], 2, axis=-1)
        return q, k, v


class DecoderLayer(nn.Module):
    """Parameters: qkv_net, r_net, o_net (no bias), attn_norm, ff_in, ff_out, ff_norm,
    and r_w_bias/r_r_bias [n_head, d_head] when cfg.untie_r."""

    cfg: ModelConfig

    def setup(self) -> None:
        c = self.cfg
        dt = compute_dtype(c)
        hd = c.n_head * c.d_head
        dense = dict(dtype=dt, param_dtype=jnp.float32, kernel_init=init(c))
        self.qkv_net = FusedQKV(3 * hd, dtype=dt, kernel_init=init(c))
        self.r_net = nn.Dense(hd, use_bias=False, **dense)
        self.o_net = nn.Dense(c.d_model, use_bias=False, **dense)
        self.attn_norm = nn.LayerNorm(epsilon=1e-5, dtype=dt)
        self.ff_in = nn.Dense(c.d_inner, **dense)
        self.ff_out = nn.Dense(c.d_model, **dense)
        self.ff_norm = nn.LayerNorm(epsilon=1e-5, dtype=dt)
        self.drop = nn.Dropout(c.dropout)
        self.drop_att = nn.Dropout(c.dropatt)
        if c.untie_r:
            self.r_w_bias = self.param("r_w_bias", init(c), (c.n_head, c.d_head))
            self.r_r_bias = self.param("r_r_bias", init(c), (c.n_head, c.d_head))

    # ------------------------------------------------------------------ pieces

    def biases(self, r_w_bias: jax.Array | None, r_r_bias: jax.Array | None):
        """This layer's (r_w_bias, r_r_bias): its own when untied, else the shared ones."""
        if self.cfg.untie_r:
            return self.r_w_bias, self.r_r_bias
        return r_w_bias, r_r_bias

    def project(
        self, x: jax.Array, n_query: int | None = None
    ) -> tuple[jax.Array, jax.Array, jax.Array]:
        """Keys' source rows [..., K, d] -> q [..., Q, H, D] for the last Q = n_query rows
        (default all K), k, v [..., K, H, D]."""
        c = self.cfg
        if c.pre_lnorm:
            x = self.attn_norm(x)
        q, k, v = self.qkv_net(x, None if n_query == x.shape[-2] else n_query)

        def heads(y):
            return y.reshape(y.shape[:-1] + (c.n_head, c.d_head))

        return heads(q), heads(k), heads(v)

    def rel_proj(self, pos_emb: jax.Array) -> jax.Array:
        """Sinusoids [K, d_model] -> r [K, H, D]."""
        c = self.cfg
        r = self.r_net(pos_emb.astype(compute_dtype(c)))
        return r.reshape(pos_emb.shape[:-1] + (c.n_head, c.d_head))

    def attend_one(self, q, k, v, kc, vc, table, dist, seen, r_w_bias, r_r_bias) -> jax.Array:
        """Decoding: the new token (q, k, v [B, 1, H, D]) attends to itself and to the cached
        keys kc [B, H, D, K] and values vc [B, H, K, D] (the layout XLA's CPU dots read
        without a copy) where seen [B, K]; dist [K] holds the cached keys' distances, rows
        of `table` [S, d_model] (sinusoids of distances 0 .. S-1; the token's own is 0)
        -> [B, 1, H, D].
        The token's own key is scored apart, so the cache is only read (never copied to
        insert the new row), and the positional term is ((q + r_r_bias) W_r^T) . table:
        the query goes back through r_net's kernel once (d_model H D) instead of all K
        sinusoids going through it (K d_model H D), is scored against the constant table
        in distance order, and each key takes the score of its distance (a gather of
        K scores, not of K sinusoid rows)."""
        c = self.cfg
        rw, rr = self.biases(r_w_bias, r_r_bias)
        f32 = jnp.float32
        kernel = self.r_net.variables["params"]["kernel"].astype(q.dtype)
        kernel = kernel.reshape(c.d_model, c.n_head, c.d_head)
        qw = q + rw.astype(q.dtype)
        u = jnp.einsum("bqhd,mhd->bhqm", q + rr.astype(q.dtype), kernel, preferred_element_type=f32)
        by_distance = jnp.einsum("bhqm,km->bhqk", u, table)
        scale = 1.0 / np.sqrt(c.d_head)
        cached = (jnp.einsum("bqhd,bhdk->bhqk", qw, kc, preferred_element_type=f32)
                  + jnp.take(by_distance, dist, axis=-1, mode="clip")) * scale
        own = (jnp.einsum("bqhd,bkhd->bhqk", qw, k, preferred_element_type=f32)
               + by_distance[..., :1]) * scale
        cached = jnp.where(seen[:, None, None, :], cached, A.NEG_INF)
        prob = jax.nn.softmax(jnp.concatenate([cached, own], axis=-1), axis=-1).astype(v.dtype)
        return (jnp.einsum("bhqk,bhkd->bqhd", prob[..., :-1], vc)
                + jnp.einsum("bhqk,bkhd->bqhd", prob[..., -1:], v))

    def attend(self, scores, mask, v, deterministic: bool) -> jax.Array:
        """Masked softmax (+ attention dropout) and weighted sum of v."""
        drop = None
        if self.cfg.dropatt > 0 and not deterministic:
            drop = lambda p: self.drop_att(p, deterministic=False)
        return A.attend(scores, mask, v, drop)

    def finish(self, h: jax.Array, vec: jax.Array, deterministic: bool) -> jax.Array:
        """o_net, residual + LayerNorm, then the feed-forward sub-layer."""
        c = self.cfg
        out = self.o_net(vec.reshape(vec.shape[:-2] + (c.n_head * c.d_head,)))
        out = self.drop(out, deterministic=deterministic)
        h = h + out if c.pre_lnorm else self.attn_norm(h + out)
        x = self.ff_norm(h) if c.pre_lnorm else h
        x = nn.relu(self.ff_in(x))
        x = self.drop(x, deterministic=deterministic)
        x = self.drop(self.ff_out(x), deterministic=deterministic)
        return h + x if c.pre_lnorm else self.ff_norm(h + x)

    def banded(self, h, r, rw, rr, mask, block: int, history: int, deterministic: bool):
        """Blocked band attention, one query block at a time (lax.map keeps the working set
        to C x (history+1)C scores, so cost stays linear in T and cache-friendly)."""
        b, t = h.shape[:2]
        q, k, v = self.project(h)
        blocks = (
            q.reshape(b, t // block, block, *q.shape[2:]).swapaxes(0, 1),
            A.with_history(k, block, history).swapaxes(0, 1),
            A.with_history(v, block, history).swapaxes(0, 1),
            mask,
        )
        rate = self.cfg.dropatt
        if rate > 0 and not deterministic:
            keys = jax.random.split(self.make_rng("dropout"), t // block)
        else:
            keys, rate = jnp.zeros((t // block,), jnp.uint32), 0.0

        def one(xs):
            qq, kk, vv, mm, key = xs
            drop = (lambda p: A.dropout(p, rate, key)) if rate > 0 else None
            scores = A.rel_scores(qq, kk, r, rw, rr)  # [B, H, C, (m+1)C]
            return A.attend(scores, mm[None, None], vv, drop)

        vec = jax.lax.map(one, (*blocks, keys))  # [nb, B, C, H, D]
        return vec.swapaxes(0, 1).reshape(b, t, *vec.shape[3:])

    # ------------------------------------------------------------------ whole layer

    def __call__(
        self,
        h: jax.Array,
        mem: jax.Array,
        pos_emb: jax.Array,
        view: jax.Array,
        r_w_bias: jax.Array | None,
        r_r_bias: jax.Array | None,
        how: LayerPass,
    ) -> jax.Array:
        """h [B, T, d], mem [B, M, d] (cached rows before h), pos_emb (sinusoids of the
        distances the keys can be at), `view` and the static `how` (see LayerPass)."""
        rw, rr = self.biases(r_w_bias, r_r_bias)
        r = self.rel_proj(pos_emb)
        if how.band is not None:
            block, history = how.band
            vec = self.banded(h, r, rw, rr, view, block, history, how.deterministic)
            return self.finish(h, vec, how.deterministic)
        src = jnp.concatenate([mem.astype(h.dtype), h], axis=1)
        q, k, v = self.project(src, n_query=h.shape[1])  # no queries for memory rows
        if how.fused:
            span = self.cfg.xl.mem_len if self.cfg.xl.same_length else 0
            vec = pallas_attention.rel_attention(q, k, v, r, rw, rr, view, span=span)
        else:
            scores = A.rel_scores(q, k, r, rw, rr)
            vec = self.attend(scores, view[:, None], v, how.deterministic)
        return self.finish(h, vec, how.deterministic)
