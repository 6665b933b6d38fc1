"""Terminal output through `logging`: the `longctx` logger hierarchy, and library noise.

Library modules never print: they log progress (info) and warnings to
`logging.getLogger(__name__)`, all under `longctx`. What a command produces (its JSON,
table or summary, the files it wrote) is printed to stdout by its command module.
`configure`, called once by the `longctx` command, makes the log look like plain output:
info lines on stdout as they are, warnings on stderr as `warning: TEXT`, errors on stderr
as they are. The WARNING lines of absl (orbax, TFDS), JAX, Flax and TensorFlow are hidden
unless `verbose` (`longctx -v`): they are notes about the libraries, not about the run.
"""

from __future__ import annotations

import logging
import os
import sys

ROOT = "longctx"
LIBRARIES = ("absl", "orbax", "jax", "jaxlib", "flax", "etils", "tensorflow",
             "tensorflow_datasets")


class _StdStream(logging.Handler):
    """Writes to sys.stdout or sys.stderr as they are when a record comes (so output that a
    caller redirects after `configure`, e.g. a test's capture, is still caught)."""

    def __init__(self, name: str) -> None:
        super().__init__()
        self.stream_name = name

    def emit(self, record: logging.LogRecord) -> None:
        try:
            stream = getattr(sys, self.stream_name)
            stream.write(self.format(record) + "\n")
            stream.flush()
        except Exception:  # noqa: BLE001 (logging's own rule: report, never raise)
            self.handleError(record)


class _Plain(logging.Formatter):
    """The message alone; a warning gets a `warning: ` prefix."""

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        return f"warning: {text}" if record.levelno == logging.WARNING else text


def _below_warning(record: logging.LogRecord) -> bool:
    return record.levelno < logging.WARNING


def configure(verbose: bool = False) -> None:
    """Route the `longctx` loggers to the terminal and set the libraries' threshold.

    Idempotent: a second call replaces the handlers of the first."""
    logger = logging.getLogger(ROOT)
    for handler in [h for h in logger.handlers if isinstance(h, _StdStream)]:
        logger.removeHandler(handler)
    out, err = _StdStream("stdout"), _StdStream("stderr")
    out.addFilter(_below_warning)
    err.setLevel(logging.WARNING)
    for handler in (out, err):
        handler.setFormatter(_Plain("%(message)s"))
        logger.addHandler(handler)
    logger.setLevel(logging.DEBUG if verbose else logging.INFO)
    logger.propagate = False  # a library's basicConfig on the root would print it twice

    threshold = logging.WARNING if verbose else logging.ERROR
    logging.getLogger().setLevel(threshold)  # any other library that logs through the root
    for name in LIBRARIES:
        logging.getLogger(name).setLevel(threshold)
    # Read when these libraries are imported (after this, in the command).
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1" if verbose else "2")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "warning" if verbose else "error")
