"""The interface every memory mechanism implements (`Arch`), and what it declares.

An architecture is one object registered under its name (`longctx.models.archs.register`);
`model.arch` names it. Everything outside `longctx/models/archs/` asks it instead of
testing the name: its config checks, its span, how many tokens a lane consumes per
training step, whether it carries state across steps, its per-lane state pytree, its
training forward (inside the shared `Decoder`'s apply), its streaming decode for chat,
how evaluation drives it, and its cost (keys per query, FLOPs per token, state size).

Only `span`, `tokens_per_step`, `call_shape` and `forward` must be written; every other
method has a default that is right for a mechanism whose state is any `Rows` pytree and
whose forward takes a segment of any length (see docs/architecture.md, "Add a memory
mechanism").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import flax.struct
import jax
import jax.numpy as jnp

from longctx.config import ModelConfig
from longctx.config_knobs import Knobs, NoKnobs
from longctx.models.state import NoState, Rows

if TYPE_CHECKING:
    from longctx.models.decoder import Decoder


@dataclass(frozen=True)
class CallShape:
    """The sizes of one lane's training-shaped forward, per layer, that its cost follows:
    `queries` rows predicted, `projected` rows projected to keys and values, `keys` each
    query scores (masked ones included), `distances` relative positions r_net projects."""

    queries: int
    projected: int
    keys: int
    distances: int


def decoder_flops(cfg: ModelConfig, shape: CallShape) -> float:
    """Multiply-adds (2 FLOPs each) of every matrix product of the shared decoder in a call
    of `shape`, masked entries included. Per layer (H d_head = hd): q 2 T d hd, k and v
    2 Kp d 2hd, r_net 2 P d hd, content and position scores 2 T K hd each, weighted values
    2 T K hd, o_net 2 T hd d, feed-forward 2 T 2 d d_inner; plus the tied output layer
    2 T d n_token. Element-wise work (softmax, LayerNorm, ReLU) is left out."""
    c, t, kp, k, p = cfg, shape.queries, shape.projected, shape.keys, shape.distances
    hd = c.n_head * c.d_head
    per_layer = (
        2 * t * c.d_model * hd + 2 * kp * c.d_model * 2 * hd  # qkv_net (q, then k and v)
        + 2 * p * c.d_model * hd  # r_net
        + 3 * 2 * t * k * hd  # content scores, position scores, weighted values
        + 2 * t * hd * c.d_model  # o_net
        + 2 * t * 2 * c.d_model * c.d_inner  # feed-forward
    )
    return float(c.n_layer * per_layer + 2 * t * c.d_model * c.n_token)


@dataclass(frozen=True)
class ScoringPlan:
    """How evaluation drives a mechanism over long streams.

    chunk: streams go through `stream_feed` `chunk` tokens at a time carrying the state;
        None: the mechanism keeps no state and streams are scored by recomputing windows
        of `context` tokens (stride `eval.vanilla_stride`).
    context: continuations are scored on rows holding exactly this much left context (the
        logits depend on no more); None: from the carried state before the chunk holding
        the continuation's first token, plus that chunk's tokens up to it.
    per_token: each continuation token gets its own row of `context` tokens (a model
        trained on fixed windows is always given a full one).
    """

    chunk: int | None
    context: int | None = None
    per_token: bool = False


@flax.struct.dataclass
class SegmentDecodeState(Rows):
    """The default decode state: the mechanism's state at the last block boundary, the
    tokens fed since ([B, block], zero after them) and the tokens fed in all (int32 scalar)."""

    state: Any
    tokens: jax.Array
    pos: jax.Array

    def batch_axes(self) -> SegmentDecodeState:
        return SegmentDecodeState(state=self.state.batch_axes(), tokens=0, pos=None)


class Arch:
    """One memory mechanism. Subclass it, set `name` and `description`, write the four
    abstract methods, override the defaults that do not fit, and `register` an instance."""

    name: str = ""
    label: str = ""  # how tables and notes name it ('' = the name)
    description: str = ""  # one line, for tables and `longctx info`
    # A memory mechanism: it carries what it saw across segments (compare sets it against
    # the memory-free baseline, `registry.BASELINE`).
    has_memory: bool = False
    # Trained by the studies that compare every architecture by default (the main
    # comparison, the real-dialogue study, bench_train: `registry.studied()`); a mechanism
    # whose recipe is still being found sets False and is run by name.
    in_studies: bool = True
    # How training lanes are cut into rows: 'segments' (a conversation continues in the
    # lane's next row and `reset` marks where one starts: the state carries across) or
    # 'sequences' (the same mechanics; the state is not carried, each row stands alone).
    lane_mode: str = "sequences"
    # Its own config section, `model.<name>`: a frozen `Knobs` dataclass defined in its
    # module (read as `cfg.<name>.<knob>` from a ModelConfig `cfg`).
    knobs: type[Knobs] = NoKnobs
    # The flat model keys of configs saved before the sections that this mechanism took
    # over: old name -> its knob (an old run's `"mem_len": 64` loads as model.xl.mem_len).
    took_over: dict[str, str] = {}
    # None, or why this mechanism has no streaming decode (chat refuses it in one line).
    no_decode: str | None = None

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if not cls.__dict__.get("label"):
            cls.label = cls.__dict__.get("name", cls.name)

    # ------------------------------------------------------------------ config

    def check(self, cfg: ModelConfig) -> None:
        """Raise ConfigError (naming the key) on a setting this mechanism cannot run."""

    def span(self, cfg: ModelConfig) -> int:
        """The matched attention span W: how far back one attention step reaches."""
        raise NotImplementedError

    def tokens_per_step(self, cfg: ModelConfig) -> int:
        """Tokens one lane consumes per training step (the row length)."""
        raise NotImplementedError

    def segments_per_step(self, cfg: ModelConfig) -> int:
        """K: the segments one training row holds, with gradients through the state from
        one to the next (truncated BPTT over K segments; 1 = none)."""
        return 1

    def carries_state(self, cfg: ModelConfig) -> bool:
        """Whether the state after a training step is the next step's input (then it is
        checkpointed with the run, so resume stays exact). Default: `has_memory`."""
        return self.has_memory

    # ------------------------------------------------------------------ cost

    def call_shape(self, cfg: ModelConfig) -> CallShape:
        """Sizes of one lane's training forward (see CallShape)."""
        raise NotImplementedError

    def keys_per_query(self, cfg: ModelConfig) -> int:
        """Keys one query scores in the training forward, masked ones included."""
        return self.call_shape(cfg).keys

    def extra_params(self, cfg: ModelConfig) -> int:
        """Parameters the mechanism adds to the shared decoder (e.g. memory embeddings)."""
        return 0

    def extra_flops(self, cfg: ModelConfig) -> float:
        """Forward FLOPs of one lane's training call beyond `decoder_flops`'s count."""
        return 0.0

    def flops_per_token(self, cfg: ModelConfig, training: bool) -> float:
        """Analytic FLOPs per predicted token of a forward (training=False) or a training
        step (`longctx.eval.flops`): forward and backward, 3x the forward, or 4x when the
        step rematerialises (`model.remat`, or a scan over K > 1 segments, which runs each
        segment's forward a second time in the backward pass)."""
        shape = self.call_shape(cfg)
        forward = decoder_flops(cfg, shape) + self.extra_flops(cfg)
        if not training:
            return float(forward / shape.queries)
        rematerialised = cfg.remat or self.segments_per_step(cfg) > 1
        return float(forward * (4 if rematerialised else 3) / shape.queries)

    def state_floats(self, cfg: ModelConfig) -> int:
        """Float32 values of one lane's state (for the memory estimate)."""
        return 0

    # ------------------------------------------------------------------ model

    def setup(self, mod: Decoder) -> Any:
        """Inside `Decoder.setup`: create the parameters the mechanism adds
        (`mod.param(...)`); the return value is `mod.extra` in `forward`."""
        return None

    def init_state(self, cfg: ModelConfig, batch_size: int) -> Rows:
        """The empty state of `batch_size` lanes (a new conversation starts)."""
        return NoState()

    def forward(self, mod: Decoder, tokens: jax.Array, state: Any, reset: jax.Array | None,
                deterministic: bool) -> tuple[jax.Array, Any]:
        """Inside the Decoder's apply: tokens [B, T] (any T >= 1; training gives
        `tokens_per_step`) with the state before them, reset [B] bool (empty that lane's
        state first) -> (logits [B, T, n_token] float32, the state after them). Logits
        must depend only on the state and the tokens up to their position (causal)."""
        raise NotImplementedError

    # ------------------------------------------------------------------ evaluation

    def scoring(self, cfg: ModelConfig) -> ScoringPlan:
        """How evaluation drives the mechanism: default, the training forward over chunks
        of `tokens_per_step / segments_per_step` carrying the state."""
        return ScoringPlan(chunk=self.tokens_per_step(cfg) // self.segments_per_step(cfg))

    def stream_mode(self, cfg: ModelConfig, stride: int) -> str:
        """The streaming mode in words (stored in eval.json beside the speed)."""
        return f"{self.name}: chunks of {self.scoring(cfg).chunk} carrying its state"

    def stream_init(self, cfg: ModelConfig, rows: int) -> Any:
        """The state evaluation streams start from."""
        return self.init_state(cfg, rows)

    def stream_feed(self, model: Decoder, params: Any, tokens: jax.Array, state: Any,
                    reset: jax.Array) -> tuple[jax.Array, Any]:
        """A chunk [B, C] of a stream -> (logits [B, C, V], state); default the forward."""
        return model.apply({"params": params}, tokens, state, reset, deterministic=True)

    # ------------------------------------------------------------------ decoding

    def decode_block(self, cfg: ModelConfig) -> int:
        """Tokens per block of streaming decode (known tokens are fed a block at a time)."""
        return self.scoring(cfg).chunk or self.span(cfg)

    def decode_init(self, cfg: ModelConfig, batch_size: int) -> Any:
        """An empty decode state. Default: the state at the last block boundary plus the
        tokens since (each step reruns the forward over the current block)."""
        block = self.decode_block(cfg)
        return SegmentDecodeState(state=self.init_state(cfg, batch_size),
                                  tokens=jnp.zeros((batch_size, block), jnp.int32),
                                  pos=jnp.zeros((), jnp.int32))

    def decode_step(self, model: Decoder, params: Any, token: jax.Array, state: Any
                    ) -> tuple[jax.Array, Any]:
        """Feed one token [B] -> (logits [B, V] float32, state). Default: write it into the
        block and rerun the forward over the block from the boundary state; when the
        block is full, its state becomes the boundary."""
        block = self.decode_block(model.cfg)
        at = state.pos % block
        tokens = jax.lax.dynamic_update_slice(state.tokens, token[:, None].astype(jnp.int32),
                                              (0, at))
        logits, after = model.apply({"params": params}, tokens, state.state, None,
                                    deterministic=True)
        full = at == block - 1
        boundary = jax.tree.map(lambda new, old: jnp.where(full, new, old), after, state.state)
        tokens = jnp.where(full, jnp.zeros_like(tokens), tokens)
        picked = jax.lax.dynamic_index_in_dim(logits, at, axis=1, keepdims=False)
        return picked, SegmentDecodeState(state=boundary, tokens=tokens, pos=state.pos + 1)

    def decode_feed_block(self, model: Decoder, params: Any, tokens: jax.Array, state: Any
                          ) -> tuple[jax.Array, Any]:
        """Feed a whole block [B, decode_block] at a block boundary -> (logits [B, block,
        V], state at the next boundary). Default: one forward."""
        logits, after = model.apply({"params": params}, tokens, state.state, None,
                                    deterministic=True)
        return logits, SegmentDecodeState(state=after, tokens=jnp.zeros_like(state.tokens),
                                          pos=state.pos + tokens.shape[1])

    def span_in_use(self, cfg: ModelConfig, state: Any) -> tuple[int, int]:
        """(tokens the next token can attend to besides itself, the most it ever can)."""
        most = self.span(cfg) + self.decode_block(cfg) - 1
        return min(int(state.pos), most), most

    def decode_stats(self, cfg: ModelConfig, state: Any) -> dict[str, int]:
        """Mechanism-specific numbers for chat's /stats (name -> value)."""
        return {"block_position": int(state.pos) % self.decode_block(cfg)}
