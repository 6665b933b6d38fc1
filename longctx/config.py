"""The one typed config schema for longctx, its validation, and override parsing.

Every experiment is a `Config`. Experiment files (`experiments/NAME.py`) define
`get_config() -> Config` (loaded by `longctx.experiment_file`: a misspelt key, a wrong
type or an exception there is one line naming the file and line); the command line applies
`section.key=value` overrides on top. `validate` checks types, the range of every numeric
field and the cross-field rules (`longctx.config_rules`). Errors name the key and the
problem in one line (`ConfigError`).
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import numbers
import typing
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from longctx.errors import ConfigError

DTYPES = ("float32", "bfloat16")
DATASETS = ("synthetic", "msc", "qmsum")
PRECISIONS = ("default", "high", "highest")  # model.matmul_precision


class UnknownKeyError(AttributeError):
    """An assignment to a name the schema does not have (a typo in an experiment file)."""

    def __init__(self, section: str, key: str, known: list[str]) -> None:
        super().__init__(f"unknown key '{section}.{key}' (known in {section}: "
                         f"{', '.join(known)}); check the spelling")
        self.key = f"{section}.{key}"


class _Strict:
    """Base of the config dataclasses: setting or replacing a name that is not a field
    raises UnknownKeyError, so a misspelt key in an experiment file is never silently
    ignored."""

    def _check_names(self, names: Any) -> None:
        known = [f.name for f in fields(self)]  # type: ignore[arg-type]
        for name in names:
            if name not in known:
                raise UnknownKeyError(_SECTION_NAMES.get(type(self).__name__, "config"), name,
                                      known)

    def __setattr__(self, name: str, value: Any) -> None:
        self._check_names([name])
        object.__setattr__(self, name, value)

    def replace(self, **changes: Any) -> Any:
        """A copy with `changes` (e.g. `c.model = c.model.replace(n_layer=4)`)."""
        self._check_names(changes)
        return dataclasses.replace(self, **changes)  # type: ignore[type-var]


@dataclass(frozen=True)
class ModelConfig(_Strict):
    """Decoder shape, the architecture's name and its knobs (which fields each one reads:
    its `Arch.knobs`, in `longctx.models.archs`).

    Frozen, so it hashes: a model (`longctx.models.Decoder`) and the compiled functions
    cached for it key on it. Change it whole: `cfg.model = cfg.model.replace(n_layer=4)`."""

    arch: str = "xl"  # a registered memory mechanism (`longctx.models.archs.names()`)
    n_token: int = 0  # 0: take the vocabulary size from the dataset's tokenizer
    n_layer: int = 2
    n_head: int = 2
    d_model: int = 64
    d_head: int = 32
    d_inner: int = 256
    dropout: float = 0.0
    dropatt: float = 0.0
    tgt_len: int = 64  # xl: segment length (tokens per lane per step)
    mem_len: int = 64  # xl: memory rows per layer
    clamp_len: int = -1  # > 0: relative distances clamped to this; <= 0: no clamp
    same_length: bool = False  # xl: every query sees exactly mem_len keys (needs mem_len > 0)
    pre_lnorm: bool = False  # pre-LayerNorm (modern) instead of the original post-LN
    untie_r: bool = False  # per-layer r_w/r_r biases instead of shared ones
    window: int = 64  # window: the span W (keys i-W+1 .. i)
    ctx_len: int = 64  # vanilla: the fixed context (tokens per lane per step)
    seq_len: int = 256  # window: the training sequence length (tokens per lane per step)
    dtype: str = "float32"  # compute dtype; parameters stay float32
    # float32 matmul precision: 'default' is the backend's (full float32 on CPU, but
    # TF32/bf16 passes on GPU/TPU: ~1e-3 relative error), 'highest' full float32 everywhere
    matmul_precision: str = "default"
    remat: bool = False  # rematerialise each layer's activations in the backward pass
    attention_impl: str = "reference"  # xl: segment attention, 'reference' or 'pallas' (fused)
    init_std: float = 0.02
    n_mem_tokens: int = 16  # rmt: memory vectors each segment reads and writes
    # xl, rmt: segments of tgt_len per training row, gradients through the memory across
    # them (truncated BPTT over K segments; 1: one segment a step, XL's original training)
    bptt_segments: int = 1
    bptt_stop_gradient: bool = False  # xl, rmt: stop the gradient at every segment boundary
    retrieval_k: int = 32  # xl_retrieval: stored keys each query attends to (top-k per head)
    store_len: int = 2048  # xl_retrieval: rows each layer's store keeps (those that left memory)
    # xl_retrieval: the distance retrieved keys are given; 0: mem_len + tgt_len - 1
    retrieval_distance: int = 0


@dataclass
class DataConfig(_Strict):
    """Which dataset, where it lives, and how batches are laid out."""

    name: str = "synthetic"  # 'synthetic', 'msc' or 'qmsum'
    data_dir: str = "data_cache"  # where TFDS datasets and tokenizers are built
    source: str = ""  # local file of a real corpus ('' = download the official release)
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
    # share of TRAINING-split acknowledgements that say the stated value back: a copy over a
    # few tokens, the easiest to learn (validation keeps plain acknowledgements)
    train_ack: float = 0.0
    # upper end, in units of W, of the training split's near distances (from W/4): > 1 also
    # shows the model facts just beyond the span
    train_near_max: float = 1.0


@dataclass
class OptimConfig(_Strict):
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
class TrainConfig(_Strict):
    """How long to train, on how many lanes, how often to log."""

    seed: int = 0
    batch_size: int = 8  # global number of lanes (rows); must split over devices
    train_tokens: int = 0  # token budget; > 0 overrides num_steps (fair comparisons)
    num_steps: int = 100
    log_every: int = 10
    host_sync_every: int = 20  # wait on a result at least this often (XLA CPU rendezvous)
    # > 0: a validation pass every this many steps and at the last step (longctx.train.validation)
    eval_every_steps: int = 0
    # forward tokens one validation pass may cost; 0: a tenth of the training compute between
    # passes (3 forward tokens per training token), at least one conversation
    eval_tokens: int = 0
    # (first, last) step, or one step, traced with jax.profiler into WORKDIR/tb/ (TensorBoard)
    profile_steps: tuple[int, ...] = ()
    # a run directory whose latest parameters this run starts from (shared by name; fresh
    # optimiser, step 0, own data position; `longctx.train.warm_start`); '' = from scratch
    init_from: str = ""


@dataclass
class CheckpointConfig(_Strict):
    """Orbax checkpointing of the whole training state."""

    every_steps: int = 50
    keep: int = 3
    async_save: bool = True


@dataclass
class EvalConfig(_Strict):
    """The coherence suite's knobs."""

    num_candidates: int = 8  # N of the forced-choice recall and hits@1
    vanilla_stride: int = 1  # 1 = the paper's sliding recompute
    max_conversations: int = 0  # 0 = the whole split
    shuffle_window_turns: int = 8
    context_lengths: tuple[int, ...] = (32, 64, 128, 256)
    speed_tokens: int = 512  # tokens timed for evaluation speed


@dataclass
class Config(_Strict):
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


_SECTION_NAMES = {"ModelConfig": "model", "DataConfig": "data", "OptimConfig": "optim",
                  "TrainConfig": "train", "CheckpointConfig": "checkpoint", "EvalConfig": "eval"}


# ----------------------------------------------------------------------------- validation


def _check(cond: bool, key: str, problem: str) -> None:
    if not cond:
        raise ConfigError(f"config key '{key}': {problem}", key)


def validate(cfg: Config, num_devices: int = 1, num_processes: int = 1) -> Config:
    """Raise ConfigError on the first impossible value (types, every field's range in
    `longctx.config_rules.RANGES`, the cross-field rules that need no architecture);
    return cfg otherwise. A run is checked whole by `longctx.models.archs.check_run`,
    which adds the architecture's own rules."""
    from longctx.config_rules import check

    return check(cfg, num_devices, num_processes)


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
        if isinstance(value, str):  # '128', '1_000', '1e6'
            text = value.replace("_", "").strip()
            try:
                return int(text)
            except ValueError:
                try:
                    value = float(text)
                except ValueError:
                    raise ConfigError(f"config key '{key}': expected an integer, "
                                      f"got {value!r}") from None
        ok = (isinstance(value, numbers.Real) and not isinstance(value, bool)
              and math.isfinite(value) and value == int(value))
        _check(ok, key, f"expected an integer, got {value!r}")
        return int(value)
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
    setattr(cfg, section, dataclasses.replace(sub, **{key: _coerce(value, types_[key], dotted)}))
    return cfg


def parse_overrides(cfg: Config, overrides: list[str]) -> Config:
    """A copy of `cfg` with `section.key=value` strings applied in order (`cfg` itself is
    left as it was, so one base config can be reused for several runs)."""
    cfg = copy.deepcopy(cfg)
    for item in overrides:
        _check("=" in item, item, "overrides look like section.key=value, e.g. train.num_steps=20")
        key, value = item.split("=", 1)
        apply_override(cfg, key.strip(), value.strip())
    return cfg


def check_types(cfg: Config) -> Config:
    """Refuse a value of the wrong type (e.g. the string '2' set in an experiment file) with
    ConfigError naming the key; ints given for floats become floats, lists tuples."""
    _check(isinstance(cfg.name, str), "name", f"expected a string, got {cfg.name!r}")
    for section, f in _SECTIONS.items():
        if section == "name":
            continue
        sub = getattr(cfg, section)
        _check(type(sub) is f.default_factory, section,  # type: ignore[union-attr]
               f"expected a {f.default_factory.__name__}, got {type(sub).__name__}")  # type: ignore[union-attr]
        checked = {key: _strict_value(getattr(sub, key), tp, f"{section}.{key}")
                   for key, tp in _field_types(type(sub)).items()}
        setattr(cfg, section, dataclasses.replace(sub, **checked))
    return cfg


def _strict_value(value: Any, tp: Any, key: str) -> Any:
    """`value` as type `tp` when it already is one (no parsing of strings), else ConfigError."""
    if typing.get_origin(tp) is tuple:
        _check(isinstance(value, list | tuple), key, f"expected a tuple of integers, got {value!r}")
        return tuple(_strict_value(v, int, key) for v in value)
    if tp is bool:
        _check(isinstance(value, bool), key, f"expected True or False, got {value!r}")
        return value
    if tp is str:
        _check(isinstance(value, str), key, f"expected a string, got {value!r}")
        return value
    number = isinstance(value, numbers.Real) and not isinstance(value, bool)
    if tp is int:
        _check(isinstance(value, numbers.Integral) and number, key,
               f"expected an integer, got {value!r}")
        return int(value)
    _check(number, key, f"expected a number, got {value!r}")
    return float(value)


def load_experiment(path: str | Path) -> Config:
    """Import `experiments/NAME.py` and return its `get_config()`, type-checked; any problem
    is one ConfigError naming the file (and the line where it can be found)."""
    from longctx.experiment_file import load

    return load(Path(path))
