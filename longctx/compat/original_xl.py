"""Load the original PyTorch Transformer-XL's weights (the reference npz format) into our XL
model, and run our model over the file's stream to write outputs in the reference layout.

    python -m longctx.compat.original_xl REFERENCE.npz --out OUT.npz

The format (tests/fixtures/transformer_xl_README.md): `config_json`, `param/<torch name>`,
`stream` [batch, n_segments*tgt_len + 1], and `seg{s}/logits|nll|mems_out/{i}` outputs.
Only attn_type 0 with ext_len 0, div_val 1, no cutoffs and a tied output is supported.
The model runs with `matmul_precision='highest'` (full float32 matmuls on every backend: a
GPU's default float32 matmuls are ~1e-3 off, which no reference comparison survives).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from longctx.config import Config, ConfigError, ModelConfig
from longctx.errors import UserError
from longctx.models import build_model, init_memory
from longctx.models.archs import check_run
from longctx.rundir.run import param_shapes


def read_npz(path: str | Path) -> dict[str, np.ndarray]:
    """All arrays of a reference file (UserError if it is missing or not an npz)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such file (expected a Transformer-XL reference .npz)")
    try:
        with np.load(path) as z:
            return {k: z[k] for k in z.files}
    except Exception as exc:
        raise UserError(f"{path}: not a readable .npz file ({exc})") from exc


def reference_config(raw: dict[str, np.ndarray], where: str = "reference") -> dict[str, Any]:
    """The original's settings from `config_json`."""
    if "config_json" not in raw:
        raise UserError(f"{where}: no 'config_json' entry; not a Transformer-XL reference file")
    try:
        ref = json.loads(np.asarray(raw["config_json"]).tobytes().decode())
    except (ValueError, RecursionError) as exc:  # ValueError: JSON and UTF-8 alike
        raise UserError(f"{where}: config_json is not JSON text ({exc})") from None
    if not isinstance(ref, dict):
        raise UserError(f"{where}: config_json is a JSON {type(ref).__name__}, not an object "
                        "of settings")
    return ref


def model_config(ref: dict[str, Any], untie_r: bool = False, where: str = "reference") -> ModelConfig:
    """Our ModelConfig for the original's settings; refuses what we do not implement."""
    refusals = [
        (ref.get("ext_len", 0) != 0, f"ext_len={ref.get('ext_len')} (only 0 is supported)"),
        (ref.get("attn_type", 0) != 0, f"attn_type={ref.get('attn_type')} (only 0, the paper's "
                                       "relative attention, is supported)"),
        (ref.get("div_val", 1) != 1, f"div_val={ref.get('div_val')} (adaptive embedding is not "
                                     "supported)"),
        (bool(ref.get("cutoffs", [])), f"cutoffs={ref.get('cutoffs')} (adaptive softmax is not "
                                       "supported)"),
        (not ref.get("tie_weight", True), "tie_weight=false (an untied output layer is not "
                                          "supported)"),
    ]
    for bad, what in refusals:
        if bad:
            raise UserError(f"{where}: unsupported Transformer-XL setting {what}")
    def integer(key: str, default: int | None = None) -> int:
        if key not in ref and default is None:
            raise UserError(f"{where}: config_json lacks the key '{key}'")
        value = ref.get(key, default)
        if not isinstance(value, int) or isinstance(value, bool):
            raise UserError(f"{where}: config_json '{key}' is {value!r}, not an integer")
        return value

    def flag(key: str) -> bool:
        value = ref.get(key, False)
        if not isinstance(value, bool | int):
            raise UserError(f"{where}: config_json '{key}' is {value!r}, not true or false")
        return bool(value)

    mem_len = integer("mem_len", 0)
    span = max(1, mem_len)
    cfg = ModelConfig(
        arch="xl", **{k: integer(k) for k in ("n_token", "n_layer", "n_head", "d_model",
                                             "d_head", "d_inner")},
        dropout=0.0, dropatt=0.0, clamp_len=integer("clamp_len", -1),
        pre_lnorm=flag("pre_lnorm"), untie_r=untie_r, matmul_precision="highest",
    ).replace(xl={"tgt_len": integer("tgt_len"), "mem_len": mem_len,
                  "same_length": flag("same_length")},
              window={"window": span}, vanilla={"ctx_len": span})
    try:  # every range and rule a run's config must meet (info reads the run with them)
        check_run(Config(model=cfg))
    except ConfigError as exc:
        raise UserError(f"{where}: config_json: {exc}") from None
    return cfg


def convert_params(raw: dict[str, np.ndarray], cfg: ModelConfig, where: str = "reference") -> dict:
    """Torch parameter names/layouts -> our parameter pytree (Linear [out, in] -> kernel [in, out])."""

    heads = cfg.n_head * cfg.d_head
    d, inner = cfg.d_model, cfg.d_inner
    shapes = {  # the original's (torch) layout: Linear weights are [out, in]
        "word_emb.emb_layers.0.weight": (cfg.n_token, d),
        "crit.out_layers.0.bias": (cfg.n_token,),
        "r_w_bias": (cfg.n_head, cfg.d_head), "r_r_bias": (cfg.n_head, cfg.d_head),
        "qkv_net.weight": (3 * heads, d), "r_net.weight": (heads, d), "o_net.weight": (d, heads),
        "layer_norm.weight": (d,), "layer_norm.bias": (d,), "CoreNet.0.weight": (inner, d),
        "CoreNet.0.bias": (inner,), "CoreNet.3.weight": (d, inner), "CoreNet.3.bias": (d,),
    }

    def get(name: str) -> np.ndarray:
        key = f"param/{name}"
        if key not in raw:
            raise UserError(f"{where}: missing weight '{key}'")
        want = shapes[name if name in shapes else name.split(".", 3)[-1]]
        try:
            value = np.asarray(raw[key], np.float32)
        except (ValueError, TypeError) as exc:
            raise UserError(f"{where}: weight '{key}' is not numeric ({exc})") from None
        if value.shape != want:
            raise UserError(f"{where}: weight '{key}' has shape {value.shape}, config_json "
                            f"implies {want}; the file's weights and config disagree")
        if not np.all(np.isfinite(value)):
            raise UserError(f"{where}: weight '{key}' holds values that are not finite")
        return value

    emb = get("word_emb.emb_layers.0.weight")
    out_w = raw.get("param/crit.out_layers.0.weight")
    if out_w is not None and not np.array_equal(np.asarray(out_w, np.float32), emb):
        raise UserError(f"{where}: output weights differ from the embedding (untied output is "
                        "not supported)")
    params: dict[str, Any] = {
        "word_emb": {"embedding": emb},
        "out_bias": get("crit.out_layers.0.bias"),
    }
    if not cfg.untie_r:
        params["r_w_bias"] = get("r_w_bias")
        params["r_r_bias"] = get("r_r_bias")
    for i in range(cfg.n_layer):
        a, f = f"layers.{i}.dec_attn.", f"layers.{i}.pos_ff."
        layer = {
            "qkv_net": {"kernel": get(a + "qkv_net.weight").T},
            "r_net": {"kernel": get(a + "r_net.weight").T},
            "o_net": {"kernel": get(a + "o_net.weight").T},
            "attn_norm": {"scale": get(a + "layer_norm.weight"), "bias": get(a + "layer_norm.bias")},
            "ff_in": {"kernel": get(f + "CoreNet.0.weight").T, "bias": get(f + "CoreNet.0.bias")},
            "ff_out": {"kernel": get(f + "CoreNet.3.weight").T, "bias": get(f + "CoreNet.3.bias")},
            "ff_norm": {"scale": get(f + "layer_norm.weight"), "bias": get(f + "layer_norm.bias")},
        }
        if cfg.untie_r:
            layer["r_w_bias"] = get(a + "r_w_bias")
            layer["r_r_bias"] = get(a + "r_r_bias")
        params[f"layers_{i}"] = layer
    return jax.tree.map(jnp.asarray, params)


def from_arrays(raw: dict[str, np.ndarray], where: str = "reference") -> tuple[ModelConfig, dict]:
    """(ModelConfig, params) from the arrays of a reference file."""
    ref = reference_config(raw, where)
    untie = "param/layers.0.dec_attn.r_w_bias" in raw and "param/r_w_bias" not in raw
    cfg = model_config(ref, untie_r=untie, where=where)
    try:
        build_model(cfg)
    except ConfigError as exc:
        raise UserError(f"{where}: {exc}") from None
    params = convert_params(raw, cfg, where)
    want = jax.tree.map(lambda x: x.shape, param_shapes(Config(model=cfg)))
    got = jax.tree.map(lambda x: x.shape, params)
    if got != want:  # the model and this reader disagree: a bug here, named in one line
        raise UserError(f"{where}: the converted weights do not match the model's parameters "
                        f"({got} vs {want})")
    return cfg, params


def load_reference(path: str | Path) -> tuple[ModelConfig, dict]:
    """Read a reference .npz -> (our ModelConfig, our XL params). Raises UserError on
    anything unsupported (one line naming the file and the setting)."""
    return from_arrays(read_npz(path), str(path))


def run_stream(cfg: ModelConfig, params: dict, stream: np.ndarray, n_segments: int | None = None
               ) -> dict[str, np.ndarray]:
    """Run our XL model over `stream` [batch, n*tgt_len + 1] segment by segment with memory;
    return `seg{s}/logits`, `seg{s}/nll`, `seg{s}/mems_out/{i}` (valid rows, batch-first)."""
    model = build_model(cfg)
    stream = np.asarray(stream, np.int32)
    batch, seg_len = stream.shape[0], cfg.xl.tgt_len
    if n_segments is None:
        n_segments = (stream.shape[1] - 1) // seg_len
    if n_segments < 1 or stream.shape[1] < n_segments * seg_len + 1:
        raise UserError(f"stream of shape {stream.shape} is too short for {n_segments} segments "
                        f"of tgt_len {seg_len}")

    @jax.jit
    def segment(memory, tokens, targets):
        logits, memory = model.apply({"params": params}, tokens, memory, None)
        logp = jax.nn.log_softmax(logits, axis=-1)
        nll = -jnp.take_along_axis(logp, targets[..., None], axis=-1)[..., 0]
        return logits, nll, memory

    memory = init_memory(cfg, batch)
    out: dict[str, np.ndarray] = {}
    for s in range(n_segments):
        lo, hi = s * seg_len, (s + 1) * seg_len
        logits, nll, memory = segment(memory, stream[:, lo:hi], stream[:, lo + 1 : hi + 1])
        out[f"seg{s}/logits"] = np.asarray(logits)
        out[f"seg{s}/nll"] = np.asarray(nll)
        rows = min(cfg.xl.mem_len, hi)
        hidden = np.asarray(memory.hidden)
        for i in range(cfg.n_layer + 1):
            out[f"seg{s}/mems_out/{i}"] = hidden[i][:, hidden.shape[2] - rows :, :]
    return out


def relative_errors(ours: dict[str, np.ndarray], ref: dict[str, np.ndarray]) -> dict[str, float]:
    """max|ours - ref| / max|ref| for every output key the reference has."""
    errs = {}
    for key, want in ref.items():
        if key.startswith("seg"):
            got = ours.get(key)
            if got is None or got.shape != want.shape:
                errs[key] = float("inf")
                continue
            if want.size == 0:
                errs[key] = 0.0
                continue
            scale = max(float(np.max(np.abs(want))), 1e-30)
            errs[key] = float(np.max(np.abs(got.astype(np.float64) - want)) / scale)
    return errs


def convert_and_run(path: str | Path) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """(our outputs, the file's arrays) for a reference file."""
    raw = read_npz(path)
    cfg, params = from_arrays(raw, str(path))
    if "stream" not in raw:
        raise UserError(f"{path}: no 'stream' entry to run")
    n_seg = reference_config(raw).get("n_segments")
    return run_stream(cfg, params, raw["stream"], n_seg), raw


def _precision_note() -> str:
    return f"float32 matmul precision 'highest' on {jax.default_backend()}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m longctx.compat.original_xl",
        description="Run our XL model with the original Transformer-XL's weights over the "
        "reference file's stream; write the outputs in the reference layout.",
    )
    parser.add_argument("reference", help="reference .npz (weights, stream, outputs)")
    parser.add_argument("--out", required=True, help="where to write our outputs (.npz)")
    args = parser.parse_args(argv)
    try:
        ours, raw = convert_and_run(args.reference)
    except (UserError, ConfigError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    np.savez(args.out, config_json=raw["config_json"], stream=raw["stream"], **ours)
    errs = relative_errors(ours, raw)
    if errs:
        worst = max(errs, key=errs.get)
        print(f"wrote {args.out}: {len(ours)} arrays; max|ours-ref|/max|ref| = "
              f"{errs[worst]:.2e} (worst: {worst}); {_precision_note()}")
    else:
        print(f"wrote {args.out}: {len(ours)} arrays; {_precision_note()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
