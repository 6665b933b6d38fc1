"""FLOPs per token: one analytic formula for all three architectures, attention included.

Counts the multiply-adds (2 FLOPs each) of every matrix product the model computes in its
training-shaped call, masked entries included, divided by the tokens the call predicts:

- XL: a segment of T = tgt_len queries over K = mem_len + tgt_len keys; q is projected for
  the T query rows, k and v for all K rows (the memory's keys are recomputed from its cached
  hidden states, as the original does) and r_net projects K distances;
- window: blocked band attention over seq_len tokens in blocks of C = min(W, seq_len); each
  block's queries score (m + 1) C keys (itself and m = ceil((W - 1) / C) blocks before), r_net
  projects (m + 1) C distances per call;
- vanilla: a dense forward over ctx_len tokens (every query scores all ctx_len keys).

Per layer and call (H d_head = hd): q 2 T d hd, k and v 2 Kp d 2hd, r_net 2 P d hd, scores (content and
position terms) 2 T K hd + 2 T K hd, weighted values 2 T K hd, o_net 2 T hd d, feed-forward
2 T 2 d d_inner; plus the tied output layer 2 T d n_token. Element-wise work (softmax,
LayerNorm, ReLU) and the optimiser update are left out (a few per cent at these sizes).
Training adds the backward pass at twice the forward: 3x in total.
"""

from __future__ import annotations

from longctx.config import ModelConfig


def call_shape(cfg: ModelConfig) -> tuple[int, int, int, int]:
    """(queries T, projected rows Kp, keys per query K, projected distances P) of the
    model's training-shaped call."""
    if cfg.arch == "xl":
        k = cfg.mem_len + cfg.tgt_len
        return cfg.tgt_len, k, k, k
    if cfg.arch == "window":
        t = cfg.seq_len
        block = max(1, min(cfg.window, t))
        n_blocks = -(-t // block)
        history = min(-(-(cfg.window - 1) // block), n_blocks - 1)
        keys = (history + 1) * block
        return n_blocks * block, n_blocks * block, keys, keys
    t = cfg.ctx_len
    return t, t, t, t


def flops_per_token(model_cfg: ModelConfig, training: bool) -> float:
    """Analytic FLOPs per predicted token of a forward (training=False) or a forward and
    backward (training=True) pass, in the model's training-shaped call."""
    c = model_cfg
    t, kp, k, p = call_shape(c)
    hd = c.n_head * c.d_head
    per_layer = (
        2 * t * c.d_model * hd + 2 * kp * c.d_model * 2 * hd  # qkv_net (q, then k and v)
        + 2 * p * c.d_model * hd  # r_net
        + 3 * 2 * t * k * hd  # content scores, position scores, weighted values
        + 2 * t * hd * c.d_model  # o_net
        + 2 * t * 2 * c.d_model * c.d_inner  # feed-forward
    )
    forward = c.n_layer * per_layer + 2 * t * c.d_model * c.n_token
    return float(forward * (3 if training else 1) / t)
