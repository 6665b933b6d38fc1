"""How a config value becomes its field's type: `coerce` parses a value from the command line
or a JSON file ('128', '1e6', 'true', '16,32'); `strict_value` accepts only a value that
already has the type (an experiment file's Python values). Both raise one ConfigError
naming the key."""

from __future__ import annotations

import math
import numbers
import typing
from typing import Any

from longctx.errors import ConfigError


def _check(cond: bool, key: str, problem: str) -> None:
    if not cond:
        raise ConfigError(f"config key '{key}': {problem}", key)


def coerce(value: Any, tp: Any, key: str) -> Any:
    """Convert a JSON/CLI value to the annotated field type, or raise ConfigError."""
    origin = typing.get_origin(tp)
    if origin is tuple or tp is tuple:
        if isinstance(value, str):
            value = [v for v in value.strip("()[] ").split(",") if v.strip()]
        _check(isinstance(value, list | tuple), key, f"expected a list, got {value!r}")
        (inner, *_rest) = typing.get_args(tp) or (int,)
        return tuple(coerce(v, inner, key) for v in value)
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


def strict_value(value: Any, tp: Any, key: str) -> Any:
    """`value` as type `tp` when it already is one (no parsing of strings), else ConfigError."""
    if typing.get_origin(tp) is tuple:
        _check(isinstance(value, list | tuple), key, f"expected a tuple of integers, got {value!r}")
        return tuple(strict_value(v, int, key) for v in value)
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
