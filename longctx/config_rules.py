"""The rules a config must satisfy: the range of every numeric field and the rules that tie
fields together. `longctx.config.validate` applies them; each failure is one ConfigError
naming the key, the rule and the value. Rules that depend on the architecture live with it
(`Arch.check`, `longctx.models.archs.check_run`).
"""

from __future__ import annotations

import math

from longctx.config import (
    DATASETS,
    DTYPES,
    PRECISIONS,
    Config,
    ConfigError,
    ModelConfig,
    _check,
    check_types,
)

INT_MAX = 2**31 - 1  # shapes, step counters and token ids are int32 on the device
# The range of every numeric field, as an interval ('inf' = no upper bound besides being
# finite, and INT_MAX for integers); an architecture's section gives its own in
# `Knobs.ranges`. Cross-field rules are in `_check_relations`.
RANGES: dict[str, str] = {
    "model.n_token": "[0, inf)", "model.n_layer": "[1, inf)", "model.n_head": "[1, inf)",
    "model.d_model": "[2, inf)", "model.d_head": "[1, inf)", "model.d_inner": "[1, inf)",
    "model.dropout": "[0, 1)", "model.dropatt": "[0, 1)", "model.clamp_len": "[-1, inf)",
    "model.init_std": "(0, inf)",
    "data.span": "[1, inf)", "data.num_train": "[1, inf)", "data.num_validation": "[1, inf)",
    "data.vocab_size": "[300, inf)", "data.seed": "[0, inf)", "data.echo": "[0, 1]",
    "data.train_near": "[0, 1]", "data.train_ack": "[0, 1]", "data.train_near_max": "(0.25, 12]",
    "optim.learning_rate": "(0, inf)", "optim.end_learning_rate": "[0, inf)",
    "optim.warmup_steps": "[0, inf)", "optim.weight_decay": "[0, inf)", "optim.b1": "[0, 1)",
    "optim.b2": "[0, 1)", "optim.eps": "(0, inf)", "optim.clip_norm": "(0, inf)",
    "optim.grad_accum": "[1, inf)",
    "train.seed": "[0, inf)", "train.batch_size": "[1, inf)",
    "train.train_tokens": "[0, 1e18]",  # a token count, never an int32 on the device
    "train.num_steps": "[0, inf)", "train.log_every": "[1, inf)",
    "train.host_sync_every": "[1, 25]",  # XLA CPU collectives abort past ~50 queued steps
    "train.eval_every_steps": "[0, inf)", "train.eval_tokens": "[0, inf)",
    "train.profile_steps": "[1, inf)",
    "checkpoint.every_steps": "[1, inf)", "checkpoint.keep": "[1, inf)",
    "eval.num_candidates": "[2, inf)", "eval.vanilla_stride": "[1, inf)",
    "eval.max_conversations": "[0, inf)", "eval.shuffle_window_turns": "[2, inf)",
    "eval.context_lengths": "[1, inf)", "eval.speed_tokens": "[1, inf)",
}

def _check_range(key: str, value: float, interval: str) -> None:
    """Refuse a value outside `interval` (e.g. '[0, 1)'), NaN, infinities and non-int32 ints."""
    lo_text, hi_text = interval[1:-1].split(",")
    lo, hi = float(lo_text), float(hi_text)
    is_int = isinstance(value, int)
    if is_int and hi == math.inf:
        hi, interval = INT_MAX, interval.replace("inf)", f"{INT_MAX}]")
    if not is_int and not math.isfinite(value):
        raise ConfigError(f"config key '{key}': must be a finite number, got {value}", key)
    above = value > lo if interval[0] == "(" else value >= lo
    below = value < hi if interval[-1] == ")" else value <= hi
    if not (above and below):
        if hi_text.strip() == "inf" and above:
            want = f"<= {INT_MAX} (int32)"
        elif hi_text.strip() == "inf":
            want = f"{'>' if interval[0] == '(' else '>='} {lo_text.strip()}"
        else:
            want = f"in {interval}"
        raise ConfigError(f"config key '{key}': must be {want}, got {value}", key)

def _check_relations(cfg: Config, shards: int) -> None:
    """The rules that tie fields together (each names the key to change)."""
    o, t = cfg.optim, cfg.train
    _check(o.end_learning_rate <= o.learning_rate, "optim.end_learning_rate",
           f"{o.end_learning_rate} is above optim.learning_rate {o.learning_rate} (the schedule "
           "decays to it); use a smaller value")
    _check(t.batch_size % shards == 0, "train.batch_size",
           f"{t.batch_size} lanes do not split over {shards} devices; use a multiple of {shards}")
    _check(t.num_steps > 0 or t.train_tokens > 0 or bool(t.init_from), "train.num_steps",
           "give num_steps > 0 or train_tokens > 0 (0 steps only with train.init_from: a run "
           "that takes another run's parameters as they are)")
    profile = t.profile_steps
    _check(len(profile) <= 2 and profile == tuple(sorted(profile)), "train.profile_steps",
           f"give one step or a first,last pair (e.g. 10,12), got {','.join(map(str, profile))}")
    lengths = cfg.eval.context_lengths
    _check(len(lengths) > 0, "eval.context_lengths", "give at least one length, e.g. 32,64")
    _check(all(a < b for a, b in zip(lengths, lengths[1:], strict=False)), "eval.context_lengths",
           f"must increase strictly, got {','.join(map(str, lengths))}")

def check_model(m: ModelConfig) -> None:
    """The model section's rules that hold for every architecture (a model refuses to be
    built without them, validated or not)."""
    _check(bool(m.arch.strip()), "model.arch",
           "must name an architecture, e.g. xl")
    _check(m.dtype in DTYPES, "model.dtype", f"must be one of {DTYPES}, got {m.dtype!r}")
    _check(m.matmul_precision in PRECISIONS, "model.matmul_precision",
           f"must be one of {PRECISIONS}, got {m.matmul_precision!r}")
    for key, interval in RANGES.items():
        section, name = key.split(".")
        if section == "model":
            _check_range(key, getattr(m, name), interval)
    for arch in m.sections:
        knobs = m.sections[arch]
        for name, interval in knobs.ranges.items():
            _check_range(f"model.{arch}.{name}", getattr(knobs, name), interval)
    _check(m.d_model % 2 == 0, "model.d_model",
           f"must be even (the sinusoidal positions pair sin and cos), got {m.d_model}")


def check(cfg: Config, num_devices: int = 1, num_processes: int = 1) -> Config:
    """`longctx.config.validate`: types, ranges, then the cross-field rules."""
    check_types(cfg)
    d = cfg.data
    check_model(cfg.model)
    _check(d.name in DATASETS, "data.name", f"must be one of {DATASETS}, got {d.name!r}")
    _check(d.data_dir.strip() != "", "data.data_dir", "must name a directory, e.g. data_cache")
    for key, interval in RANGES.items():
        section, name = key.split(".")
        if section == "model":
            continue  # check_model
        value = getattr(getattr(cfg, section), name)
        for v in value if isinstance(value, tuple) else (value,):
            _check_range(key, v, interval)
    _check_relations(cfg, num_devices * num_processes)
    return cfg
