"""What `compare` reads, checked first: eval.json against its schema (docs/eval_json.md)
and the run's config.json against the config schema.

`compare` reads every file it is given with plain key lookups; a file from another version,
edited by hand or cut short would otherwise crash it deep inside (or give a table of
dashes). `check_eval` walks the keys `compare` and its plots read, with their types and
the context curve's lengths, and names the first wrong one: one line, file and key.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from longctx.config import ConfigError, from_dict
from longctx.errors import UserError

SCHEMA_VERSIONS = (1, 2)  # 1 lacked dataset.source, perplexity.by_part and recurrence


class _Bad(Exception):
    def __init__(self, key: str, problem: str) -> None:
        super().__init__(f"key '{key}': {problem}")


def _kind(x: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean",
            type(None): "null"}.get(type(x), "a number")


def _is_number(x: Any) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool)


# A spec is a leaf name ('number', 'int', 'str'; suffix '?' = may be null), a dict of
# {key: spec} (an object; a key ending in '?' may be absent), or ('map', spec) (an object
# of any keys, each value matching spec), or ('list', spec).
_STATS = {"nll?": "number?", "ppl?": "number?", "tokens?": "int?"}
_RECUR = {"nll?": "number?", "count?": "int?"}
_RECALL = {"accuracy": "number?", "stderr?": "number?", "exact_match?": "number?", "count": "int"}
_SCHEMA = {
    "schema_version": "int",
    "run": {"arch": "str", "name?": "str?", "step": "int", "span": "int",
            "num_params": "int", "train_tokens?": "int?",
            "flops_per_token?": {"train?": "number?", "eval?": "number?"}},
    "dataset": {"name": "str", "split": "str",
                "source?": {"path": "str", "sha256": "str"}},
    "perplexity": {"overall": _STATS, "by_turn?": ("map", _STATS),
                   "by_session?": ("map", _STATS), "by_part?": ("map", _STATS)},
    "recurrence?": {"buckets": ("map", _RECUR)},
    "recall?": {"chance": "number", "buckets": ("map", _RECALL)},
    "shuffle?": {"accuracy": "number?", "count": "int"},
    "hits_at_1?": {"accuracy": "number?", "count": "int"},
    "context_curve?": {"context_lengths": ("list", "int"), "num_targets": "int",
                       "fingerprint": "str", "mean_nll": ("list", "number"),
                       "nll": ("list", ("list", "number"))},
    "speed?": {"stream?": {"tokens_per_s?": "number?"}},
}
# Sections evaluate always writes but that may be null (no probes, no such metric).
_NULLABLE = {"recall", "recurrence", "shuffle", "hits_at_1", "context_curve", "speed",
             "source", "flops_per_token"}


def _check(value: Any, spec: Any, key: str) -> None:
    if isinstance(spec, str):
        name, nullable = spec.rstrip("?"), spec.endswith("?")
        if value is None:
            if not nullable:
                raise _Bad(key, "is null")
            return
        ok = {"number": _is_number(value), "str": isinstance(value, str),
              "int": isinstance(value, int) and not isinstance(value, bool)}[name]
        if not ok:
            raise _Bad(key, f"expected {'an integer' if name == 'int' else 'a ' + name}, got "
                            f"{_kind(value)} ({str(value)[:40]})")
        return
    if isinstance(spec, tuple):
        shape, item = spec
        want = dict if shape == "map" else list
        if not isinstance(value, want):
            raise _Bad(key, f"expected {_kind(want())}, got {_kind(value)}")
        entries = value.items() if shape == "map" else enumerate(value)
        for k, v in entries:
            _check(v, item, f"{key}.{k}" if shape == "map" else f"{key}[{k}]")
        return
    if not isinstance(value, dict):
        raise _Bad(key or "(top level)", f"expected an object, got {_kind(value)}")
    for field, sub in spec.items():
        name = field.rstrip("?")
        where = f"{key}.{name}" if key else name
        if name not in value:
            if not field.endswith("?"):
                raise _Bad(where, "missing")
            continue
        if value[name] is None and name in _NULLABLE:
            continue
        _check(value[name], sub, where)


def _check_curve(cc: dict[str, Any]) -> None:
    lengths, nll = cc["context_lengths"], cc["nll"]
    if any(c < 1 for c in lengths) or lengths != sorted(set(lengths)):
        raise _Bad("context_curve.context_lengths", "expected increasing positive lengths")
    if cc["num_targets"] < 0:
        raise _Bad("context_curve.num_targets", "negative")
    if len(cc["mean_nll"]) != len(lengths) or len(nll) != len(lengths):
        raise _Bad("context_curve", f"{len(lengths)} context lengths but "
                   f"{len(cc['mean_nll'])} mean_nll and {len(nll)} nll rows")
    for i, row in enumerate(nll):
        if len(row) != cc["num_targets"]:
            raise _Bad(f"context_curve.nll[{i}]", f"{len(row)} values, num_targets is "
                       f"{cc['num_targets']}")
        if not all(math.isfinite(x) for x in row):
            raise _Bad(f"context_curve.nll[{i}]", "holds a value that is not finite")


def check_eval(ev: Any, path: Path) -> dict[str, Any]:
    """`ev` (a parsed eval.json) if it has the schema's keys and types; UserError otherwise."""
    fix = "re-create it with longctx evaluate (docs/eval_json.md)"
    try:
        if not isinstance(ev, dict):
            raise _Bad("(top level)", f"expected an object, got {_kind(ev)}")
        version = ev.get("schema_version")
        if "schema_version" not in ev:
            raise _Bad("schema_version", "missing")
        if version not in SCHEMA_VERSIONS or isinstance(version, bool):
            raise _Bad("schema_version", f"{version!r} is not one this version reads "
                       f"({', '.join(map(str, SCHEMA_VERSIONS))})")
        _check(ev, _SCHEMA, "")
        if ev.get("context_curve"):
            _check_curve(ev["context_curve"])
        if ev["run"]["span"] < 1:
            raise _Bad("run.span", f"must be >= 1, got {ev['run']['span']}")
    except _Bad as exc:
        raise UserError(f"{path}: not an eval.json of this schema ({exc}); {fix}") from None
    return ev


def check_config(raw: Any, path: Path) -> None:
    """A run's config.json has the config schema's sections, keys and types (keys it
    lacks read as their defaults: a run saved before a field existed); UserError if not."""
    try:
        if not isinstance(raw, dict):
            raise ConfigError(f"a JSON {type(raw).__name__}, not an object of sections")
        from_dict(raw)
    except ConfigError as exc:
        raise UserError(f"{path}: not a run config ({exc}); put back the config.json this "
                        "run was trained with") from None
