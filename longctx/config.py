"""The one typed config schema for longctx, its validation, and override parsing.

Every experiment is a `Config`. Experiment files (`experiments/NAME.py`) define
`get_config() -> Config`; the command line applies `section.key=value` overrides on top.
Errors name the key and the problem in one line (`ConfigError`).
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import types
import typing
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

ARCHS = ("xl", "window", "vanilla")
DTYPES = ("float32", "bfloat16")
PRECISIONS = ("default", "high", "highest")  # model.matmul_precision


class ConfigError(ValueError):
    """A bad configuration value; the message names the key and the problem."""


@dataclass
class ModelConfig:
    """Decoder shape and the memory/attention span of each architecture."""

    arch: str = "xl"  # 'xl' (Transformer-XL memory), 'window' (sliding window), 'vanilla'
    n_token: int = 0  # 0: take the vocabulary size from the dataset's tokenizer
    n_layer: int = 2
    n_head: int = 2
    d_model: int = 64
    d_head: int = 32
    d_inner: int = 256
    dropout: float = 0.0
    dropatt: float = 0.0
    tgt_len: int = 64  # XL segment length (and the vanilla/window evaluation chunk)
    mem_len: int = 64  # XL memory rows per layer
    clamp_len: int = -1  # > 0: relative distances clamped to this; <= 0: no clamp
    same_length: bool = False  # every XL query sees exactly mem_len keys (needs mem_len > 0)
    pre_lnorm: bool = False  # pre-LayerNorm (modern) instead of the original post-LN
    untie_r: bool = False  # per-layer r_w/r_r biases instead of shared ones
    window: int = 64  # sliding-window span W (keys i-W+1 .. i)
    ctx_len: int = 64  # vanilla fixed context
    seq_len: int = 256  # training sequence length for the window and vanilla models
    dtype: str = "float32"  # compute dtype; parameters stay float32
    # float32 matmul precision: 'default' is the backend's (full float32 on CPU, but
    # TF32/bf16 passes on GPU/TPU: ~1e-3 relative error), 'highest' full float32 everywhere
    matmul_precision: str = "default"
    remat: bool = False  # rematerialise each layer's activations in the backward pass
    init_std: float = 0.02

    @property
    def span(self) -> int:
        """The matched attention span W of this architecture."""
        return {"xl": self.mem_len, "window": self.window, "vanilla": self.ctx_len}[self.arch]

    @property
    def row_len(self) -> int:
        """Tokens one lane consumes per training step: XL a segment, window/vanilla a whole
        sequence."""
        return {"xl": self.tgt_len, "window": self.seq_len, "vanilla": self.ctx_len}[self.arch]


@dataclass
class DataConfig:
    """Which dataset, where it lives, and how batches are laid out."""

    name: str = "synthetic"  # 'synthetic', 'msc' or 'qmsum'
    data_dir: str = "data_cache"  # where TFDS datasets and tokenizers are built
    source: str = ""  # source file of a real corpus ('' = the builder's default)
    span: int = 64  # W used to place synthetic probe distances
    num_train: int = 200  # synthetic conversations in the training split
    num_validation: int = 40  # synthetic conversations in the validation split
    vocab_size: int = 2048  # BPE vocabulary trained on the training split
    seed: int = 0  # dataset generation seed (independent of the training seed)
    # share of synthetic answers that repeat the fact's own statement instead of a
    # paraphrase: 0 = the benchmark as designed; > 0 adds a plain copy (induction) signal
    echo: float = 0.0
    # share of TRAINING-split facts planned inside W (validation keeps the benchmark's
    # uniform buckets): up to 5x more short-range recall examples per token to learn from
    train_near: float = 0.0


@dataclass
class OptimConfig:
    """AdamW with warm-up then cosine decay, global-norm clipping."""

    learning_rate: float = 3e-3
    end_learning_rate: float = 3e-5
    warmup_steps: int = 20
    weight_decay: float = 0.01
    b1: float = 0.9
    b2: float = 0.98
    eps: float = 1e-8
    clip_norm: float = 1.0
    grad_accum: int = 1


@dataclass
class TrainConfig:
    """How long to train, on how many lanes, how often to log."""

    seed: int = 0
    batch_size: int = 8  # global number of lanes (rows); must split over devices
    train_tokens: int = 0  # token budget; > 0 overrides num_steps (fair comparisons)
    num_steps: int = 100
    log_every: int = 10
    host_sync_every: int = 20  # wait on a result at least this often (XLA CPU rendezvous)


@dataclass
class CheckpointConfig:
    """Orbax checkpointing of the whole training state."""

    every_steps: int = 50
    keep: int = 3
    async_save: bool = True


@dataclass
class EvalConfig:
    """The coherence suite's knobs."""

    num_candidates: int = 8  # N of the forced-choice recall and hits@1
    vanilla_stride: int = 1  # 1 = the paper's sliding recompute
    max_conversations: int = 0  # 0 = the whole split
    shuffle_window_turns: int = 8
    context_lengths: tuple[int, ...] = (32, 64, 128, 256)
    speed_tokens: int = 512  # tokens timed for evaluation speed


@dataclass
class Config:
    """A whole experiment."""

    name: str = "default"
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)


# ----------------------------------------------------------------------------- validation


def _check(cond: bool, key: str, problem: str) -> None:
    if not cond:
        raise ConfigError(f"config key '{key}': {problem}")


def validate(cfg: Config, num_devices: int = 1, num_processes: int = 1) -> Config:
    """Raise ConfigError on the first impossible value; return cfg unchanged otherwise."""
    m, d, o, t, c = cfg.model, cfg.data, cfg.optim, cfg.train, cfg.checkpoint
    _check(m.arch in ARCHS, "model.arch", f"must be one of {ARCHS}, got {m.arch!r}")
    _check(m.dtype in DTYPES, "model.dtype", f"must be one of {DTYPES}, got {m.dtype!r}")
    _check(m.matmul_precision in PRECISIONS, "model.matmul_precision",
           f"must be one of {PRECISIONS}, got {m.matmul_precision!r}")
    for key in ("n_layer", "n_head", "d_model", "d_head", "d_inner", "tgt_len"):
        _check(getattr(m, key) > 0, f"model.{key}", f"must be > 0, got {getattr(m, key)}")
    _check(m.n_token >= 0, "model.n_token", f"must be >= 0 (0 = from tokenizer), got {m.n_token}")
    _check(m.mem_len >= 0, "model.mem_len", f"must be >= 0, got {m.mem_len}")
    _check(m.window > 0, "model.window", f"must be > 0, got {m.window}")
    _check(m.ctx_len > 0, "model.ctx_len", f"must be > 0, got {m.ctx_len}")
    _check(m.seq_len > 0, "model.seq_len", f"must be > 0, got {m.seq_len}")
    _check(0.0 <= m.dropout < 1.0, "model.dropout", f"must be in [0, 1), got {m.dropout}")
    _check(0.0 <= m.dropatt < 1.0, "model.dropatt", f"must be in [0, 1), got {m.dropatt}")
    _check(
        not (m.same_length and m.mem_len == 0),
        "model.same_length",
        "needs mem_len > 0 (with mem_len = 0 every key would be masked)",
    )
    _check(d.name in ("synthetic", "msc", "qmsum"), "data.name",
           f"must be 'synthetic', 'msc' or 'qmsum', got {d.name!r}")
    _check(d.span > 0, "data.span", f"must be > 0, got {d.span}")
    _check(0.0 <= d.echo <= 1.0, "data.echo", f"must be in [0, 1], got {d.echo}")
    _check(0.0 <= d.train_near <= 1.0, "data.train_near",
           f"must be in [0, 1], got {d.train_near}")
    _check(d.vocab_size >= 300, "data.vocab_size", f"must be >= 300 (bytes + specials), got {d.vocab_size}")
    _check(d.num_train > 0 and d.num_validation > 0, "data.num_train",
           "num_train and num_validation must be > 0")
    _check(o.learning_rate > 0, "optim.learning_rate", f"must be > 0, got {o.learning_rate}")
    _check(o.warmup_steps >= 0, "optim.warmup_steps", f"must be >= 0, got {o.warmup_steps}")
    _check(o.clip_norm > 0, "optim.clip_norm", f"must be > 0, got {o.clip_norm}")
    _check(o.grad_accum >= 1, "optim.grad_accum", f"must be >= 1, got {o.grad_accum}")
    _check(t.batch_size > 0, "train.batch_size", f"must be > 0, got {t.batch_size}")
    shards = num_devices * num_processes
    _check(
        t.batch_size % shards == 0,
        "train.batch_size",
        f"{t.batch_size} lanes do not split over {shards} devices; use a multiple of {shards}",
    )
    _check(t.num_steps > 0 or t.train_tokens > 0, "train.num_steps",
           "give num_steps > 0 or train_tokens > 0")
    _check(t.train_tokens >= 0, "train.train_tokens", f"must be >= 0, got {t.train_tokens}")
    _check(t.log_every > 0, "train.log_every", f"must be > 0, got {t.log_every}")
    _check(0 < t.host_sync_every <= 25, "train.host_sync_every",
           f"must be in 1..25 (XLA CPU collectives abort past ~50 queued steps), got {t.host_sync_every}")
    _check(c.every_steps > 0, "checkpoint.every_steps", f"must be > 0, got {c.every_steps}")
    _check(c.keep > 0, "checkpoint.keep", f"must be > 0, got {c.keep}")
    e = cfg.eval
    _check(e.num_candidates >= 2, "eval.num_candidates", f"must be >= 2, got {e.num_candidates}")
    _check(e.vanilla_stride >= 1, "eval.vanilla_stride", f"must be >= 1, got {e.vanilla_stride}")
    return cfg


# ----------------------------------------------------------------------------- (de)serialising

_SECTIONS = {f.name: f for f in fields(Config)}


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Convert a JSON/CLI value to the annotated field type, or raise ConfigError."""
    origin = typing.get_origin(tp)
    if origin is tuple or tp is tuple:
        if isinstance(value, str):
            value = [v for v in value.strip("()[] ").split(",") if v.strip()]
        _check(isinstance(value, list | tuple), key, f"expected a list, got {value!r}")
        (inner, *_rest) = typing.get_args(tp) or (int,)
        return tuple(_coerce(v, inner, key) for v in value)
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "1", "yes", "false", "0", "no"):
            return value.lower() in ("true", "1", "yes")
        raise ConfigError(f"config key '{key}': expected true/false, got {value!r}")
    if tp is int:
        if isinstance(value, bool):
            raise ConfigError(f"config key '{key}': expected an integer, got {value!r}")
        try:
            if isinstance(value, str):
                value = value.replace("_", "")
            as_float = float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"config key '{key}': expected an integer, got {value!r}") from None
        _check(as_float == int(as_float), key, f"expected an integer, got {value!r}")
        return int(as_float)
    if tp is float:
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"config key '{key}': expected a number, got {value!r}") from None
    if tp is str:
        _check(isinstance(value, str), key, f"expected a string, got {value!r}")
        return value
    raise ConfigError(f"config key '{key}': unsupported type {tp}")


def _field_types(cls: type) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in fields(cls)}


def from_dict(raw: dict[str, Any]) -> Config:
    """Build a Config from nested dicts (e.g. a saved config.json); unknown keys are errors."""
    cfg = Config()
    for section, value in raw.items():
        if section == "name":
            cfg.name = _coerce(value, str, "name")
            continue
        _check(section in _SECTIONS, section, f"unknown section (known: {', '.join(_SECTIONS)})")
        _check(isinstance(value, dict), section, "expected a mapping of keys")
        for key, v in value.items():
            apply_override(cfg, f"{section}.{key}", v)
    return cfg


def apply_override(cfg: Config, dotted: str, value: Any) -> Config:
    """Set `section.key` to `value` (a string from the command line or a JSON value)."""
    if dotted == "name":
        cfg.name = _coerce(value, str, "name")
        return cfg
    parts = dotted.split(".")
    _check(len(parts) == 2, dotted, "overrides look like section.key=value, e.g. model.mem_len=128")
    section, key = parts
    _check(section in _SECTIONS, dotted, f"unknown section '{section}' (known: {', '.join(_SECTIONS)})")
    sub = getattr(cfg, section)
    types_ = _field_types(type(sub))
    _check(key in types_, dotted, f"unknown key (known in {section}: {', '.join(types_)})")
    setattr(sub, key, _coerce(value, types_[key], dotted))
    return cfg


def parse_overrides(cfg: Config, overrides: list[str]) -> Config:
    """Apply `section.key=value` strings in order."""
    for item in overrides:
        _check("=" in item, item, "overrides look like section.key=value, e.g. train.num_steps=20")
        key, value = item.split("=", 1)
        apply_override(cfg, key.strip(), value.strip())
    return cfg


def load_experiment(path: str | Path) -> Config:
    """Import `experiments/NAME.py` and return its `get_config()`."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file '{path}': not found; pass e.g. --config experiments/smoke.py")
    spec = importlib.util.spec_from_file_location(f"longctx_experiment_{path.stem}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except Exception as exc:  # surface the file, not a traceback
        raise ConfigError(f"config file '{path}': failed to import: {exc}") from exc
    get_config = getattr(module, "get_config", None)
    if not isinstance(get_config, types.FunctionType):
        raise ConfigError(f"config file '{path}': defines no get_config() function")
    cfg = get_config()
    if not isinstance(cfg, Config):
        raise ConfigError(f"config file '{path}': get_config() must return longctx.config.Config")
    if cfg.name == "default":
        cfg.name = path.stem
    return cfg
