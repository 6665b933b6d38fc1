"""A `jax.profiler` trace of chosen training steps (`train.profile_steps=FIRST,LAST`).

The trace starts just before step FIRST is dispatched and stops once step LAST has
finished on the device, so it holds exactly those steps (each marked as a `train` step for
TensorBoard's step view) and no compilation when FIRST > 1. It is written where TensorBoard
looks for profiles, WORKDIR/tb/plugins/profile/<timestamp>/ (`*.xplane.pb`); view it with
`tensorboard --logdir WORKDIR/tb` (Profile tab, from the tensorboard-plugin-profile package)
or open the file in https://ui.perfetto.dev / xprof. Only the primary process traces.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import jax

from longctx.config import Config

log = logging.getLogger(__name__)


class StepProfiler:
    """Starts and stops the trace around the configured steps of one training session."""

    def __init__(self, first: int, last: int, logdir: Path) -> None:
        self.first, self.last, self.logdir = first, last, logdir
        self.tracing = False
        self._step_note: Any = None

    def before(self, step: int) -> None:
        """Call before dispatching `step` (1-based)."""
        if step == self.first and not self.tracing:
            self.logdir.mkdir(parents=True, exist_ok=True)
            jax.profiler.start_trace(str(self.logdir))
            self.tracing = True
            log.info(f"profiling steps {self.first}-{self.last} into {self.logdir}")
        if self.tracing:
            self._step_note = jax.profiler.StepTraceAnnotation("train", step_num=step)
            self._step_note.__enter__()

    def after(self, step: int, outputs: Any) -> None:
        """Call after dispatching `step`; at the last traced step wait for `outputs` and stop."""
        if not self.tracing:
            return
        self._step_note.__exit__(None, None, None)
        self._step_note = None
        if step >= self.last:
            jax.block_until_ready(outputs)
            self.close()

    def close(self) -> None:
        """Stop a trace still running (a run stopped inside the traced steps)."""
        if self._step_note is not None:
            self._step_note.__exit__(None, None, None)
            self._step_note = None
        if self.tracing:
            jax.profiler.stop_trace()
            self.tracing = False
            log.info(f"wrote the profile of steps {self.first}-{self.last} to "
                     f"{self.logdir / 'plugins' / 'profile'} (tensorboard --logdir "
                     f"{self.logdir})")


class _Off:
    """No profiling: every call does nothing."""

    def before(self, step: int) -> None:
        """No trace to start."""

    def after(self, step: int, outputs: Any) -> None:
        """No trace to stop."""

    def close(self) -> None:
        """Nothing open."""


def for_run(cfg: Config, workdir: Path, is_primary: bool, start: int) -> StepProfiler | _Off:
    """The session's profiler: off without train.profile_steps, on other processes, or when
    the run resumes past the first traced step."""
    steps = cfg.train.profile_steps
    if not steps or not is_primary:
        return _Off()
    first, last = steps[0], steps[-1]
    if first <= start:
        log.warning(f"train.profile_steps={first},{last}: the run resumes at step {start}, "
                    "past the first traced step; nothing is profiled")
        return _Off()
    return StepProfiler(first, last, workdir / "tb")
