"""The `longctx` command. Each area registers its own subcommands (lazy imports keep
`longctx --help` fast and let one broken area not hide the others)."""

from __future__ import annotations

import argparse
import importlib
import os
import sys

# subcommand -> module that defines `add_parser(subparsers)`; the parser sets `func`.
_COMMANDS = {
    "train": "longctx.train.commands",
    "info": "longctx.train.commands",
    "sweep": "longctx.train.commands",
    "data": "longctx.data.commands",
    "evaluate": "longctx.eval.commands",
    "compare": "longctx.eval.commands",
    "import-txl": "longctx.compat.commands",
    "chat": "longctx.generate.commands",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="longctx", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    seen: set[str] = set()
    for module_name in dict.fromkeys(_COMMANDS.values()):
        if module_name in seen:
            continue
        seen.add(module_name)
        module = importlib.import_module(module_name)
        module.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from longctx.config import ConfigError
    from longctx.errors import UserError

    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code = args.func(args)
    except (ConfigError, UserError) as exc:
        print(f"longctx {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # Ctrl-C outside the training loop (which stops cleanly itself)
        print(f"longctx {args.command}: interrupted", file=sys.stderr)
        return 130
    return int(code or 0)


if __name__ == "__main__":
    sys.exit(main())
