"""FLOPs per token: one analytic formula for every architecture, attention included.

Counts the multiply-adds (2 FLOPs each) of every matrix product the model computes in its
training-shaped call, masked entries included, divided by the tokens the call predicts
(`longctx.models.archs.base.decoder_flops`, plus what a mechanism adds). Each
architecture states the sizes of that call (`Arch.call_shape`):

- XL: a segment of T = tgt_len queries over K = mem_len + tgt_len keys; q is projected for
  the T query rows, k and v for all K rows (the memory's keys are recomputed from its cached
  hidden states, as the original does) and r_net projects K distances;
- window: blocked band attention over seq_len tokens in blocks of C = min(W, seq_len); each
  block's queries score (m + 1) C keys (itself and m = ceil((W - 1) / C) blocks before), r_net
  projects (m + 1) C distances per call;
- vanilla: a dense forward over ctx_len tokens (every query scores all ctx_len keys).

Element-wise work (softmax, LayerNorm, ReLU) and the optimiser update are left out (a few
per cent at these sizes). Training adds the backward pass at twice the forward: 3x in total.
"""

from __future__ import annotations

from longctx.config import ModelConfig
from longctx.models import archs


def call_shape(cfg: ModelConfig) -> tuple[int, int, int, int]:
    """(queries T, projected rows Kp, keys per query K, projected distances P) of the
    model's training-shaped call."""
    s = archs.get(cfg).call_shape(cfg)
    return s.queries, s.projected, s.keys, s.distances


def flops_per_token(model_cfg: ModelConfig, training: bool) -> float:
    """Analytic FLOPs per predicted token of a forward (training=False) or a forward and
    backward (training=True) pass, in the model's training-shaped call."""
    return archs.get(model_cfg).flops_per_token(model_cfg, training)
