"""Which config fields a run directory is bound to.

Every field that changes what the run computes (the `model`, `data`, `optim` and `train`
sections, including batch size, seed and the run's length, which sets the learning-rate
schedule; of the architecture sections, the run's own `model.<arch>`) is fixed by its
checkpoints; `FREE_KEYS` and `FREE_SECTIONS` (where things are written and how often,
evaluation knobs) may differ. `train` uses this to refuse a resume
with other settings, `load_run` to refuse an edited config.json.
"""

from __future__ import annotations

from typing import Any

from longctx.config import Config, ConfigError, flat_items, from_dict
from longctx.rundir.readable import CheckpointMismatch, StepInfo, Unreadable

# May differ between the saved run and a later command: where data lives, how often the
# loop logs, waits, validates, profiles and saves, evaluation settings, and activation
# rematerialisation (same numbers, less memory). Everything else changes what the run computes.
FREE_KEYS = ("name", "data.data_dir", "model.remat", "train.log_every", "train.host_sync_every",
             "train.eval_every_steps", "train.eval_tokens", "train.profile_steps")
FREE_SECTIONS = ("checkpoint", "eval")


def config_differences(saved: Config, new: Config) -> list[tuple[str, Any, Any]]:
    """(key, saved value, new value) of every trajectory field that differs."""
    a, b = flat_items(saved, own_section_only=True), flat_items(new, own_section_only=True)
    out = []
    for dotted, old in a.items():
        now = b.get(dotted, old)  # another architecture's section: model.arch differs
        if dotted.split(".")[0] in FREE_SECTIONS or dotted in FREE_KEYS or old == now:
            continue
        if dotted == "model.n_token" and 0 in (old, now):
            continue  # 0 = take it from the tokenizer: filled in later
        if dotted == "train.num_steps" and min(a["train.train_tokens"],
                                               b["train.train_tokens"]) > 0:
            continue  # a token budget overrides num_steps on both sides
        out.append((dotted, old, now))
    return out


def format_differences(diffs: list[tuple[str, Any, Any]], left: str, right: str) -> str:
    """'train.batch_size 4 (saved) vs 8 (now), ...'."""
    return ", ".join(f"{k} {a!r} ({left}) vs {b!r} ({right})" for k, a, b in diffs)


def check_saved_config(info: StepInfo, cfg: Config, where: str, left: str, right: str,
                       fix: str) -> None:
    """CheckpointMismatch if the step's own saved config differs from `cfg` on the run's
    trajectory fields (a step without one, e.g. imported weights, is checked by shapes)."""
    if "config" not in info.json:
        return
    raw = info.json["config"]
    if not isinstance(raw, dict):
        raise Unreadable(f"config/metadata: a JSON {type(raw).__name__}, not a config")
    try:
        saved = from_dict(raw)
    except ConfigError as exc:
        raise Unreadable(f"config: {exc}") from None
    diffs = config_differences(saved, cfg)
    if diffs:
        raise CheckpointMismatch(
            f"{where} was saved with other settings: "
            f"{format_differences(diffs, left, right)}; {fix}")
