"""CLI: `longctx train`, `longctx info`, `longctx sweep`."""

from __future__ import annotations

import argparse
import json

from longctx.errors import UserError


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a model (resumes the workdir's latest checkpoint)")
    p.add_argument("--config", required=True, help="experiment file, e.g. experiments/smoke.py")
    p.add_argument("--workdir", required=True, help="run directory (created if missing)")
    p.add_argument("--coordinator", default=None,
                   help="multi-host: coordinator host:port (or LONGCTX_COORDINATOR)")
    p.add_argument("--num-processes", type=int, default=None,
                   help="multi-host: how many processes in all (or LONGCTX_NUM_PROCESSES)")
    p.add_argument("--process-id", type=int, default=None,
                   help="multi-host: this process's index, 0..N-1 (or LONGCTX_PROCESS_ID)")
    p.add_argument("--peer-timeout", type=int, default=None,
                   help="multi-host: seconds after which a silent peer fails the run "
                        "(or LONGCTX_PEER_TIMEOUT; default 30)")
    p.add_argument("overrides", nargs="*", help="section.key=value, e.g. train.num_steps=20")
    p.set_defaults(func=_train)

    p = sub.add_parser("info", help="print a run's step, size and parameter fingerprint (JSON)")
    p.add_argument("--workdir", required=True, help="run directory (from longctx train)")
    p.set_defaults(func=_info)

    p = sub.add_parser("sweep", help="run a grid of experiments, one workdir each")
    p.add_argument("--config", required=True,
                   help="experiment file every run starts from, e.g. experiments/smoke.py")
    p.add_argument("--root", required=True, help="directory that holds one workdir per run")
    p.add_argument("--grid", action="append", default=[],
                   help="key=v1,v2,... (repeatable), e.g. model.arch=xl,window train.seed=0,1")
    p.add_argument("--parallel", type=int, default=1, help="runs at a time")
    p.add_argument("--timeout", type=float, default=None, help="seconds per run (default none)")
    p.add_argument("overrides", nargs="*", help="section.key=value applied to every run")
    p.set_defaults(func=_sweep)


def _train(args: argparse.Namespace) -> int:
    from longctx.config import load_experiment, parse_overrides
    from longctx.train.loop import train
    from longctx.train.parallel import init_distributed

    cfg = parse_overrides(load_experiment(args.config), args.overrides)
    init_distributed(args.coordinator, args.num_processes, args.process_id, args.peer_timeout)
    summary = train(cfg, args.workdir)
    print(json.dumps(summary, sort_keys=True))
    return 0


def _info(args: argparse.Namespace) -> int:
    from longctx.fsguard import check_dir_arg
    from longctx.models import archs, count_params
    from longctx.rundir import load_run
    from longctx.train.loop import params_sha256
    from longctx.train.warm_start import read_record

    workdir = check_dir_arg(args.workdir, "--workdir")
    if not workdir.is_dir():
        raise UserError(f"--workdir {workdir}: no such directory")
    run = load_run(workdir)
    print(json.dumps({
        "step": run.step,
        "config_name": run.cfg.name,
        "arch": run.cfg.model.arch,
        "span": archs.span(run.cfg.model),
        "description": archs.get(run.cfg.model).description,
        "num_params": count_params(run.params),
        "params_sha256": params_sha256(run.params),
        "init_from": read_record(workdir),  # null: trained from scratch
    }, sort_keys=True))
    return 0


def _sweep(args: argparse.Namespace) -> int:
    from longctx.fsguard import check_dir_arg
    from longctx.train.sweep import parse_grid, run_sweep

    results = run_sweep(args.config, check_dir_arg(args.root, "--root"), parse_grid(args.grid),
                        args.overrides, parallel=args.parallel, timeout=args.timeout)
    failed = [r for r in results if r.status == "failed"]
    for r in results:
        print(f"{r.status:8s} {r.workdir}")
    return 1 if failed else 0
