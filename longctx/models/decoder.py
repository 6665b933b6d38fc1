"""The decoder Module shared by every architecture (one parameter tree for all).

`Decoder(cfg)(tokens, state, reset, deterministic)` -> (logits, new_state) runs the
forward of cfg.arch's registered mechanism (`longctx.models.archs`) on the shared pieces
(embedding, layers, output). The embedding is tied to the output layer (plus an output
bias); a mechanism may add parameters of its own (`Arch.setup`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from longctx.config import ConfigError, ModelConfig
from longctx.config_rules import check_model
from longctx.models.archs import registry
from longctx.models.attention import rel_scores
from longctx.models.layer import DecoderLayer, LayerPass, static_argnum
from longctx.models.primitives import compute_dtype, descending_pos_emb, init


def check_config(cfg: ModelConfig) -> None:
    """Refuse what the model cannot build (ConfigError naming the key): the model
    section's rules, the architecture's own, and a vocabulary size."""
    check_model(cfg)
    registry.get(cfg).check(cfg)
    if cfg.n_token <= 0:
        raise ConfigError("config key 'model.n_token': must be > 0 to build a model "
                          f"(got {cfg.n_token}; 0 means 'take it from the tokenizer')")


def matmul_precision(cfg: ModelConfig) -> contextlib.AbstractContextManager:
    """The scope of cfg.matmul_precision for tracing the model: 'default' leaves JAX's own
    (which JAX_DEFAULT_MATMUL_PRECISION may set); 'high' / 'highest' set every float32
    matmul and einsum traced inside, and their gradients (a dot's transpose keeps the
    precision it was traced with)."""
    if cfg.matmul_precision == "default":
        return contextlib.nullcontext()
    return jax.default_matmul_precision(cfg.matmul_precision)


class Decoder(nn.Module):
    """Tokens -> logits with an explicit memory pytree (see longctx.models docs)."""

    cfg: ModelConfig  # frozen: the module hashes by it, so it can be a static jit argument

    def __post_init__(self) -> None:
        check_config(self.cfg)  # refuse at construction, not only at init/apply
        super().__post_init__()

    # Every use of the model goes through apply (or init), so the matmul precision is set
    # here once rather than threaded through each Dense/einsum: training, evaluation,
    # decoding and the compat tool all get it, and code added later cannot miss it.

    @nn.nowrap
    def apply(self, *args, **kwargs):
        """Module.apply under the config's matmul precision."""
        with matmul_precision(self.cfg):
            return super().apply(*args, **kwargs)

    @nn.nowrap
    def init_with_output(self, *args, **kwargs):
        """Module.init_with_output (and so init) under the config's matmul precision."""
        with matmul_precision(self.cfg):
            return super().init_with_output(*args, **kwargs)

    def setup(self) -> None:
        c = self.cfg
        self.word_emb = nn.Embed(c.n_token, c.d_model, embedding_init=init(c),
                                 param_dtype=jnp.float32)
        self.out_bias = self.param("out_bias", nn.initializers.zeros, (c.n_token,))
        if not c.untie_r:
            self.r_w_bias = self.param("r_w_bias", init(c), (c.n_head, c.d_head))
            self.r_r_bias = self.param("r_r_bias", init(c), (c.n_head, c.d_head))
        layer_cls = DecoderLayer
        if c.remat:  # `how` selects code paths: static, found by name
            layer_cls = nn.remat(DecoderLayer,
                                 static_argnums=(static_argnum(DecoderLayer.__call__, "how"),))
        self.layers = [layer_cls(c) for _ in range(c.n_layer)]
        self.drop = nn.Dropout(c.dropout)
        self.extra = registry.get(c).setup(self)  # the mechanism's own parameters

    # ------------------------------------------------------------------ shared pieces

    def shared_biases(self) -> tuple[jax.Array | None, jax.Array | None]:
        """The shared (r_w_bias, r_r_bias), or (None, None) when each layer has its own."""
        if self.cfg.untie_r:
            return None, None
        return self.r_w_bias, self.r_r_bias

    def embed(self, tokens: jax.Array, deterministic: bool) -> jax.Array:
        """Token embedding * sqrt(d_model), dropout, in the compute dtype."""
        c = self.cfg
        h = self.word_emb(tokens) * np.sqrt(c.d_model)
        return self.drop(h.astype(compute_dtype(c)), deterministic=deterministic)

    def dropout(self, x: jax.Array, deterministic: bool) -> jax.Array:
        """The model-level dropout (on positional embeddings, as the original)."""
        return self.drop(x, deterministic=deterministic)

    def output(self, h: jax.Array, deterministic: bool) -> jax.Array:
        """Dropout then tied output layer: float32 logits h @ W_emb^T + out_bias."""
        h = self.drop(h, deterministic=deterministic).astype(jnp.float32)
        return h @ self.word_emb.embedding.T + self.out_bias

    def run_layers(self, h: jax.Array, pos_emb: jax.Array, view: jax.Array, *,
                   deterministic: bool, memory: jax.Array | None = None,
                   band: tuple[int, int] | None = None, fused: bool = False
                   ) -> tuple[jax.Array, list[jax.Array]]:
        """The layer loop of every training-shaped pass: h [B, T, d] through each layer
        (attending as `LayerPass(deterministic, fused, band)` says, `view` its mask or key
        starts; memory [n_layer(+1), B, M, d]: layer i's cached rows are memory[i]) ->
        (h, [the input of every layer and the output]: n_layer + 1 arrays)."""
        how = LayerPass(deterministic=deterministic, fused=fused, band=band)
        rw, rr = self.shared_biases()
        empty = jnp.zeros((h.shape[0], 0, h.shape[2]), h.dtype)
        hids = [h]
        for i, layer in enumerate(self.layers):
            mem = empty if memory is None else memory[i].astype(h.dtype)
            h = layer(h, mem, pos_emb, view, rw, rr, how)
            hids.append(h)
        return h, hids

    def decode_token(self, token: jax.Array, k_caches: tuple, v_caches: tuple,
                     table: jax.Array, dist: jax.Array, seen: jax.Array
                     ) -> tuple[jax.Array, list, list]:
        """The layer loop of a decode step: one token [B] against every layer's cached keys
        and values (`cache_layout`; dist [K] each slot's distance, seen [B, K] which slots
        it may attend to, table the sinusoids of distances 0 .. S-1) -> (logits [B, V], the
        token's k, v per layer [B, H, D]; the caller writes them into its cache)."""
        rw, rr = self.shared_biases()
        h = self.embed(token[:, None], True)
        ks, vs = [], []
        for i, layer in enumerate(self.layers):
            q, k, v = layer.project(h)
            vec = layer.attend_one(q, k, v, k_caches[i], v_caches[i], table, dist, seen, rw, rr)
            h = layer.finish(h, vec, True)
            ks.append(k[:, 0])
            vs.append(v[:, 0])
        return self.output(h, True)[:, 0], ks, vs

    def decode_block(self, tokens: jax.Array, past: Callable[[int], tuple], visible: jax.Array,
                     pos_emb: jax.Array) -> tuple[jax.Array, list, list]:
        """The layer loop of a block of known tokens [B, C] after cached rows: past(i) ->
        layer i's cached keys and values [B, M, H, D] in position order; each query sees
        concat(cached, block) where `visible` (broadcastable to [B, H, C, M+C]); pos_emb the
        sinusoids of distances M+C-1 .. 0 -> (logits [B, C, V], every layer's keys and
        values [B, M+C, H, D] in position order)."""
        rw, rr = self.shared_biases()
        h = self.embed(tokens, True)
        kks, vvs = [], []
        for i, layer in enumerate(self.layers):
            q, k, v = layer.project(h)
            past_k, past_v = past(i)
            kk = jnp.concatenate([past_k, k.astype(past_k.dtype)], axis=1)
            vv = jnp.concatenate([past_v, v.astype(past_v.dtype)], axis=1)
            lrw, lrr = layer.biases(rw, rr)
            scores = rel_scores(q, kk, layer.rel_proj(pos_emb), lrw, lrr)
            h = layer.finish(h, layer.attend(scores, visible, vv, True), True)
            kks.append(kk)
            vvs.append(vv)
        return self.output(h, True), kks, vvs

    def masked_forward(
        self, tokens: jax.Array, mask: jax.Array, deterministic: bool = True,
        last: int | None = None,
    ) -> jax.Array:
        """Dense forward of [B, T] tokens under an explicit visibility mask [B|1, T, T]
        (query i sees key j where True; distances are i - j). Used by vanilla and tests.
        `last`: logits of only the last `last` positions (the output layer is skipped for
        the rest, as a sliding-recompute evaluation needs)."""
        t = tokens.shape[1]
        h = self.embed(tokens, deterministic)
        pos_emb = self.dropout(descending_pos_emb(self.cfg, t), deterministic)
        h, _ = self.run_layers(h, pos_emb, mask, deterministic=deterministic)
        if last is not None:
            h = h[:, h.shape[1] - last :]
        return self.output(h, deterministic)

    # ------------------------------------------------------------------ entry point

    def __call__(
        self,
        tokens: jax.Array,
        memory: Any = None,
        reset: jax.Array | None = None,
        deterministic: bool = True,
    ) -> tuple[jax.Array, Any]:
        """tokens [B, T] int32, the mechanism's state (`init_memory`; None: empty), reset
        [B] bool -> (logits [B, T, n_token] float32, the new state, same shapes)."""
        arch = registry.get(self.cfg)
        if memory is None:
            memory = arch.init_state(self.cfg, tokens.shape[0])
        return arch.forward(self, tokens, memory, reset, deterministic)
