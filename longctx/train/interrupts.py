"""Stopping a training run: SIGINT/SIGTERM as a request to stop after the current step,
and the fault-injection hook the resume tests use to kill a run at a chosen point."""

from __future__ import annotations

import os
import signal
import threading
from typing import Any

# Test hook for fault injection: "step:N" SIGKILLs the process after step N is dispatched;
# "save:N" SIGKILLs it right after the async save of step N has started; "term:N" sends
# it SIGTERM after step N (as a scheduler's preemption would), "int:N" SIGINT (Ctrl-C);
# "intint:N" SIGINT after step N and again 50 ms later (an impatient second Ctrl-C, landing
# while the stop's save runs).
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
    if fault is not None and fault[0] in ("term", "int", "intint") and fault[1] == step:
        os.kill(os.getpid(), signal.SIGTERM if fault[0] == "term" else signal.SIGINT)
        if fault[0] == "intint":
            again = threading.Timer(0.05, os.kill, (os.getpid(), signal.SIGINT))
            again.daemon = True
            again.start()


class StopSignals:
    """SIGINT and SIGTERM alike ask the training loop to stop after the current step (which
    it saves). Further signals while it stops are ignored (one note on stderr), so a second
    Ctrl-C never cuts the save short or prints a traceback from a saving thread; SIGKILL
    still stops at once, keeping the last complete checkpoint. Installed only in the main
    thread.

    With several processes a signal may reach only one of them (a preempted host), and a
    save needs them all: `agreed` makes every process see the stop at the same step (a
    small all-gather of the flags every `every` steps, where the loop waits on the devices
    anyway)."""

    def __init__(self) -> None:
        self.signal: str | None = None
        self._previous: dict[int, Any] = {}
        self._agreed = False

    def _handle(self, signum: int, _frame: Any) -> None:
        if self.signal is not None:
            os.write(2, b"longctx: already stopping after the current step (saving it); "
                        b"further signals are ignored, SIGKILL stops at once\n")
            return
        self.signal = signal.Signals(signum).name

    def agreed(self, step: int, every: int, process_count: int) -> bool:
        """Whether every process stops after `step` (steps completed); the same answer on
        each process. One process: as soon as a signal came."""
        if process_count == 1:
            return self.signal is not None
        if not self._agreed and step % every == 0:
            import numpy as np
            from jax.experimental import multihost_utils

            flags = multihost_utils.process_allgather(
                np.asarray([self.signal is not None], np.int32))
            if int(np.max(flags)) and self.signal is None:
                self.signal = "SIGTERM to another process"
            self._agreed = bool(np.max(flags))
        return self._agreed

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            self._previous = {s: signal.signal(s, self._handle)
                              for s in (signal.SIGINT, signal.SIGTERM)}
        return self

    def __exit__(self, *exc: Any) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)
