"""Loading an experiment file (`experiments/NAME.py` with `get_config() -> Config`).

The file is Python, so anything can go wrong in it; every problem becomes one ConfigError
that names the file and, where it can be found, the line: an import error or a syntax
error, an exception raised by `get_config()`, a key the schema does not have
(`c.train.num_step = 4`, `c.model.replace(n_layers=4)`), a value of the wrong type
(`c.model.replace(n_layer="2")`), or a field assigned on the frozen model section
(`c.model.n_layer = 4`: write `c.model = c.model.replace(n_layer=4)`).
"""

from __future__ import annotations

import ast
import dataclasses
import importlib.util
import traceback
import types
from pathlib import Path

from longctx.config import Config, ConfigError, UnknownKeyError, check_types


def _where(path: Path, line: int | None) -> str:
    return f"config file '{path}'" + (f", line {line}" if line else "")


def _one_line(exc: BaseException) -> str:
    """An exception as `Type: message` on one line."""
    return " ".join(f"{type(exc).__name__}: {exc}".split())


def _line_in_traceback(exc: BaseException, path: Path) -> int | None:
    """The deepest line of `path` in the exception's traceback."""
    lines = [f.lineno for f in traceback.extract_tb(exc.__traceback__)
             if Path(f.filename).resolve() == path.resolve()]
    return lines[-1] if lines else None


def _line_of_key(path: Path, key: str) -> int | None:
    """The last line of `path` that assigns the field `key` (`x.key = ...`, a tuple
    assignment naming it, or a `key=` keyword argument); None when not found."""
    try:
        tree = ast.parse(path.read_text(), str(path))
    except (OSError, SyntaxError, ValueError):
        return None
    name = key.rsplit(".", 1)[-1]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr == name and isinstance(node.ctx, ast.Store):
            found.append(node.lineno)
        elif isinstance(node, ast.keyword) and node.arg == name:
            found.append(node.lineno)
    return max(found) if found else None


def load(path: Path) -> Config:
    """Import `path`, call its `get_config()`, check the result's types (ConfigError)."""
    if not path.is_file():
        raise ConfigError(f"config file '{path}': not found; pass e.g. --config experiments/smoke.py")
    spec = importlib.util.spec_from_file_location(f"longctx_experiment_{path.stem}", path)
    if spec is None or spec.loader is None:
        raise ConfigError(f"config file '{path}': not a Python file; pass e.g. experiments/smoke.py")
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except SyntaxError as exc:
        raise ConfigError(f"{_where(path, exc.lineno)}: syntax error: {exc.msg}") from None
    except Exception as exc:  # surface the file and line, not a traceback
        raise ConfigError(f"{_where(path, _line_in_traceback(exc, path))}: failed to import: "
                          f"{_one_line(exc)}") from None
    get_config = getattr(module, "get_config", None)
    if not isinstance(get_config, types.FunctionType):
        raise ConfigError(f"config file '{path}': defines no get_config() function")
    try:
        cfg = get_config()
    except UnknownKeyError as exc:
        raise ConfigError(f"{_where(path, _line_in_traceback(exc, path))}: {exc}") from None
    except dataclasses.FrozenInstanceError as exc:
        raise ConfigError(f"{_where(path, _line_in_traceback(exc, path))}: {exc} of the model "
                          "section, which is frozen (a built model hashes by it); set it whole, "
                          "e.g. c.model = c.model.replace(n_layer=4)") from None
    except Exception as exc:
        raise ConfigError(f"{_where(path, _line_in_traceback(exc, path))}: get_config() raised "
                          f"{_one_line(exc)}; fix the file") from None
    if not isinstance(cfg, Config):
        raise ConfigError(f"config file '{path}': get_config() must return longctx.config.Config, "
                          f"got {type(cfg).__name__}")
    try:
        check_types(cfg)
    except ConfigError as exc:
        line = _line_of_key(path, exc.key) if exc.key else None
        raise ConfigError(f"{_where(path, line)}: {exc}", exc.key) from None
    if cfg.name == "default":
        cfg.name = path.stem
    return cfg
