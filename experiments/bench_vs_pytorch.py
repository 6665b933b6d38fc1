"""Training-step speed: our Transformer-XL against the original PyTorch implementation.

    python experiments/bench_vs_pytorch.py --reference ~/src/transformer-xl
    python experiments/bench_vs_pytorch.py --reference DIR --sizes small --cpus 1 --rounds 8

`--reference` is a checkout of github.com/kimiyoung/transformer-xl; its
`pytorch/mem_transformer.py` (`MemTransformerLM`) is imported from there, never copied.
torch is not a dependency of longctx: the torch side runs in its own interpreter,
`--torch-python`, by default `.bench_torch/bin/python` in the repository root, created on
first use (`python -m venv .bench_torch` and `pip install torch numpy` from the CPU wheel
index).

Both sides train the same model (bench_train.py's sizes: span W = 256, i.e. tgt_len =
mem_len = 256, batch 8 lanes, vocabulary 8192, float32, post-LN, tied embeddings and output
layer, full softmax, dropout `--dropout`): one step is forward over a segment with a full
memory, backward, global-norm clipping and AdamW. Ours is `longctx.train.step` under pmap
exactly as bench_train.py times it; theirs is `MemTransformerLM` with
`torch.nn.utils.clip_grad_norm_` and `torch.optim.AdamW`, memories carried across steps as
its train.py does.

Each side runs in a worker process that compiles / builds once and warms up, then times
`--steps` steps whenever asked; the two are asked in turn, `--rounds` times (the order
alternates), so a shared machine's load falls on both alike. The table gives each side's
median tokens/s over all timed steps and the median of the per-round ratios.
Both workers are pinned to `--cpus` (default: every CPU this process may use) with one
thread per CPU (torch.set_num_threads; XLA sizes its pool from the affinity).

Two shims let the 2019 code run on torch 2.x, both outside its files: its
`proj_adaptive_softmax` parses `torch.version.cuda` at import (None on a CPU build), and
torch 2 refuses the uint8 attention masks it builds (`masked_fill` gets them as bool).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
VENV = REPO / ".bench_torch"
TORCH_INDEX = "https://download.pytorch.org/whl/cpu"
SPAN, BATCH, VOCAB = 256, 8, 8192  # as bench_train.py
SIZES = {  # as bench_train.py (checked by the ours worker)
    "small": dict(n_layer=4, n_head=4, d_model=256, d_head=64, d_inner=1024),
    "medium": dict(n_layer=6, n_head=6, d_model=384, d_head=64, d_inner=1536),
    "large": dict(n_layer=8, n_head=8, d_model=512, d_head=64, d_inner=2048),
    "smoke": dict(n_layer=1, n_head=2, d_model=32, d_head=16, d_inner=64),
}
LR, B1, B2, EPS, WD, CLIP = 3e-3, 0.9, 0.98, 1e-8, 0.01, 1.0  # longctx's OptimConfig defaults


# ----------------------------------------------------------------------------- workers


def _serve(step, info: dict) -> None:
    """Worker loop: announce `info`, then answer 'run N' with N steps' [wall, CPU] seconds
    (CPU: this process's, all threads)."""
    import time

    print(json.dumps({"ready": info}), flush=True)
    for line in sys.stdin:
        cmd = line.split()
        if not cmd or cmd[0] == "quit":
            return
        times = []
        for _ in range(int(cmd[1])):
            w, c = time.perf_counter(), time.process_time()
            step()
            times.append([time.perf_counter() - w, time.process_time() - c])
        print(json.dumps({"times": times}), flush=True)


def _ours_worker(spec: dict) -> None:
    sys.path.insert(0, str(REPO))
    sys.path.insert(0, str(REPO / "experiments"))
    import jax
    from bench_train import SIZES as BENCH_SIZES
    from bench_train import Prepared

    from longctx.config import ModelConfig

    if BENCH_SIZES[spec["size"]] != SIZES[spec["size"]]:
        raise SystemExit(f"bench_vs_pytorch: size {spec['size']!r} differs from bench_train.py's")
    span = spec["span"]
    cfg = ModelConfig(arch="xl", n_token=spec["vocab"], dropout=spec["dropout"], dropatt=0.0, dtype="float32",
                      **SIZES[spec["size"]]).replace(xl=dict(tgt_len=span, mem_len=span))
    prep = Prepared(cfg, spec["batch"])
    _serve(lambda: prep.run(1), {"impl": f"longctx (jax {jax.__version__})", "params": prep.n_params,
                      "compile_s": round(prep.compile_s, 2)})


def _torch_worker(spec: dict) -> None:
    import torch

    torch.set_num_threads(len(os.sched_getaffinity(0)))
    if torch.version.cuda is None:  # the original parses it at import
        torch.version.cuda = "0.0"
    masked_fill = torch.Tensor.masked_fill

    def bool_masked_fill(x, mask, value):  # torch 2 wants bool masks; the original has uint8
        return masked_fill(x, mask.bool() if mask.dtype == torch.uint8 else mask, value)

    torch.Tensor.masked_fill = bool_masked_fill
    code = Path(spec["reference"]) / "pytorch"
    sys.path[:0] = [str(code), str(code / "utils")]
    from mem_transformer import MemTransformerLM

    torch.manual_seed(0)
    s, span, dim = SIZES[spec["size"]], spec["span"], SIZES[spec["size"]]["d_model"]
    model = MemTransformerLM(spec["vocab"], s["n_layer"], s["n_head"], dim, s["d_head"],
                             s["d_inner"], spec["dropout"], 0.0, tie_weight=True, d_embed=dim,
                             div_val=1, tie_projs=[False], pre_lnorm=False, tgt_len=span,
                             ext_len=0, mem_len=span, cutoffs=[], same_length=False,
                             attn_type=0, clamp_len=-1)
    for name, p in model.named_parameters():  # some are torch.Tensor(...): uninitialised
        if name.endswith("bias") and "r_" not in name:
            torch.nn.init.zeros_(p)
        elif "layer_norm.weight" in name:
            torch.nn.init.ones_(p)
        else:
            torch.nn.init.normal_(p, 0.0, 0.02)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=LR, betas=(B1, B2), eps=EPS, weight_decay=WD)
    tokens = torch.randint(0, spec["vocab"], (span + 1, spec["batch"]))
    state = {"mems": ()}

    def step() -> None:
        out = model(tokens[:-1], tokens[1:], *state["mems"])
        loss = out[0].float().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), CLIP)
        opt.step()
        state["mems"] = tuple(out[1:])
        if not torch.isfinite(loss):
            raise SystemExit("bench_vs_pytorch: non-finite loss on the torch side")

    step()  # warm-up; the memory is full from the second step on
    step()
    _serve(step, {"impl": f"original PyTorch (torch {torch.__version__})",
                 "params": sum(p.numel() for p in model.parameters())})


# ----------------------------------------------------------------------------- driver


class Worker:
    """One side in its own process (pinned to `cpus`), driven over stdin/stdout."""

    def __init__(self, python: str, side: str, spec: dict, cpus: list[int], timeout: float,
                 env: dict | None = None):
        self.side, self.timeout = side, timeout
        env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS=str(len(cpus)), **(env or {}))
        self.proc = subprocess.Popen(
            [python, str(Path(__file__).resolve()), "--worker", side, "--spec", json.dumps(spec)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env,
            preexec_fn=lambda: os.sched_setaffinity(0, cpus))
        self.info = self._read()["ready"]

    def _read(self) -> dict:
        line = self.proc.stdout.readline()
        if not line:
            code = self.proc.wait(timeout=self.timeout)
            raise SystemExit(f"bench_vs_pytorch: the {self.side} worker exited ({code}); "
                             "its error is above")
        return json.loads(line)

    def run(self, steps: int) -> list[float]:
        self.proc.stdin.write(f"run {steps}\n")
        self.proc.stdin.flush()
        return self._read()["times"]

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.write("quit\n")
            self.proc.stdin.flush()
            self.proc.wait(timeout=self.timeout)


def torch_python(given: str | None) -> str:
    """The interpreter with torch: `given`, else .bench_torch/ (created on first use)."""
    if given:
        if not Path(given).exists():
            raise SystemExit(f"bench_vs_pytorch: --torch-python {given}: no such file")
        return given
    python = VENV / "bin" / "python"
    if not python.exists():
        print(f"creating {VENV} with torch (CPU build), once", file=sys.stderr, flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", "torch", "numpy",
                        "--index-url", TORCH_INDEX], check=True)
    return str(python)


def machine(cpus: list[int]) -> str:
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    return (f"{model}; {os.cpu_count()} CPUs, both sides pinned to CPU(s) {cpus} with "
            f"{len(cpus)} thread(s); load average at start {load}")


def compare(size: str, args, python: str, cpus: list[int]) -> dict:
    """Interleaved rounds of one size -> a table row."""
    smoke = size == "smoke"
    spec = dict(size=size, span=16 if smoke else SPAN, batch=args.batch,
                vocab=64 if smoke else VOCAB, dropout=args.dropout,
                reference=str(args.reference))
    sides = {"ours": Worker(sys.executable, "ours", spec, cpus, args.timeout),
             "torch": Worker(python, "torch", spec, cpus, args.timeout)}
    try:
        times = {k: [] for k in sides}  # [wall, cpu] per step
        ratios = {"wall": [], "cpu": []}
        for r in range(args.rounds):
            order = ("ours", "torch") if r % 2 == 0 else ("torch", "ours")
            got = {k: sides[k].run(args.steps) for k in order}
            for k in sides:
                times[k] += got[k]
            for i, kind in enumerate(ratios):
                ratios[kind].append(statistics.median(t[i] for t in got["torch"])
                                    / statistics.median(t[i] for t in got["ours"]))
            print(f"  {size} round {r + 1}/{args.rounds}: ours/original "
                  f"{ratios['wall'][-1]:.2f} (wall), {ratios['cpu'][-1]:.2f} (CPU time)",
                  file=sys.stderr, flush=True)
    finally:
        for w in sides.values():
            w.close()
    tokens = spec["batch"] * spec["span"]
    row = {"size": size, **SIZES[size], "tokens_per_step": tokens,
           "ours_impl": sides["ours"].info["impl"], "torch_impl": sides["torch"].info["impl"],
           "params": [sides["ours"].info["params"], sides["torch"].info["params"]]}
    for i, kind in enumerate(ratios):
        for k in sides:
            rate = [tokens / t[i] for t in times[k]]
            row[f"{k}_{kind}"] = [statistics.median(rate), min(rate), max(rate)]
        rs = ratios[kind]
        row[f"ratio_{kind}"] = [statistics.median(rs), min(rs), max(rs)]
    return row


def render(rows: list[dict], where: str, args) -> str:
    span, vocab = (16, 64) if rows[0]["size"] == "smoke" else (SPAN, VOCAB)
    lines = [f"machine: {where}",
             f"{rows[0]['ours_impl']} vs {rows[0]['torch_impl']}; float32, W = tgt_len = "
             f"mem_len = {span}, batch {args.batch}, vocabulary {vocab}, dropout {args.dropout}; "
             f"{args.rounds} interleaved rounds of {args.steps} steps. tokens/s: median (min-max) "
             "over the timed steps; ratio: median (min-max) over rounds of the medians. "
             "'per CPU-s' divides by the process's CPU time instead of the wall clock "
             "(robust to other jobs on the same CPUs when pinned to one CPU with one thread)",
             "",
             "| size | layers | d_model | params | clock | ours tokens/s | original tokens/s |"
             " ours / original |",
             "|---|---|---|---|---|---|---|---|"]

    def cell(x):
        return f"{x[0]:.0f} ({x[1]:.0f}-{x[2]:.0f})"

    for r in rows:
        for kind, label in (("wall", "wall"), ("cpu", "per CPU-s")):
            lines.append(
                f"| {r['size']} | {r['n_layer']} | {r['d_model']} | {r['params'][0] / 1e6:.2f}M | "
                f"{label} | {cell(r[f'ours_{kind}'])} | {cell(r[f'torch_{kind}'])} | "
                f"{r[f'ratio_{kind}'][0]:.2f}x ({r[f'ratio_{kind}'][1]:.2f}-"
                f"{r[f'ratio_{kind}'][2]:.2f}) |")
    if rows[0]["params"][0] != rows[0]["params"][1]:
        lines.append(f"(parameter counts differ: ours {rows[0]['params'][0]}, original "
                     f"{rows[0]['params'][1]})")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--reference", type=Path,
                   help="checkout of github.com/kimiyoung/transformer-xl (has pytorch/)")
    p.add_argument("--sizes", default="small,large", help=f"comma list of {', '.join(SIZES)}")
    p.add_argument("--rounds", type=int, default=6, help="interleaved rounds per size")
    p.add_argument("--steps", type=int, default=2, help="timed steps per side per round")
    p.add_argument("--batch", type=int, default=BATCH, help="lanes (sequences) per step")
    p.add_argument("--dropout", type=float, default=0.0, help="dropout rate of both models")
    p.add_argument("--cpus", default=None,
                   help="comma list of CPUs both sides are pinned to (default: all allowed)")
    p.add_argument("--torch-python", default=None,
                   help="python with torch installed (default: .bench_torch/, created once)")
    p.add_argument("--json", default=None, help="also write the rows here")
    p.add_argument("--timeout", type=float, default=600.0, help="seconds a worker may take to stop")
    p.add_argument("--worker", choices=("ours", "torch"), help=argparse.SUPPRESS)
    p.add_argument("--spec", help=argparse.SUPPRESS)
    args = p.parse_args(argv)

    if args.worker:
        (_ours_worker if args.worker == "ours" else _torch_worker)(json.loads(args.spec))
        return 0
    if args.reference is None:
        p.error("--reference DIR is required (a checkout of kimiyoung/transformer-xl)")
    if not (args.reference / "pytorch" / "mem_transformer.py").exists():
        p.error(f"--reference {args.reference}: no pytorch/mem_transformer.py there; pass the "
                "root of a kimiyoung/transformer-xl checkout")
    sizes = args.sizes.split(",")
    unknown = [s for s in sizes if s not in SIZES]
    if unknown:
        p.error(f"--sizes: unknown {unknown}; choose from {', '.join(SIZES)}")
    if args.rounds < 1 or args.steps < 1 or args.batch < 1:
        p.error("--rounds, --steps and --batch must be >= 1")
    allowed = sorted(os.sched_getaffinity(0))
    try:
        cpus = allowed if args.cpus is None else [int(c) for c in args.cpus.split(",")]
    except ValueError:
        p.error(f"--cpus: expected a comma list of CPU numbers, got {args.cpus!r}")
    if not set(cpus) <= set(allowed):
        p.error(f"--cpus: {cpus} not all among the CPUs this process may use ({allowed})")
    reference = args.reference.resolve()
    args.reference = reference
    python = torch_python(args.torch_python)
    where = machine(cpus)
    rows = [compare(size, args, python, cpus) for size in sizes]
    print(render(rows, where, args))
    if args.json:
        Path(args.json).write_text(json.dumps({"machine": where, "rows": rows}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
