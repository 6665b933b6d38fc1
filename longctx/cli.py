"""The `longctx` command. Each area registers its own subcommands from its `commands`
module, loaded by name; those modules import their libraries inside the command functions,
so `longctx --help` stays fast."""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from collections.abc import Iterator

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

_VERBOSE_HELP = "show the libraries' warnings (absl, orbax, JAX, TensorFlow); hidden by default"


class Parser(argparse.ArgumentParser):
    """argparse with options and positionals in any order (`train --workdir D
    model.n_layer=2 --config X`), and every usage error as one line naming the command."""

    _intermixing = False

    def parse_known_args(self, args=None, namespace=None):
        if self._subparsers is not None or self._intermixing:  # a command group, or inside
            return super().parse_known_args(args, namespace)
        self._intermixing = True
        try:
            namespace, extras = self.parse_known_intermixed_args(args, namespace)
        finally:
            self._intermixing = False
        if extras:  # here, where the command's name is known, not in the top-level parser
            self.error(f"unrecognized arguments: {' '.join(extras)}")
        return namespace, extras

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def iter_parsers(parser: argparse.ArgumentParser) -> Iterator[argparse.ArgumentParser]:
    """`parser` and every subcommand parser under it, depth first."""
    yield parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in dict.fromkeys(action.choices.values()):  # aliases share a parser
                yield from iter_parsers(sub)


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="longctx", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help=_VERBOSE_HELP)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND",
                                help="one of these; COMMAND --help for its options")
    for module_name in dict.fromkeys(_COMMANDS.values()):
        importlib.import_module(module_name).add_parser(sub)
    # -v is global: it may also come after the command (SUPPRESS: absent there, it does not
    # reset a -v given before the command).
    for p in iter_parsers(parser):
        if p is not parser:
            p.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS,
                           help=_VERBOSE_HELP)
    return parser


def _interrupt_once() -> None:
    """Ctrl-C stops a command once: the first raises KeyboardInterrupt, later ones are
    ignored, so the cleanup that the first one runs (removing a half-built dataset, closing
    files) is never cut short and prints no second traceback. A SIGINT that the shell set
    to be ignored (a background job) stays ignored; training installs its own handlers."""
    import signal
    import threading

    if (threading.current_thread() is not threading.main_thread()
            or signal.getsignal(signal.SIGINT) is not signal.default_int_handler):
        return

    def first(_signum, _frame):
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, first)  # kept to the end: a late Ctrl-C is ignored too


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from longctx import log

    args = build_parser().parse_args(argv)
    log.configure(verbose=args.verbose)
    from longctx.config import ConfigError
    from longctx.errors import UserError

    logger = logging.getLogger("longctx.cli")
    _interrupt_once()
    try:
        code = args.func(args)
    except (ConfigError, UserError) as exc:
        logger.error(f"longctx {args.command}: error: {exc}")
        return 2
    except KeyboardInterrupt:  # Ctrl-C outside the training loop (which stops cleanly itself)
        logger.error(f"longctx {args.command}: interrupted")
        return 130
    except Exception as exc:  # a machine limit no command caught where it happened
        from longctx.fsguard import limit_of, limit_reported, os_error_line

        if limit_of(exc) is None:
            raise
        limit_reported()
        where = str(getattr(exc, "filename", None) or "a file it writes")
        logger.error(f"longctx {args.command}: error: {os_error_line(exc, where, 'stopped')}")
        return 2
    return int(code or 0)


if __name__ == "__main__":
    sys.exit(main())
