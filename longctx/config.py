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
import functools
import json
import typing
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, ClassVar

from longctx.config_knobs import (
    ArchKnobs,
    Knobs,
    UnknownKeyError,
    _Strict,
    moved_message,
    new_keys,
    registered_knobs,
    registered_names,
    section_default,
)
from longctx.config_values import _check, coerce, strict_value
from longctx.errors import ConfigError as ConfigError  # re-exported: the config's error

DTYPES = ("float32", "bfloat16")
DATASETS = ("synthetic", "msc", "qmsum")
PRECISIONS = ("default", "high", "highest")  # model.matmul_precision


@dataclass(frozen=True)
class ModelConfig(_Strict):
    """The shared decoder's shape, the architecture's name, and one section of knobs per
    registered architecture (`cfg.model.xl.mem_len`; each section is the `Arch.knobs`
    dataclass of its module in `longctx.models.archs`).

    Frozen, so it hashes: a model (`longctx.models.Decoder`) and the compiled functions
    cached for it key on it. Change it whole: `cfg.model = cfg.model.replace(n_layer=4)`,
    a section by name: `cfg.model.replace(xl=cfg.model.xl.replace(mem_len=128))` or
    `cfg.model.replace(xl={"mem_len": 128})`."""

    section: ClassVar[str] = "model"

    arch: str = "xl"  # a registered memory mechanism (`longctx.models.archs.names()`)
    n_token: int = 0  # 0: take the vocabulary size from the dataset's tokenizer
    n_layer: int = 2
    n_head: int = 2
    d_model: int = 64
    d_head: int = 32
    d_inner: int = 256
    dropout: float = 0.0
    dropatt: float = 0.0
    # > 0: relative distances clamped to this in the sinusoidal position encoding that every
    # architecture's attention shares; <= 0: no clamp
    clamp_len: int = -1
    pre_lnorm: bool = False  # pre-LayerNorm (modern) instead of the original post-LN
    untie_r: bool = False  # per-layer r_w/r_r biases instead of shared ones
    dtype: str = "float32"  # compute dtype; parameters stay float32
    # float32 matmul precision: 'default' is the backend's (full float32 on CPU, but
    # TF32/bf16 passes on GPU/TPU: ~1e-3 relative error), 'highest' full float32 everywhere
    matmul_precision: str = "default"
    remat: bool = False  # rematerialise each layer's activations in the backward pass
    init_std: float = 0.02
    # architecture name -> its section (every registered one; `model.<arch>.<knob>` keys)
    sections: ArchKnobs = field(default_factory=registered_knobs)

    def __getattr__(self, name: str) -> Knobs:
        """`cfg.xl`: the section of a registered architecture (its defaults when it was
        registered after this config was made)."""
        if name.startswith("_"):
            raise AttributeError(name)
        sections = self.__dict__.get("sections")
        if sections is not None and name in sections:
            return sections[name]
        default = section_default(name)
        if default is None:
            raise AttributeError(moved_message(name) or
                                 f"'ModelConfig' has no field or section {name!r}")
        return default

    def replace(self, **changes: Any) -> ModelConfig:
        """A copy with `changes`: shared fields by name, a section by its architecture's
        name (a Knobs of its type, or a dict of the section's keys to change)."""
        knobs = self.sections
        shared = {}
        for name, value in changes.items():
            if name in _MODEL_FIELDS:
                shared[name] = value
                continue
            current = getattr(self, name) if _is_section(name) else None
            if current is None:
                raise UnknownKeyError("model", name, [*_MODEL_FIELDS, *knobs],
                                      moved_message(name))
            knobs = knobs.set(name, current.replace(**value) if isinstance(value, dict) else value)
        return dataclasses.replace(self, **shared, sections=knobs)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON types: the shared fields and one mapping per registered section."""
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "sections"}
        out.update({name: dataclasses.asdict(getattr(self, name)) for name in _arch_names(self)})
        return out


def _arch_names(m: ModelConfig) -> list[str]:
    """The sections of `m`: its own plus any registered since it was made."""
    return [*m.sections, *(n for n in registered_names() if n not in m.sections)]


def _is_section(name: str) -> bool:
    return section_default(name) is not None


_MODEL_FIELDS = tuple(f.name for f in fields(ModelConfig) if f.name != "sections")


@dataclass
class DataConfig(_Strict):
    """Which dataset, where it lives, and how batches are laid out."""

    section: ClassVar[str] = "data"

    name: str = "synthetic"  # 'synthetic', 'msc' or 'qmsum'
    data_dir: str = "data_cache"  # where TFDS datasets and tokenizers are built
    source: str = ""  # local file of a real corpus ('' = download the official release)
    span: int = 64  # W used to place synthetic probe distances
    num_train: int = 200  # synthetic conversations in the training split
    num_validation: int = 40  # synthetic conversations in the validation split
    vocab_size: int = 2048  # BPE vocabulary trained on the training split
    # '' = train the tokenizer; else take an existing one (a run directory, a built dataset's
    # folder or a tokenizer folder), so runs trained on another dataset can warm-start here
    tokenizer_from: str = ""
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

    section: ClassVar[str] = "optim"

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

    section: ClassVar[str] = "train"

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

    section: ClassVar[str] = "checkpoint"

    every_steps: int = 50
    keep: int = 3
    async_save: bool = True


@dataclass
class EvalConfig(_Strict):
    """The coherence suite's knobs."""

    section: ClassVar[str] = "eval"

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
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        return {k: v.to_dict() if k == "model" else
                v if k == "name" else dataclasses.asdict(v) for k, v in out.items()}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)



# ----------------------------------------------------------------------------- validation


def validate(cfg: Config, num_devices: int = 1, num_processes: int = 1) -> Config:
    """Raise ConfigError on the first impossible value (types, every field's range in
    `longctx.config_rules.RANGES`, the cross-field rules that need no architecture);
    return cfg otherwise. A run is checked whole by `longctx.models.archs.check_run`,
    which adds the architecture's own rules."""
    from longctx.config_rules import check

    return check(cfg, num_devices, num_processes)


# ----------------------------------------------------------------------------- (de)serialising

_SECTIONS = {f.name: f for f in fields(Config)}


def _field_types(cls: type) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in fields(cls) if f.name != "sections"}


def from_dict(raw: dict[str, Any]) -> Config:
    """Build a Config from nested dicts (e.g. a saved config.json); unknown keys are errors.
    A flat model key of a config saved before the architecture sections (`"mem_len": 64`)
    goes to every section that took it over (`model.xl.mem_len`); one that no registered
    architecture took over is refused in one line naming it."""
    cfg = Config()
    for section, value in raw.items():
        if section == "name":
            cfg.name = coerce(value, str, "name")
            continue
        _check(section in _SECTIONS, section, f"unknown section (known: {', '.join(_SECTIONS)})")
        _check(isinstance(value, dict), section, "expected a mapping of keys")
        for key, v in value.items():
            if section == "model" and isinstance(v, dict):
                _check(_is_section(key), f"model.{key}", _no_section(key))
                for knob, x in v.items():
                    apply_override(cfg, f"model.{key}.{knob}", x)
            elif section == "model" and key not in _MODEL_FIELDS and new_keys(key):
                for moved in new_keys(key):
                    apply_override(cfg, moved, v)
            else:
                apply_override(cfg, f"{section}.{key}", v)
    return cfg


def _no_section(name: str) -> str:
    return (f"no registered architecture has this section (registered: "
            f"{', '.join(registered_names())}); register '{name}' first or remove the key")


def apply_override(cfg: Config, dotted: str, value: Any) -> Config:
    """Set `section.key` (or `model.<arch>.key`) to `value` (a string from the command line
    or a JSON value)."""
    if dotted == "name":
        cfg.name = coerce(value, str, "name")
        return cfg
    parts = dotted.split(".")
    if len(parts) == 3 and parts[0] == "model":
        _, arch, key = parts
        _check(_is_section(arch), f"model.{arch}", _no_section(arch))
        sub = getattr(cfg.model, arch)
        types_ = _field_types(type(sub))
        _check(key in types_, dotted, f"unknown key (known in model.{arch}: {', '.join(types_)})")
        cfg.model = cfg.model.replace(**{arch: sub.replace(**{key: coerce(value, types_[key],
                                                                          dotted)})})
        return cfg
    _check(len(parts) == 2, dotted,
           "overrides look like section.key=value, e.g. model.xl.mem_len=128 or train.num_steps=20")
    section, key = parts
    _check(section in _SECTIONS, dotted, f"unknown section '{section}' (known: {', '.join(_SECTIONS)})")
    sub = getattr(cfg, section)
    types_ = _field_types(type(sub))
    if section == "model" and key not in types_:
        moved = moved_message(key)
        _check(not moved, dotted, moved)
        _check(not _is_section(key), dotted,
               f"a section of architecture '{key}'; set its keys, e.g. model.{key}.KEY=VALUE")
    _check(key in types_, dotted, f"unknown key (known in {section}: {', '.join(types_)})")
    setattr(cfg, section, dataclasses.replace(sub, **{key: coerce(value, types_[key], dotted)}))
    return cfg


def lookup(cfg: Config, dotted: str) -> Any:
    """The value of `section.key` or `model.<arch>.key` (AttributeError if none)."""
    return functools.reduce(getattr, dotted.split("."), cfg)


def flat_items(cfg: Config, own_section_only: bool = False) -> dict[str, Any]:
    """Every key of `cfg` as its dotted name (`model.xl.mem_len`) -> value; with
    `own_section_only`, of the architecture sections only model.arch's (the others do not
    change what the run computes)."""
    out: dict[str, Any] = {}
    for section, values in cfg.to_dict().items():
        if not isinstance(values, dict):
            out[section] = values
            continue
        for key, value in values.items():
            if isinstance(value, dict):
                if own_section_only and key != cfg.model.arch:
                    continue
                out.update({f"{section}.{key}.{k}": v for k, v in value.items()})
            else:
                out[f"{section}.{key}"] = value
    return out


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
        setattr(cfg, section, _checked(sub, section))
    m = cfg.model
    _check(isinstance(m.sections, ArchKnobs), "model.sections", "set sections by name, e.g. "
           "c.model = c.model.replace(xl={'mem_len': 128})")
    for arch in _arch_names(m):
        sub, want = getattr(m, arch), type(_section_default(arch))
        _check(type(sub) is want, f"model.{arch}",
               f"expected a {want.__name__}, got {type(sub).__name__}")
        m = m.replace(**{arch: _checked(sub, f"model.{arch}")})
    cfg.model = m
    return cfg


def _section_default(arch: str) -> Knobs:
    default = section_default(arch)
    _check(default is not None, f"model.{arch}", _no_section(arch))
    return default  # type: ignore[return-value]


def _checked(sub: Any, section: str) -> Any:
    """`sub` with every field checked by `strict_value` (ConfigError naming the key)."""
    return dataclasses.replace(sub, **{key: strict_value(getattr(sub, key), tp, f"{section}.{key}")
                                       for key, tp in _field_types(type(sub)).items()})


def load_experiment(path: str | Path) -> Config:
    """Import `experiments/NAME.py` and return its `get_config()`, type-checked; any problem
    is one ConfigError naming the file (and the line where it can be found)."""
    from longctx.experiment_file import load

    return load(Path(path))
