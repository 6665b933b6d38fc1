"""The registry of memory mechanisms: name -> `Arch`, and the config rules that need one.

The built-in mechanisms (`xl`, `window`, `vanilla`, `rmt`) register on first use; another module
registers its own with `register(MyArch())` before a config names it (a test, a plug-in).
"""

from __future__ import annotations

import dataclasses
import importlib
import math

from longctx.config import _MODEL_FIELDS, Config, ConfigError, ModelConfig, validate
from longctx.config_knobs import Knobs, NoKnobs
from longctx.config_rules import INT_MAX
from longctx.models.archs.base import Arch

# Built-in mechanisms, by module; each module registers its Arch when imported.
BUILTIN = ("longctx.models.archs.xl", "longctx.models.archs.window",
           "longctx.models.archs.vanilla", "longctx.models.archs.rmt",
           "longctx.models.archs.xl_retrieval")

# The memory-free baseline memory mechanisms are compared against: the same attention span
# W at the same cost, without memory.
BASELINE = "window"
# The paper's memory (Transformer-XL): a new memory mechanism is also compared against it,
# since reaching further than the window alone is what XL already does inside its view.
MEMORY_REFERENCE = "xl"

_ARCHS: dict[str, Arch] = {}
_loaded = False


def _load_builtin() -> None:
    global _loaded
    if not _loaded:
        _loaded = True
        for module in BUILTIN:
            importlib.import_module(module)


def register(arch: Arch) -> Arch:
    """Add `arch` under `arch.name` (ValueError when the name is taken by another object)."""
    _load_builtin()  # the built-ins come first in `names()`
    if not arch.name or not arch.name.isidentifier():
        raise ValueError(f"an architecture needs a name that is an identifier, got {arch.name!r}")
    if arch.name in _MODEL_FIELDS:
        raise ValueError(f"architecture name {arch.name!r} is a shared model key; choose another")
    if not (isinstance(arch.knobs, type) and issubclass(arch.knobs, Knobs)
            and dataclasses.is_dataclass(arch.knobs) and arch.knobs.__dataclass_params__.frozen):
        raise ValueError(f"{type(arch).__name__}.knobs must be a frozen dataclass subclassing "
                         "longctx.config_knobs.Knobs")
    own = {f.name for f in dataclasses.fields(arch.knobs)}
    for old, knob in arch.took_over.items():
        if knob not in own:
            raise ValueError(f"{type(arch).__name__}.took_over maps {old!r} to {knob!r}, "
                             f"not a field of {arch.knobs.__name__}")
    held = _ARCHS.get(arch.name)
    if held is not None and type(held) is not type(arch):
        raise ValueError(f"architecture {arch.name!r} is already registered ({type(held).__name__})")
    if arch.knobs is not NoKnobs:
        arch.knobs.section = f"model.{arch.name}"
    _ARCHS[arch.name] = arch
    return arch


def unregister(name: str) -> None:
    """Remove a registered architecture (a test's own, when it is done)."""
    _ARCHS.pop(name, None)


def names() -> tuple[str, ...]:
    """Every registered architecture's name, built-ins first, in registration order."""
    _load_builtin()
    return tuple(_ARCHS)


def studied() -> tuple[str, ...]:
    """The architectures the comparison studies train by default (`Arch.in_studies`)."""
    return tuple(n for n in names() if _ARCHS[n].in_studies)


def get(name_or_cfg: str | ModelConfig) -> Arch:
    """The architecture of a name or a model config (ConfigError naming model.arch if none)."""
    _load_builtin()
    name = name_or_cfg if isinstance(name_or_cfg, str) else name_or_cfg.arch
    if name not in _ARCHS:
        raise ConfigError(f"config key 'model.arch': must be one of {', '.join(_ARCHS)}, "
                          f"got {name!r}", "model.arch")
    return _ARCHS[name]


def span(cfg: ModelConfig) -> int:
    """The matched attention span W of the config's architecture."""
    return get(cfg).span(cfg)


def tokens_per_step(cfg: ModelConfig) -> int:
    """Tokens one lane consumes per training step under the config's architecture."""
    return get(cfg).tokens_per_step(cfg)


def resolved_steps(cfg: Config) -> int:
    """Steps for the configured budget: a token budget (fair across models) wins over
    num_steps."""
    if cfg.train.train_tokens > 0:
        per_step = cfg.train.batch_size * tokens_per_step(cfg.model)
        return max(1, math.ceil(cfg.train.train_tokens / per_step))
    return cfg.train.num_steps


def check_run(cfg: Config, num_devices: int = 1, num_processes: int = 1) -> Config:
    """`longctx.config.validate` (types, ranges, rules between fields), then the
    architecture's own checks and the rules on the run's length; ConfigError on the first
    failure, cfg otherwise."""
    validate(cfg, num_devices, num_processes)
    get(cfg.model).check(cfg.model)
    steps = resolved_steps(cfg)
    if steps > INT_MAX:
        raise ConfigError(f"config key 'train.train_tokens': needs {steps} steps, more than the "
                          "int32 step counter holds; use a smaller budget", "train.train_tokens")
    if 0 < steps < cfg.optim.grad_accum:
        raise ConfigError(
            f"config key 'optim.grad_accum': {cfg.optim.grad_accum} batches per update but the run "
            f"has only {steps} steps, so the parameters would never change; use grad_accum <= "
            "the number of steps", "optim.grad_accum")
    profile = cfg.train.profile_steps
    if profile and profile[-1] > steps:
        raise ConfigError(f"config key 'train.profile_steps': step {profile[-1]} is past the "
                          f"run's last step {steps}", "train.profile_steps")
    return cfg
