"""Stopping a training run: SIGINT/SIGTERM as a request to stop after the current step,
and the fault-injection hook the resume tests use to kill a run at a chosen point."""

from __future__ import annotations

import os
import signal
import threading
from typing import Any

# Test hook for fault injection: "step:N" SIGKILLs the process after step N is dispatched;
# "save:N" SIGKILLs it right after the async save of step N has started; "term:N" sends
# it SIGTERM after step N (as a scheduler's preemption would), "int:N" SIGINT (Ctrl-C).
FAULT_ENV = "LONGCTX_FAULT"


def fault_point() -> tuple[str, int] | None:
    """The injected fault asked for in $LONGCTX_FAULT, as (kind, step), or None."""
    spec = os.environ.get(FAULT_ENV, "")
    if not spec:
        return None
    kind, _, n = spec.partition(":")
    return kind, int(n)


def kill_self() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def fault_after_step(fault: tuple[str, int] | None, step: int) -> None:
    """Inject the 'step', 'term' or 'int' fault if it is due after `step`."""
    if fault == ("step", step):
        kill_self()
    if fault is not None and fault[0] in ("term", "int") and fault[1] == step:
        os.kill(os.getpid(), signal.SIGTERM if fault[0] == "term" else signal.SIGINT)


class StopSignals:
    """SIGINT and SIGTERM alike ask the training loop to stop after the current step (which
    it saves); a second SIGINT interrupts at once. Installed only in the main thread."""

    def __init__(self) -> None:
        self.signal: str | None = None
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, _frame: Any) -> None:
        if self.signal is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.signal = signal.Signals(signum).name

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            self._previous = {s: signal.signal(s, self._handle)
                              for s in (signal.SIGINT, signal.SIGTERM)}
        return self

    def __exit__(self, *exc: Any) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)
