"""The main experiment: Transformer-XL vs sliding window vs vanilla on long synthetic dialogues.

Fair by construction: one tokenizer and dataset, one optimiser, the same token
budget (`train.train_tokens`; each model turns it into its own number of steps), identical
parameter counts (one shared module tree), and a matched span W: XL `mem_len = W` with
`tgt_len <= W`, `window = W`, `ctx_len = W`.

    python experiments/dialogue_comparison.py --size readme   # ~16 min on 2 quiet CPU cores
    python experiments/dialogue_comparison.py --size cpu      # 3 seeds, ~1 hour
    python experiments/dialogue_comparison.py --size gpu-quick  # ~8 min of one H200
    python experiments/dialogue_comparison.py --size gpu      # on an accelerator

It builds the dataset, trains every (model, seed) in its own run directory under --root
(finished runs are skipped, unfinished ones resumed), evaluates each (`longctx evaluate`),
prints the results table (`longctx compare`) and writes each stage's wall-clock seconds to
ROOT/timings.json. As an experiment file, `get_config()` returns the
README size's XL config: `longctx train --config experiments/dialogue_comparison.py
--workdir DIR model.arch=window` trains one model by hand.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
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


def _longctx(*args: str) -> None:
    """`longctx ARGS` in this process (no interpreter start or JAX import per command, and
    a model config's compiled scoring functions are shared); exits on a failure."""
    from longctx.cli import main as longctx_main

    status = longctx_main(list(args))
    if status != 0:
        raise SystemExit(f"failed ({status}): longctx {' '.join(args)}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", choices=sorted(SIZES), default="readme")
    parser.add_argument("--root", default=None, help="default: runs/dialogue_<size>")
    parser.add_argument("--seeds", default=None, help="comma list (default: the size's)")
    parser.add_argument("--parallel", type=int, default=1, help="trainings at a time")
    parser.add_argument("--tokens-per-step", type=int, default=None,
                        help="default: the size's (the same for every model)")
    parser.add_argument("overrides", nargs="*", help="extra section.key=value for every run")
    args = parser.parse_args(argv)

    from longctx.data.dataset import prepare_dataset
    from longctx.train.sweep import run_sweep

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
    print(f"[1/3] training {len(names)} models x {len(seeds)} seeds under {root}", flush=True)
    runs = []
    for arch in names:  # each with its own batch: the same tokens per step for all
        common = overrides + batch_overrides(arch, per_step, overrides)
        t0 = time.time()
        runs += run_sweep(__file__, root, {"train.seed": seeds, "model.arch": [arch]}, common,
                          parallel=args.parallel)
        timings[f"train {arch}"] = time.time() - t0
    for d in size.derived:  # started from a trained run of the same seed
        for seed in seeds:
            source = next(r.workdir for r in runs if f"train.seed={seed}" in r.overrides
                          and f"model.arch={d.source}" in r.overrides)
            common = overrides + batch_overrides(d.arch, per_step, overrides)
            t0 = time.time()
            runs += run_sweep(__file__, root, {"train.seed": [seed], "model.arch": [d.arch]},
                              common + d.overrides(str(source)), parallel=1)
            timings[f"train {d.arch}"] = time.time() - t0
    failed = [r.workdir for r in runs if r.status == "failed"]
    if failed:
        raise SystemExit(f"training failed for {', '.join(map(str, failed))}")
    print(f"[2/3] evaluating ({time.time() - start:.0f}s so far)", flush=True)
    for run in runs:
        if not (run.workdir / "eval.json").exists():
            t0 = time.time()
            _longctx("evaluate", "--workdir", str(run.workdir), *size.evaluate_args)
            timings[f"evaluate {run.workdir.name}"] = time.time() - t0
    print(f"[3/3] comparing ({time.time() - start:.0f}s so far)", flush=True)
    t0 = time.time()
    _longctx("compare", *(str(r.workdir) for r in runs), "--out", str(root / "results"))
    timings["compare"] = time.time() - t0
    timings["total"] = time.time() - start
    (root / "timings.json").write_text(json.dumps(timings, indent=1) + "\n")
    print("timings (s): " + ", ".join(f"{k} {v:.0f}" for k, v in timings.items()))
    print(f"done in {time.time() - start:.0f}s; tables and plots in {root / 'results'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
