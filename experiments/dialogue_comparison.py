"""The main experiment: Transformer-XL vs sliding window vs vanilla on long synthetic dialogues.

Fair by construction: one tokenizer and dataset, one optimiser, the same token
budget (`train.train_tokens`; each model turns it into its own number of steps), identical
parameter counts (one shared module tree), and a matched span W: XL `mem_len = W` with
`tgt_len <= W`, `window = W`, `ctx_len = W`.

    python experiments/dialogue_comparison.py --size readme --parallel 2  # ~13 min, 2 quiet cores
    python experiments/dialogue_comparison.py --size cpu      # 3 seeds, ~1 hour
    python experiments/dialogue_comparison.py --size gpu-quick  # ~8 min of one H200
    python experiments/dialogue_comparison.py --size gpu      # on an accelerator

It builds the dataset, trains every (model, seed) in its own run directory under --root
(finished runs are skipped, unfinished ones resumed), evaluates each (`longctx evaluate`),
prints the results table (`longctx compare`) and writes each stage's wall-clock seconds to
ROOT/timings.json. `--parallel N` trains and evaluates N models at a time, each in its own
process (their output in ROOT/logs/); a derived model starts once its source is trained.
Every run's numbers are the same at any N (each run is its own deterministic process).
As an experiment file, `get_config()` returns the README size's XL config: `longctx train
--config experiments/dialogue_comparison.py --workdir DIR model.arch=window` trains one
model by hand.
"""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

from longctx.config import Config, parse_overrides
from longctx.train import presets

SIZES = presets.COMPARISON  # readme, cpu, gpu, gpu-quick (longctx/train/presets.py)


def batch_overrides(arch: str, tokens_per_step: int, overrides: list[str]) -> list[str]:
    """The batch giving `arch` `tokens_per_step` tokens per optimiser step on this
    experiment's config (`presets.batch_overrides`)."""
    return presets.batch_overrides(get_config(), arch, tokens_per_step, overrides)


def get_config() -> Config:
    """The README size, XL; pick another model with `model.arch=window|vanilla`."""
    cfg = Config(name="dialogue_comparison")
    cfg.train.log_every = 25
    cfg.train.host_sync_every = 25
    cfg.checkpoint.every_steps = 200
    cfg.checkpoint.keep = 2
    return parse_overrides(cfg, SIZES["readme"].overrides())


class Job:
    """One model of one seed: train it (skipped when done, resumed when not), evaluate it.
    A derived model starts after its source's training. (A plain class: `longctx train
    --config` imports this file under another name, where a dataclass cannot resolve.)"""

    def __init__(self, arch: str, seed: str, overrides: list[str],
                 derived: presets.Derived | None = None) -> None:
        self.arch, self.seed, self.overrides, self.derived = arch, seed, overrides, derived
        self.run = None  # the SweepRun once trained
        self.trained: Future = Future()  # set to the run's workdir (None: it failed)


def _evaluate(workdir: Path, extra: tuple[str, ...], log_dir: Path | None) -> bool:
    """`longctx evaluate` in a child process (runs beside each other when --parallel > 1;
    output to LOG_DIR/NAME.evaluate.log then); True when it succeeded."""
    cmd = [sys.executable, "-m", "longctx.cli", "evaluate", "--workdir", str(workdir), *extra]
    if log_dir is None:
        return subprocess.run(cmd).returncode == 0
    with open(log_dir / f"{workdir.name}.evaluate.log", "w") as log:
        return subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT).returncode == 0


def _run_jobs(jobs: list[Job], root: Path, size: presets.Preset, parallel: int,
              timings: dict[str, float]) -> list[Job]:
    """Train and evaluate every job, `parallel` at a time, each derived job after its
    source's training; returns the jobs that failed (a derived job fails with its source)."""
    import jax

    from longctx.train.sweep import run_sweep

    jax.local_devices()  # the backend started once, here, before the jobs' threads use it
    log_dir = root / "logs" if parallel > 1 else None
    by_key = {(j.arch, j.seed): j for j in jobs}
    failed: list[Job] = []
    lock = threading.Lock()

    stop = threading.Event()  # Ctrl-C: no job starts after it

    def one(job: Job) -> None:
        overrides = job.overrides
        if stop.is_set():
            job.trained.set_result(None)
            return
        try:
            if job.derived is not None:
                source = by_key[(job.derived.source, job.seed)].trained.result()
                if source is None:
                    raise RuntimeError(f"its source {job.derived.source} seed {job.seed} failed")
                overrides = overrides + job.derived.overrides(str(source))
            t0 = time.time()
            (job.run,) = run_sweep(__file__, root, {"train.seed": [job.seed],
                                                    "model.arch": [job.arch]}, overrides,
                                   log_dir=log_dir)
            with lock:  # seconds of every seed's training of this architecture
                timings[f"train {job.arch}"] = (timings.get(f"train {job.arch}", 0)
                                                + time.time() - t0)
            if job.run.status == "failed":
                raise RuntimeError("stopped (Ctrl-C)" if stop.is_set() else "training failed")
            job.trained.set_result(job.run.workdir)
            _say(f"trained {job.run.workdir.name} ({time.time() - t0:.0f}s)", log_dir)
            if not (job.run.workdir / "eval.json").exists():
                t0 = time.time()
                if not _evaluate(job.run.workdir, size.evaluate_args, log_dir):
                    raise RuntimeError("evaluation failed")
                timings[f"evaluate {job.run.workdir.name}"] = time.time() - t0
                _say(f"evaluated {job.run.workdir.name} ({time.time() - t0:.0f}s)", log_dir)
        except Exception as exc:  # noqa: BLE001 (every job is reported; the others go on)
            if not job.trained.done():
                job.trained.set_result(None)
            print(f"{job.arch} seed {job.seed}: {exc}", flush=True)
            with lock:
                failed.append(job)

    pool = ThreadPoolExecutor(max_workers=max(parallel, 1))
    try:
        list(pool.map(one, _order(jobs, parallel)))
    except KeyboardInterrupt:  # the running trainings got it too: they save and stop
        stop.set()
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    return failed


def _order(jobs: list[Job], parallel: int) -> list[Job]:
    """The order the pool takes the jobs in: the base models as listed, each derived model
    `parallel` places after its source. The pool takes jobs in order, so a derived job
    waits only for a source that is already running or done, and it starts as soon as a
    worker frees up after that (the longest chain, source then derived, starts early)."""
    order = [j for j in jobs if j.derived is None]
    for job in (j for j in jobs if j.derived is not None):
        source = next(k for k, j in enumerate(order)
                      if (j.arch, j.seed) == (job.derived.source, job.seed))
        order.insert(min(source + max(parallel, 1), len(order)), job)
    return order


def _say(line: str, log_dir: Path | None) -> None:
    """A progress line; with logs in files, the line that says where they are."""
    print(line + (f" (logs: {log_dir})" if log_dir else ""), flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", choices=sorted(SIZES), default="readme")
    parser.add_argument("--root", default=None, help="default: runs/dialogue_<size>")
    parser.add_argument("--seeds", default=None, help="comma list (default: the size's)")
    parser.add_argument("--parallel", type=int, default=1,
                        help="models trained or evaluated at a time (their output then goes "
                             "to ROOT/logs/)")
    parser.add_argument("--tokens-per-step", type=int, default=None,
                        help="default: the size's (the same for every model)")
    parser.add_argument("overrides", nargs="*", help="extra section.key=value for every run")
    args = parser.parse_args(argv)
    # Ctrl-C stops the study even where it was started with SIGINT ignored (a background
    # job of a script), as its trainings do: they install their own handler.
    signal.signal(signal.SIGINT, signal.default_int_handler)

    from longctx import log
    from longctx.cli import main as longctx_main
    from longctx.data.dataset import prepare_dataset

    log.configure()  # library notes hidden, as in the longctx command
    size = SIZES[args.size]
    root = Path(args.root or f"runs/dialogue_{args.size}")
    seeds = args.seeds.split(",") if args.seeds else [str(s) for s in size.seeds]
    per_step = args.tokens_per_step or size.tokens_per_step
    overrides = [f"name=dialogue_comparison_{args.size}", *size.overrides(), *args.overrides]
    start = time.time()
    timings: dict[str, float] = {}
    t0 = time.time()
    prepare_dataset(parse_overrides(get_config(), overrides).data)  # once, before the runs
    timings["data"] = time.time() - t0
    names = size.arch_names()  # the size's architectures (default: the studied ones)
    # each with its own batch: the same tokens per step for all
    jobs = [Job(arch, seed, overrides + batch_overrides(arch, per_step, overrides))
            for arch in names for seed in seeds]
    jobs += [Job(d.arch, seed, overrides + batch_overrides(d.arch, per_step, overrides),
                 derived=d) for d in size.derived for seed in seeds]
    print(f"[1/2] training and evaluating {len(jobs)} models ({len(names)} architectures x "
          f"{len(seeds)} seeds, {len(jobs) - len(names) * len(seeds)} derived), "
          f"{max(args.parallel, 1)} at a time, under {root}", flush=True)
    try:
        failed = _run_jobs(jobs, root, size, args.parallel, timings)
    except KeyboardInterrupt:
        print(f"interrupted: finished runs are kept, the others saved where they stopped; "
              f"the same command resumes them ({root})", flush=True)
        return 130
    if failed:
        raise SystemExit("failed: " + ", ".join(f"{j.arch} seed {j.seed}" for j in failed))
    print(f"[2/2] comparing ({time.time() - start:.0f}s so far)", flush=True)
    t0 = time.time()
    status = longctx_main(["compare", *(str(j.run.workdir) for j in jobs),
                           "--out", str(root / "results")])
    if status != 0:
        raise SystemExit(f"failed ({status}): longctx compare")
    timings["compare"] = time.time() - t0
    timings["total"] = time.time() - start
    (root / "timings.json").write_text(json.dumps(timings, indent=1) + "\n")
    print("timings (s): " + ", ".join(f"{k} {v:.0f}" for k, v in timings.items()))
    print(f"done in {time.time() - start:.0f}s; tables and plots in {root / 'results'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
