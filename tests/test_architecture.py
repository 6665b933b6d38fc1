"""The import rules of docs/architecture.md, checked statically (ast, no imports run).

Every module under longctx/ belongs to one part; a part may import only the parts listed
for it in ALLOWED, nothing imports the CLI or a `commands` module (the CLI loads those by
name), and model code imports no library beyond jax, flax and numpy. A failure names the
file, the line and the rule.
"""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# part -> the parts its modules may import (a part may always import itself).
ALLOWED = {
    "config": set(),
    "models": {"config"},
    "data": {"config"},
    "rundir": {"config", "models"},
    "train": {"config", "models", "data", "rundir", "eval"},
    "eval": {"config", "models", "data", "rundir"},
    "generate": {"config", "models", "data", "rundir"},
    "compat": {"config", "models", "rundir"},
    "cli": {"config"},
    "api": {"config", "models", "data", "rundir", "train", "eval", "generate"},
}
# Why a part may not import what it does not list (one line each, for the failure message).
WHY = {
    "config": "config and errors are the base every part stands on; they import no part",
    "models": "models are pure: they import nothing from data, training, evaluation or the CLI",
    "data": "data turns corpora into token streams; it knows no model and no trainer",
    "rundir": "a run directory is read by training, evaluation and chat alike; it needs none "
              "of them",
    "train": "training scores validation through the evaluation suite, never through "
             "generation or the import tools",
    "eval": "evaluation reads run directories (longctx.rundir), never the trainer",
    "generate": "generation reads run directories (longctx.rundir), never the trainer or "
                "the evaluation suite",
    "compat": "compat translates weights into a run directory; it needs no trainer, data or "
              "evaluation",
    "cli": "the CLI loads each area's commands module by name, not by import",
    "api": "the Python API (longctx.api) sits on top of every library part; no part "
           "imports it",
}
# The one import across the rules, with its reason: the model config's per-architecture
# sections are declared by the registered architectures, so the config reads the registry
# (imported inside a function, when a config is first built).
EXCEPTIONS = {("longctx.config_knobs", "longctx.models.archs.registry")}
# Top-level modules outside a package, and the part each belongs to.
TOP_LEVEL = {"__init__": "config", "errors": "config", "config": "config",
             "config_rules": "config", "experiment_file": "config", "log": "config",
             "fsguard": "config", "config_knobs": "config", "config_values": "config",
             "cli": "cli", "api": "api"}
MODEL_LIBRARIES = {"jax", "flax", "numpy"}


def part_of(module: str) -> str | None:
    """'longctx.eval.scoring' -> 'eval'; None for a name that is no known part."""
    parts = module.split(".")
    if parts[0] != "longctx":
        return None
    if len(parts) == 1:
        return "config"  # the package itself (its version)
    if parts[1] in ALLOWED and parts[1] not in TOP_LEVEL:
        return parts[1]
    return TOP_LEVEL.get(parts[1])


def module_name(path: Path, root: Path) -> str:
    rel = path.relative_to(root.parent).with_suffix("")
    names = list(rel.parts)
    if names[-1] == "__init__" and len(names) > 1:
        names.pop()
    return ".".join(names)


def imports(tree: ast.AST, module: str, is_package: bool) -> list[tuple[int, str]]:
    """(line, imported module) of every import anywhere in the file, relative ones resolved;
    `from a import b` gives a.b (b may be a submodule)."""
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                package = module.split(".") if is_package else module.split(".")[:-1]
                package = package[: len(package) - (node.level - 1)]
                base = ".".join(package + ([base] if base else []))
            out += [(node.lineno, f"{base}.{alias.name}") for alias in node.names]
    return out


def violations(root: Path) -> list[str]:
    """Every broken rule under the package folder `root` (e.g. REPO / 'longctx')."""
    found = []
    for path in sorted(root.rglob("*.py")):
        where = path.relative_to(root.parent).as_posix()
        module = module_name(path, root)
        part = part_of(module)
        if part is None:
            found.append(f"{where}: belongs to no part; add it to a part in "
                         "docs/architecture.md and tests/test_architecture.py")
            continue
        tree = ast.parse(path.read_text(), filename=str(path))
        for line, target in imports(tree, module, path.name == "__init__.py"):
            top = target.split(".")[0]
            if top == "longctx":
                leaf = target.split(".")
                if target.startswith("longctx.cli") or "commands" in leaf[2:]:
                    found.append(f"{where}:{line}: imports {target}; nothing imports the CLI "
                                 "or a commands module (the CLI loads them by name)")
                    continue
                other = part_of(target)
                if (other is not None and other != part and other not in ALLOWED[part]
                        and (module, target) not in EXCEPTIONS):
                    found.append(f"{where}:{line}: {part} imports {target} ({other}); "
                                 f"{WHY[part]}")
            elif (part == "models" and top not in MODEL_LIBRARIES
                  and top not in sys.stdlib_module_names and top != "__future__"):
                found.append(f"{where}:{line}: models import {target}; model code uses only "
                             f"{', '.join(sorted(MODEL_LIBRARIES))} and the standard library")
    return found


def test_every_module_keeps_the_import_rules():
    found = violations(REPO / "longctx")
    assert not found, "import rules (docs/architecture.md) broken:\n" + "\n".join(found)


def test_the_check_catches_each_kind_of_violation(tmp_path):
    pkg = tmp_path / "longctx"
    for folder in ("eval", "models", "data", "misc"):
        (pkg / folder).mkdir(parents=True)
        (pkg / folder / "__init__.py").write_text("")
    (pkg / "__init__.py").write_text("")
    (pkg / "eval" / "bad.py").write_text(
        "import json\n\n\ndef f():\n    from longctx.train.checkpoint import save\n")
    (pkg / "eval" / "rel.py").write_text("from ..generate import chat\n")
    (pkg / "models" / "io.py").write_text("import orbax.checkpoint as ocp\nimport jax\n")
    (pkg / "data" / "uses_cli.py").write_text("from longctx.eval import commands\n")
    found = violations(pkg)
    assert found[0] == ("longctx/data/uses_cli.py:1: imports longctx.eval.commands; nothing "
                        "imports the CLI or a commands module (the CLI loads them by name)")
    assert found[1].startswith("longctx/eval/bad.py:5: eval imports longctx.train.checkpoint.save "
                               "(train); evaluation reads run directories")
    assert found[2].startswith("longctx/eval/rel.py:1: eval imports longctx.generate.chat")
    assert found[3].startswith("longctx/misc/__init__.py: belongs to no part")
    assert found[4].startswith("longctx/models/io.py:1: models import orbax.checkpoint")
    assert len(found) == 5, found


def test_the_cli_names_only_modules_that_exist():
    """The CLI imports each area's commands module by name: every name must be a file."""
    text = (REPO / "longctx" / "cli.py").read_text()
    names = {n.value for n in ast.walk(ast.parse(text)) if isinstance(n, ast.Constant)
             and isinstance(n.value, str) and re.fullmatch(r"longctx(\.\w+)+", n.value)}
    assert names, "no module names found in longctx/cli.py"
    missing = [n for n in sorted(names)
               if not (REPO / (n.replace(".", "/") + ".py")).is_file()]
    assert not missing, f"longctx/cli.py names modules that do not exist: {missing}"
