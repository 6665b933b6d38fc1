"""Training metrics: `metrics.jsonl`, TensorBoard event files, and progress on the terminal
(a tqdm bar when stderr is a terminal, else one logged line per logged step). Validation
rows (`longctx.train.validation`) go to the same file, marked `"kind": "validation"`.

Only the primary process writes. After a resume from step s, rows logged past s (by the
run that died) are dropped first, so no step is logged twice.
"""

from __future__ import annotations

import json
import logging
import math
import sys
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


def truncate_jsonl(path: Path, last_step: int) -> None:
    """Keep only the rows of `path` with step <= last_step (the restored step). A row that
    is not a whole JSON object (cut by a kill mid-write, or bytes that are not UTF-8) is
    dropped, so a damaged tail never stops a resume."""
    if not path.exists():
        return
    kept = []
    for raw in path.read_bytes().splitlines():
        try:
            line = raw.decode("utf-8")
            row = json.loads(line)
        except (UnicodeDecodeError, ValueError, RecursionError):
            continue
        step = row.get("step", 0) if isinstance(row, dict) else None
        if isinstance(step, int | float) and step <= last_step:
            kept.append(line)
    tmp = path.with_suffix(".tmp")
    tmp.write_text("".join(k + "\n" for k in kept))
    tmp.replace(path)


class MetricsWriter:
    """Writes one row per logged step to metrics.jsonl and TensorBoard; logs progress."""

    def __init__(self, workdir: Path, start_step: int, total_steps: int, enabled: bool = True):
        self.enabled = enabled
        self.total = total_steps
        self.path = workdir / "metrics.jsonl"
        self._bar = None
        self._tb = None
        if not enabled:
            return
        truncate_jsonl(self.path, start_step)
        from tensorboardX import SummaryWriter

        # purge_step hides events a killed run wrote past the restored step.
        self._tb = SummaryWriter(str(workdir / "tb"), purge_step=start_step or None)
        if sys.stderr.isatty():
            from tqdm import tqdm

            self._bar = tqdm(total=total_steps, initial=start_step, unit="step", dynamic_ncols=True)
        self._file = self.path.open("a")

    def write(self, row: dict[str, Any]) -> None:
        if not self.enabled:
            return
        self._file.write(json.dumps(row, sort_keys=True) + "\n")
        self._file.flush()
        step = row["step"]
        for key, value in row.items():
            if key != "step" and isinstance(value, int | float) and math.isfinite(value):
                self._tb.add_scalar(f"train/{key}", value, step)
        if self._bar is not None:
            self._bar.n = step
            self._bar.set_postfix(loss=f"{row['loss']:.3f}", tok_s=f"{row['tokens_per_sec']:.0f}")
            self._bar.refresh()
        else:
            log.info(f"step {step}/{self.total}  loss {row['loss']:.4f}  "
                     f"ppl {row['perplexity']:.2f}  lr {row['lr']:.2e}  "
                     f"gnorm {row['grad_norm']:.3f}  {row['tokens_per_sec']:.0f} tok/s")

    def write_validation(self, row: dict[str, Any], line: str) -> None:
        """A validation row (`kind` 'validation'): metrics.jsonl, TensorBoard's
        validation/* scalars (recall as validation/recall_<bucket>), and `line` logged."""
        if not self.enabled:
            return
        self._file.write(json.dumps(row, sort_keys=True) + "\n")
        self._file.flush()
        scalars = {k: v for k, v in row.items() if k not in ("step", "kind")}
        for bucket, value in (scalars.pop("recall", None) or {}).items():
            scalars[f"recall_{bucket.replace('>', 'over')}"] = value  # '>4x': recall_over4x
        for key, value in scalars.items():
            if isinstance(value, int | float) and math.isfinite(value):
                self._tb.add_scalar(f"validation/{key}", value, row["step"])
        self._tb.flush()
        if self._bar is not None:
            self._bar.write(line)
        else:
            log.info(line)

    def close(self) -> None:
        if not self.enabled:
            return
        self._file.close()
        self._tb.close()
        if self._bar is not None:
            self._bar.close()
