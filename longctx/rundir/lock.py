"""One owner per run directory: an OS file lock that every writing command holds.

`train`, `evaluate` (writing into the run), `chat`'s `/save`, `import-txl` and each sweep
cell take `RunLock` on `<workdir>/.lock` (`fcntl.flock`, exclusive, non-blocking) before
they write there. A second writer is refused with one line naming the holder's pid and
command. The kernel drops the lock when its process ends, however it ends (SIGKILL too),
so a dead run never leaves a stale lock behind; the file itself stays and means nothing
without the lock. Readers (`info`, `evaluate --out` elsewhere, `compare`, `chat` without
`/save`) take no lock. In a multi-process run only process 0 takes it (all processes
share the directory and agree on every write).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
from pathlib import Path
from types import TracebackType

from longctx.errors import UserError
from longctx.fsguard import check_dir_arg, os_error_line

LOCK = ".lock"


class RunBusy(UserError):
    """Another process holds the run directory's lock."""


def holder(workdir: str | Path) -> str:
    """What the lock file says about its holder ('pid 123, longctx train'), or 'unknown'."""
    try:
        text = (Path(workdir) / LOCK).read_text(errors="replace").strip()
    except OSError:
        return "unknown"
    pid, _, command = text.partition(" ")
    return f"pid {pid}, longctx {command}" if pid.isdigit() else "unknown"


class RunLock:
    """Hold `workdir`'s lock for `command` (creating the directory if it is missing).

    With `create=False` the directory must exist. A directory this lock created and that
    holds nothing but the lock file when it is released is removed again, so a command
    refused before it wrote anything leaves no trace. `enabled=False` (a non-primary
    process) does nothing.
    """

    def __init__(self, workdir: str | Path, command: str, *, flag: str = "--workdir",
                 enabled: bool = True, busy_hint: str = "", create: bool = True) -> None:
        self.workdir = check_dir_arg(workdir, flag)
        self.command, self.flag, self.enabled, self.create = command, flag, enabled, create
        self.busy_hint = busy_hint
        self._fd: int | None = None
        self._created = False

    def acquire(self) -> RunLock:
        if not self.enabled or self._fd is not None:
            return self
        path = self.workdir / LOCK
        if not self.create and not self.workdir.is_dir():
            raise UserError(f"{self.flag} {self.workdir}: no such directory")
        created = not self.workdir.exists()
        try:
            self.workdir.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            if created:
                with contextlib.suppress(OSError):
                    self.workdir.rmdir()
            raise UserError(os_error_line(exc, f"{self.flag} {self.workdir}",
                                          "cannot create its lock file")) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise UserError(os_error_line(exc, f"{self.flag} {self.workdir}",
                                              "cannot lock it")) from None
            hint = self.busy_hint or "wait for it to finish (or stop it), or use another " \
                                     f"{self.flag}"
            raise RunBusy(f"{self.flag} {self.workdir} is in use by another longctx process "
                          f"({holder(self.workdir)}); {hint}") from None
        self._fd, self._created = fd, created
        try:  # who holds it, for the message a second writer gets (best effort)
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()} {self.command}\n".encode(), 0)
        except OSError:
            pass  # a full or read-only disk: the lock holds all the same
        return self

    def release(self) -> None:
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        if self._created:  # refused before writing anything: leave no empty run behind
            # best effort: an undeletable folder only leaves an empty run behind
            with contextlib.suppress(OSError):
                if [p.name for p in self.workdir.iterdir()] == [LOCK]:
                    (self.workdir / LOCK).unlink()
                    self.workdir.rmdir()
        os.close(fd)  # closing the last descriptor drops the lock

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.release()
