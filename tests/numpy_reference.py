"""An independent float64 NumPy reading of the original Transformer-XL (attn_type 0), written
from tests/fixtures/transformer_xl_README.md only: explicit per-pair distances (no
rel_shift), a list-of-arrays memory of variable length, torch parameter names.

`random_reference(settings, seed)` makes a whole reference file's arrays (random weights, a
stream, and this implementation's outputs) in the fixture's format.
"""

from __future__ import annotations

import json

import numpy as np


def layer_norm(x: np.ndarray, w: np.ndarray, b: np.ndarray) -> np.ndarray:
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + 1e-5) * w + b


def sinusoid(pos: np.ndarray, d_model: int) -> np.ndarray:
    inv_freq = 1.0 / 10000 ** (np.arange(0.0, d_model, 2.0) / d_model)
    ang = pos[..., None].astype(np.float64) * inv_freq
    return np.concatenate([np.sin(ang), np.cos(ang)], -1)


def run(cfg: dict, p: dict[str, np.ndarray], stream: np.ndarray) -> dict[str, np.ndarray]:
    """Outputs `seg{s}/logits|nll|mems_out/{i}` for `stream` fed segment by segment."""
    p = {k: np.asarray(v, np.float64) for k, v in p.items()}
    n_layer, n_head, d_head = cfg["n_layer"], cfg["n_head"], cfg["d_head"]
    d_model, tgt_len, mem_len = cfg["d_model"], cfg["tgt_len"], cfg["mem_len"]
    clamp, pre = cfg.get("clamp_len", -1), cfg.get("pre_lnorm", False)
    same_length = cfg.get("same_length", False)
    batch = stream.shape[0]
    n_seg = (stream.shape[1] - 1) // tgt_len
    emb = p["word_emb.emb_layers.0.weight"]
    mems = [np.zeros((batch, 0, d_model)) for _ in range(n_layer + 1)]
    out = {}
    for s in range(n_seg):
        x = stream[:, s * tgt_len : (s + 1) * tgt_len]
        y = stream[:, s * tgt_len + 1 : (s + 1) * tgt_len + 1]
        h = emb[x] * np.sqrt(d_model)
        hids = [h]
        for i in range(n_layer):
            a, f = f"layers.{i}.dec_attn.", f"layers.{i}.pos_ff."
            rw = p.get(a + "r_w_bias", p.get("r_w_bias"))
            rr = p.get(a + "r_r_bias", p.get("r_r_bias"))
            mem = mems[i]
            mlen = mem.shape[1]
            cat = np.concatenate([mem, h], 1)
            src = layer_norm(cat, p[a + "layer_norm.weight"], p[a + "layer_norm.bias"]) if pre else cat
            heads = src @ p[a + "qkv_net.weight"].T
            q, k, v = np.split(heads, 3, -1)
            shape = (batch, -1, n_head, d_head)
            q, k, v = q[:, mlen:].reshape(shape), k.reshape(shape), v.reshape(shape)
            klen = mlen + tgt_len
            dist = mlen + np.arange(tgt_len)[:, None] - np.arange(klen)[None, :]  # [T, K]
            pos = np.maximum(dist, 0)
            if clamp > 0:
                pos = np.minimum(pos, clamp)
            r = (sinusoid(pos, d_model) @ p[a + "r_net.weight"].T).reshape(tgt_len, klen, n_head, d_head)
            ac = np.einsum("bihd,bjhd->bhij", q + rw, k)
            bd = np.einsum("bihd,ijhd->bhij", q + rr, r)
            score = (ac + bd) / np.sqrt(d_head)
            masked = dist < 0
            if same_length:
                masked = masked | (dist >= mem_len)
            score = np.where(masked[None, None], -np.inf, score)
            prob = np.exp(score - score.max(-1, keepdims=True))
            prob = prob / prob.sum(-1, keepdims=True)
            vec = np.einsum("bhij,bjhd->bihd", prob, v).reshape(batch, tgt_len, n_head * d_head)
            att = vec @ p[a + "o_net.weight"].T
            ln_a = (p[a + "layer_norm.weight"], p[a + "layer_norm.bias"])
            ln_f = (p[f + "layer_norm.weight"], p[f + "layer_norm.bias"])
            h = h + att if pre else layer_norm(h + att, *ln_a)
            ff_in = layer_norm(h, *ln_f) if pre else h
            core = np.maximum(ff_in @ p[f + "CoreNet.0.weight"].T + p[f + "CoreNet.0.bias"], 0)
            core = core @ p[f + "CoreNet.3.weight"].T + p[f + "CoreNet.3.bias"]
            h = h + core if pre else layer_norm(h + core, *ln_f)
            hids.append(h)
        logits = h @ emb.T + p["crit.out_layers.0.bias"]
        logp = logits - logits.max(-1, keepdims=True)
        logp = logp - np.log(np.exp(logp).sum(-1, keepdims=True))
        out[f"seg{s}/logits"] = logits
        out[f"seg{s}/nll"] = -np.take_along_axis(logp, y[..., None], -1)[..., 0]
        for i in range(n_layer + 1):
            cat = np.concatenate([mems[i], hids[i]], 1)
            mems[i] = cat[:, max(0, cat.shape[1] - mem_len) :] if mem_len > 0 else cat[:, :0]
            out[f"seg{s}/mems_out/{i}"] = mems[i]
    return out


def random_reference(settings: dict, seed: int = 0, untie_r: bool = False) -> dict[str, np.ndarray]:
    """A reference file's arrays: config_json, param/*, stream and this implementation's outputs."""
    cfg = dict(n_token=40, n_layer=2, n_head=2, d_model=16, d_head=8, d_inner=32, tgt_len=4,
               mem_len=4, ext_len=0, pre_lnorm=False, same_length=False, clamp_len=-1,
               attn_type=0, tie_weight=True, div_val=1, cutoffs=[], dropout=0.0, bsz=2,
               n_segments=3, seed=seed)
    cfg.update(settings)
    rng = np.random.default_rng(seed)
    d, hd, di = cfg["d_model"], cfg["n_head"] * cfg["d_head"], cfg["d_inner"]

    def w(*shape, scale=0.3):
        return (rng.standard_normal(shape) * scale).astype(np.float32)

    p = {"word_emb.emb_layers.0.weight": w(cfg["n_token"], d), "crit.out_layers.0.bias": w(cfg["n_token"])}
    p["crit.out_layers.0.weight"] = p["word_emb.emb_layers.0.weight"]
    if not untie_r:
        p["r_w_bias"], p["r_r_bias"] = w(cfg["n_head"], cfg["d_head"]), w(cfg["n_head"], cfg["d_head"])
    for i in range(cfg["n_layer"]):
        a, f = f"layers.{i}.dec_attn.", f"layers.{i}.pos_ff."
        p[a + "qkv_net.weight"] = w(3 * hd, d)
        p[a + "o_net.weight"] = w(d, hd)
        p[a + "r_net.weight"] = w(hd, d)
        p[a + "layer_norm.weight"] = 1 + w(d, scale=0.1)
        p[a + "layer_norm.bias"] = w(d, scale=0.1)
        p[f + "CoreNet.0.weight"], p[f + "CoreNet.0.bias"] = w(di, d), w(di, scale=0.1)
        p[f + "CoreNet.3.weight"], p[f + "CoreNet.3.bias"] = w(d, di), w(d, scale=0.1)
        p[f + "layer_norm.weight"] = 1 + w(d, scale=0.1)
        p[f + "layer_norm.bias"] = w(d, scale=0.1)
        if untie_r:
            p[a + "r_w_bias"] = w(cfg["n_head"], cfg["d_head"])
            p[a + "r_r_bias"] = w(cfg["n_head"], cfg["d_head"])
    length = cfg["n_segments"] * cfg["tgt_len"] + 1
    stream = rng.integers(0, cfg["n_token"], (cfg["bsz"], length)).astype(np.int32)
    arrays = {"config_json": np.frombuffer(json.dumps(cfg).encode(), np.uint8),
              "stream": stream, **{f"param/{k}": v for k, v in p.items()}}
    outs = run(cfg, p, stream)
    arrays.update({k: v.astype(np.float32) for k, v in outs.items()})
    return arrays
