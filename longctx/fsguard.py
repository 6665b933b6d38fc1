"""The machine's limits as one line: full disks, read-only or unusable paths, too many
open files.

Every command turns these into a `UserError` naming the path and the fix, where they
happen (so what was half-written can be removed there), instead of a traceback. Errors
that come back from libraries' own threads (orbax, tensorstore) often arrive as another
exception whose text holds the system's message; `limit_of` recognises both.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import shutil
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from longctx.errors import UserError

# errno -> (what the system said, how to fix it)
LIMITS = {
    errno.ENOSPC: ("no space left on the device", "free some space, then rerun"),
    errno.EDQUOT: ("disk quota exceeded", "free some space, then rerun"),
    errno.EFBIG: ("file too large for the file system or the file-size limit",
                  "free some space or raise the limit (ulimit -f), then rerun"),
    errno.EROFS: ("read-only file system", "use a writable directory"),
    errno.EACCES: ("permission denied", "use a directory you may write to"),
    errno.EPERM: ("operation not permitted", "use a directory you may write to"),
    errno.EMFILE: ("too many open files", "raise the open-file limit (ulimit -n), then rerun"),
    errno.ENFILE: ("too many open files in the system", "close other programs, then rerun"),
    errno.ELOOP: ("a symbolic link loop", "fix or remove the link"),
    errno.ENOTDIR: ("a part of the path is a file, not a directory", "use another path"),
    errno.EISDIR: ("a directory where a file was expected", "use another path"),
    errno.ENAMETOOLONG: ("name too long", "use a shorter path"),
}
# How the messages read when a library passes them on as text.
_TEXTS = {os.strerror(code): code for code in LIMITS}


def limit_of(exc: BaseException) -> int | None:
    """The errno of a machine limit behind `exc` (an OSError, or any exception whose text
    or cause chain carries one of the system's messages), or None."""
    seen = 0
    while exc is not None and seen < 10:
        if isinstance(exc, OSError) and exc.errno in LIMITS:
            return exc.errno
        text = str(exc)
        for message, code in _TEXTS.items():
            if message in text:
                return code
        exc = exc.__cause__ or exc.__context__
        seen += 1
    return None


def _is_noise(exc: BaseException | None) -> bool:
    """An error that only repeats a reported limit, or a library's thread dying with the
    interpreter after it (a closed event loop, imports at shutdown)."""
    if exc is None:
        return False
    if _FAILED[0]:
        return True
    text = str(exc)
    return (limit_of(exc) is not None or any(t in text for t in _SHUTDOWN_TEXTS))


_SHUTDOWN_TEXTS = ("Event loop is closed", "Python is likely shutting down",
                   "cannot schedule new futures after interpreter shutdown",
                   "object has no attribute '_ssock'")  # an event loop that EMFILE cut short


class _DropNoise(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if _FAILED[0]:
            return False
        exc = record.exc_info[1] if record.exc_info else None
        message = record.getMessage()
        return not (_is_noise(exc) or any(text in message for text in _TEXTS)
                    or any(text in message for text in _SHUTDOWN_TEXTS))


_QUIETED = [False]
_FAILED = [False]  # a limit was reported: what the libraries' threads say next is its echo


def limit_reported() -> None:
    """The command reported a machine limit and is ending: from now on the libraries'
    background threads (their log records, thread and unraisable errors) are silent, as
    their in-flight writes fail one after the other."""
    quiet_limit_noise()
    _FAILED[0] = True


def quiet_limit_noise() -> None:
    """Hide a machine limit's failure as libraries' background threads (orbax, tensorstore,
    asyncio) report it again and again while they wind down; the command reports it once,
    in one line. Installed before the writes that may fail (the threads log as it happens)."""
    if _QUIETED[0]:
        return
    _QUIETED[0] = True
    for name in ("absl", "asyncio", "orbax", "tensorboardX"):
        logging.getLogger(name).addFilter(_DropNoise())
    import warnings

    warnings.filterwarnings("ignore", message="coroutine .* was never awaited")
    previous_unraisable, previous_thread = sys.unraisablehook, threading.excepthook

    def unraisable(info) -> None:
        if not _is_noise(info.exc_value):
            previous_unraisable(info)

    def thread_hook(args) -> None:
        if not _is_noise(args.exc_value):
            previous_thread(args)

    sys.unraisablehook, threading.excepthook = unraisable, thread_hook


def os_error_line(exc: BaseException, where: str, doing: str) -> str:
    """'WHERE: DOING: no space left on the device (PATH); free some space ...'."""
    code = limit_of(exc)
    if code is None:
        reason = " ".join(str(exc).split())[:200] or type(exc).__name__
        if isinstance(exc, OSError) and exc.strerror:
            reason = exc.strerror
        fix = "check the path and rerun"
    else:
        reason, fix = LIMITS[code]
    name = getattr(exc, "filename", None)
    path = f" ({name})" if name and str(name) not in where else ""
    return f"{where}: {doing}: {reason}{path}; {fix}"


@contextlib.contextmanager
def machine_limits(where: str, doing: str, cleanup: Callable[[], None] | None = None,
                   then: Callable[[], str] | None = None) -> Iterator[None]:
    """Turn a machine limit raised inside into one UserError line (after `cleanup`, which
    removes what was half-written; `then()` adds what is still intact); other errors pass
    through unchanged. Libraries' threads are quieted first: they report a failed write
    as it happens, before it reaches here."""
    quiet_limit_noise()
    try:
        yield
    except UserError:
        raise
    except Exception as exc:
        if limit_of(exc) is None:
            raise
        limit_reported()
        if cleanup is not None:
            with contextlib.suppress(OSError):
                cleanup()
        line = os_error_line(exc, where, doing)
        raise UserError(f"{line}; {then()}" if then is not None else line) from None


def remove_tree(path: Path) -> Callable[[], None]:
    """A cleanup that removes a half-written file or folder."""
    def clean() -> None:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        elif path.exists() or path.is_symlink():
            path.unlink()
    return clean


def remove_all(paths: list[Path]) -> None:
    """Remove each file or folder, best effort (a cleanup must not raise over the error it
    cleans after)."""
    for path in paths:
        with contextlib.suppress(OSError):
            remove_tree(path)()


def remove_until_quiet(find: Callable[[], list[Path]], quiet_s: float = 1.0,
                       limit_s: float = 30.0) -> None:
    """Remove what `find()` lists once orbax's threads have ended, and again until nothing
    has come back for `quiet_s` (at most `limit_s` in all): the cleanup after a failed save.

    Orbax reports a save's first failed write while its other threads (metadata, the other
    items) may still run, and tensorstore's writes may still be in flight in its own (C++)
    threads, which Python cannot join; each creates its folders again (`mkdir -p`) before
    it fails too. On a loaded machine one can come some hundred milliseconds after the
    error, so one removal, or one short look, can leave the save's folder behind."""
    start = time.monotonic()
    for thread in threading.enumerate():  # joined at exit anyway (not daemons): no extra wait
        if thread is not threading.current_thread() and not thread.daemon and \
                type(thread).__module__.startswith("orbax."):
            # the base class's join: orbax's own raises the thread's error again
            threading.Thread.join(thread, max(0.0, start + limit_s - time.monotonic()))
    quiet_from = time.monotonic()
    while time.monotonic() - start < limit_s:
        found = find()
        if found:
            remove_all(found)
            quiet_from = time.monotonic()
        elif time.monotonic() - quiet_from >= quiet_s:
            return
        time.sleep(0.02)


def check_dir_arg(value: str | Path | None, flag: str) -> Path:
    """A directory argument that can be used: not empty, not a file, not a link that loops
    or leads nowhere, and no file where a parent directory should be."""
    if value is None or not str(value).strip():
        raise UserError(f"{flag} is empty; pass a directory, e.g. {flag} runs/smoke")
    path = Path(value)
    if path.is_symlink() and not os.path.exists(path):
        try:
            os.stat(path)
            reason = "leads nowhere"
        except OSError as exc:
            reason = "loops" if exc.errno == errno.ELOOP else "leads nowhere"
        raise UserError(f"{flag} {path}: a symbolic link that {reason}; fix or remove the "
                        "link, or pass another directory")
    try:
        os.stat(path)
    except OSError as exc:
        if exc.errno in (errno.ENOENT, errno.ENOTDIR):
            for parent in path.absolute().parents:  # the nearest that exists must be a folder
                if parent.exists():
                    if not parent.is_dir():
                        raise UserError(f"{flag} {path}: {parent} is a file, not a directory; "
                                        "pass another directory") from None
                    break
            if exc.errno == errno.ENOENT:
                return path
        raise UserError(os_error_line(exc, f"{flag} {path}", "cannot use it")) from None
    if not path.is_dir():
        raise UserError(f"{flag} {path} is a file, not a directory; pass a directory")
    return path
