"""Experiment launcher: a grid of overrides, one workdir per run, N at a time.

Finished runs (their `summary.json` says done) are skipped; unfinished ones are resumed
(training restores the workdir's latest checkpoint). Each run is a `longctx train`
subprocess, so a crash in one does not take the others down.
"""

from __future__ import annotations

import itertools
import json
import logging
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from longctx.errors import UserError


@dataclass
class SweepRun:
    overrides: list[str]
    workdir: Path
    status: str = "pending"  # 'skipped' (already done), 'done', 'failed'


def parse_grid(items: list[str]) -> dict[str, list[str]]:
    """['model.arch=xl,window', 'train.seed=0,1'] -> {'model.arch': ['xl', 'window'], ...}."""
    grid: dict[str, list[str]] = {}
    for item in items:
        key, sep, values = item.partition("=")
        if not sep or not values:
            raise UserError(f"--grid {item!r}: expected key=v1,v2,... e.g. train.seed=0,1,2")
        grid[key.strip()] = [v.strip() for v in values.split(",") if v.strip()]
    return grid


def run_name(assignment: dict[str, str]) -> str:
    """A readable workdir name: 'arch-xl_seed-0' from {'model.arch': 'xl', 'train.seed': '0'}."""
    if not assignment:
        return "run"
    return "_".join(f"{k.split('.')[-1]}-{v}" for k, v in assignment.items())


def expand(grid: dict[str, list[str]]) -> list[dict[str, str]]:
    keys = list(grid)
    return [dict(zip(keys, combo, strict=True)) for combo in itertools.product(*grid.values())]


def is_done(workdir: Path) -> bool:
    path = workdir / "summary.json"
    try:
        return bool(json.loads(path.read_text()).get("done"))
    except (OSError, json.JSONDecodeError):
        return False


def run_sweep(config: str, root: Path, grid: dict[str, list[str]], common: list[str],
              parallel: int = 1, timeout: float | None = None) -> list[SweepRun]:
    """Run every grid point (validating all configs first, so a typo fails before training)."""
    from longctx.config import load_experiment, parse_overrides
    from longctx.models.archs import check_run

    runs = []
    for assignment in expand(grid):
        overrides = list(common) + [f"{k}={v}" for k, v in assignment.items()]
        check_run(parse_overrides(load_experiment(config), overrides))
        runs.append(SweepRun(overrides, root / run_name(assignment)))

    def launch(run: SweepRun) -> SweepRun:
        if is_done(run.workdir):
            run.status = "skipped"
            return run
        cmd = [sys.executable, "-m", "longctx.cli", "train", "--config", config,
               "--workdir", str(run.workdir), *run.overrides]
        if logging.getLogger("longctx").isEnabledFor(logging.DEBUG):
            cmd.append("-v")  # `longctx -v sweep`: the runs show library notes too
        try:
            proc = subprocess.run(cmd, timeout=timeout)
            ok = proc.returncode == 0
        except subprocess.TimeoutExpired:
            ok = False
        run.status = "done" if ok and is_done(run.workdir) else "failed"
        return run

    with ThreadPoolExecutor(max_workers=max(parallel, 1)) as pool:
        return list(pool.map(launch, runs))
