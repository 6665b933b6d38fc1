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

from longctx.config import ConfigError
from longctx.errors import UserError


@dataclass
class SweepRun:
    overrides: list[str]
    workdir: Path
    status: str = "pending"  # 'skipped' (already done), 'done', 'failed'


def parse_grid(items: list[str]) -> dict[str, list[str]]:
    """['model.arch=xl,window', 'train.seed=0,1'] -> {'model.arch': ['xl', 'window'], ...}.
    An empty value, a value given twice or a key given twice is refused (each would run
    nothing, or the same cell twice, or silently drop values)."""
    grid: dict[str, list[str]] = {}
    for item in items:
        key, sep, values = item.partition("=")
        key = key.strip()
        split = [v.strip() for v in values.split(",")]
        if not sep or not key or not values.strip():
            raise UserError(f"--grid {item!r}: expected key=v1,v2,... e.g. train.seed=0,1,2")
        if "" in split:
            raise UserError(f"--grid {item!r}: an empty value; list the values without empty "
                            "ones, e.g. train.seed=0,1,2")
        repeated = sorted({v for v in split if split.count(v) > 1})
        if repeated:
            raise UserError(f"--grid {item!r}: {', '.join(repeated)} given twice; list each "
                            "value once")
        if key in grid:
            raise UserError(f"--grid {key}: given twice; put all its values in one --grid "
                            f"{key}=v1,v2,...")
        grid[key] = split
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
        summary = json.loads(path.read_text())
    except (OSError, ValueError, RecursionError):  # missing, cut or not UTF-8: not done
        return False
    return isinstance(summary, dict) and summary.get("done") is True


def _plan(config: str, root: Path, grid: dict[str, list[str]], common: list[str]
          ) -> list[SweepRun]:
    """Every cell with its workdir, each checked as `train` would check it before it starts
    (config rules, memory estimate, a workdir trained with other settings), so a sweep
    that cannot run completely stops before its first cell trains."""
    import jax

    from longctx.config import load_experiment, parse_overrides
    from longctx.models.archs import check_run
    from longctx.train import memory_fit, resume

    devices = jax.local_devices()
    runs: list[SweepRun] = []
    seen: dict[Path, str] = {}
    for assignment in expand(grid):
        overrides = list(common) + [f"{k}={v}" for k, v in assignment.items()]
        name = run_name(assignment)
        cell = " ".join(f"{k}={v}" for k, v in assignment.items()) or "the run"
        if name in (".", "..") or "/" in name or "\\" in name:
            raise UserError(f"sweep cell {cell}: its workdir name '{name}' is not one folder; "
                            "use grid values without '/'")
        workdir = root / name
        if workdir in seen:
            raise UserError(f"sweep cells {seen[workdir]} and {cell} would share the workdir "
                            f"{workdir}; vary keys whose last parts differ, or run two sweeps "
                            "with different --root")
        seen[workdir] = cell
        cfg = parse_overrides(load_experiment(config), overrides)
        try:
            check_run(cfg, num_devices=len(devices))
            memory_fit.check_fits(cfg, devices)
            resume.check_workdir_config(workdir, cfg)
        except (ConfigError, UserError) as exc:
            raise UserError(f"sweep cell {cell} ({workdir}): {exc}; nothing was started") \
                from None
        runs.append(SweepRun(overrides, workdir))
    return runs


def run_sweep(config: str, root: Path, grid: dict[str, list[str]], common: list[str],
              parallel: int = 1, timeout: float | None = None,
              log_dir: Path | None = None) -> list[SweepRun]:
    """Run every grid point (every cell checked first, so a typo fails before training).
    Each run's output goes to this process's, or with `log_dir` to LOG_DIR/NAME.train.log
    (appended: a resumed run continues its log), so runs beside each other do not mix."""
    runs = _plan(config, root, grid, common)

    def launch(run: SweepRun) -> SweepRun:
        if is_done(run.workdir):
            run.status = "skipped"
            return run
        cmd = [sys.executable, "-m", "longctx.cli", "train", "--config", config,
               "--workdir", str(run.workdir), *run.overrides]
        if logging.getLogger("longctx").isEnabledFor(logging.DEBUG):
            cmd.append("-v")  # `longctx -v sweep`: the runs show library notes too
        try:
            if log_dir is None:
                proc = subprocess.run(cmd, timeout=timeout)
            else:
                log_dir.mkdir(parents=True, exist_ok=True)
                with open(log_dir / f"{run.workdir.name}.train.log", "a") as log:
                    proc = subprocess.run(cmd, timeout=timeout, stdout=log,
                                          stderr=subprocess.STDOUT)
            ok = proc.returncode == 0
        except subprocess.TimeoutExpired:
            ok = False
        run.status = "done" if ok and is_done(run.workdir) else "failed"
        return run

    with ThreadPoolExecutor(max_workers=max(parallel, 1)) as pool:
        return list(pool.map(launch, runs))
