"""The whole pipeline on an accelerator, each step in its own process, with one summary table.

    bash experiments/gpu_check.sh                # installs what is missing, then runs this
    python experiments/gpu_check.py --tiny       # tiny sizes: the same steps in seconds (CPU)

Steps: the Transformer-XL compatibility check at full float32 matmul precision
(`JAX_DEFAULT_MATMUL_PRECISION=highest`, tolerance 1e-5), `bench_train`, a short
`longctx train` of XL at the GPU study's shapes (`dialogue_comparison.py --size gpu-quick`:
d_model 512, 8 layers, W = 512, bfloat16), `longctx evaluate` of that run, a scripted
`longctx chat` (standard input), and `bench_generate`. Train and evaluate run under
experiments/peak_memory.py, which reports the device memory each peaked at; evaluate must
not need more than training did. A step that fails, or outlives its time limit, is marked
so and the steps that need its output are skipped. Logs and JSON go to --out.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
PY = sys.executable
COMPAT_TOL = 1e-5
CHAT_SCRIPT = ("hi! my favourite colour is green.\n/model I live in Lisbon, by the river.\n"
               "/stats\n/save check\n/load check\nwhere do you live?\n/quit\n")


@dataclass
class Step:
    """One row of the summary."""

    name: str
    status: str = "skipped"  # ok, failed, timeout, skipped
    seconds: float = 0.0
    key: str = ""
    data: dict = field(default_factory=dict)


def gpu_quick_overrides() -> list[str]:
    """The GPU study's model and data overrides (`longctx.train.presets`)."""
    from longctx.train import presets

    return presets.COMPARISON["gpu-quick"].overrides()


def plan(tiny: bool, work: Path, data_dir: Path | None = None) -> dict[str, dict]:
    """Per step: the command, its time limit and extra environment."""
    run, data = work / "run", f"data.data_dir={data_dir or work / 'data'}"
    reference = REPO / "tests" / "fixtures" / "reference_postln.npz"
    if tiny:
        train = ["--config", str(REPO / "experiments" / "smoke.py"), data,
                 "train.num_steps=8", "checkpoint.every_steps=4", "eval.max_conversations=4",
                 "eval.context_lengths=8,16", "eval.speed_tokens=32", "eval.vanilla_stride=8"]
        bench_train = ["--smoke", "--arch", "xl", "--batch", "4"]
        generate = ["--smoke", "--archs", "xl,window", "--histories", "100", "--tokens", "50"]
        # seconds of CPU each; the limits only catch a hang on a heavily shared machine
        chat_tokens, limits = "8", dict.fromkeys(
            ("compat", "bench_train", "train", "evaluate", "chat", "bench_generate"), 300)
    else:  # a few hundred steps at the GPU study's shapes; ~5 minutes on one H200
        train = ["--config", str(REPO / "experiments" / "dialogue_comparison.py"), data,
                 *gpu_quick_overrides(), "model.arch=xl", "train.batch_size=32",
                 "train.train_tokens=0", "train.num_steps=300", "train.log_every=50",
                 "checkpoint.every_steps=150", "data.num_train=400", "data.num_validation=8",
                 "eval.max_conversations=8", "eval.speed_tokens=256"]
        bench_train = ["--size", "large", "--dtype", "bfloat16", "--batch", "8"]
        generate = ["--archs", "xl,window", "--histories", "1000,10000", "--tokens", "100"]
        chat_tokens, limits = "32", dict(compat=120, bench_train=240, train=240, evaluate=240,
                                         chat=120, bench_generate=240)
    peak = [PY, str(REPO / "experiments" / "peak_memory.py")]
    steps = {
        "compat": dict(cmd=[PY, "-m", "longctx.compat.original_xl", str(reference),
                            "--out", str(work / "compat.npz")],
                       env={"JAX_DEFAULT_MATMUL_PRECISION": "highest"}),
        "bench_train": dict(cmd=[PY, str(REPO / "experiments" / "bench_train.py"), *bench_train,
                                 "--json", str(work / "bench_train.json")]),
        "train": dict(cmd=[*peak, "--json", str(work / "train_peak.json"), "--", "train",
                           "--workdir", str(run), *train]),
        "evaluate": dict(cmd=[*peak, "--json", str(work / "evaluate_peak.json"), "--",
                              "evaluate", "--workdir", str(run)], needs="train"),
        "chat": dict(cmd=[PY, "-m", "longctx.cli", "chat", "--workdir", str(run),
                          "--max-new-tokens", chat_tokens, "--temperature", "0"],
                     stdin=CHAT_SCRIPT, needs="train"),
        "bench_generate": dict(cmd=[PY, str(REPO / "experiments" / "bench_generate.py"),
                                    *generate, "--out", str(work / "bench_generate.json")]),
    }
    for name, spec in steps.items():
        spec["limit"] = limits[name]
    return steps


def run_step(name: str, spec: dict, logs: Path) -> tuple[Step, str]:
    """Run one step's command with its time limit; its output goes to logs/NAME.log."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p), **spec.get("env", {})}
    start = time.perf_counter()
    print(f"[gpu_check] {name}: {' '.join(spec['cmd'][1:])}", flush=True)
    # its own process group, so a step past its limit is stopped with everything it started
    proc = subprocess.Popen(spec["cmd"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, cwd=REPO, env=env, text=True,
                            start_new_session=True)
    try:
        output, _ = proc.communicate(spec.get("stdin", ""), timeout=spec["limit"])
        status = "ok" if proc.returncode == 0 else f"failed ({proc.returncode})"
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        output, _ = proc.communicate()
        status = f"timeout ({spec['limit']}s)"
    step = Step(name, status, time.perf_counter() - start)
    (logs / f"{name}.log").write_text(output)
    if not status == "ok":
        tail = "\n    ".join(output.strip().splitlines()[-5:])
        print(f"[gpu_check] {name} {status}; last lines:\n    {tail}", flush=True)
    return step, output


def _json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return {}


def _mib(peak: int | None) -> str:
    return "n/a" if peak is None else f"{peak / 2**20:.0f} MiB"


def key_numbers(steps: dict[str, Step], outputs: dict[str, str], work: Path) -> None:
    """Fill each finished step's key number (and mark checks that ran but did not pass)."""
    if "compat" in outputs:
        m = re.search(r"= ([0-9.eE+-]+) \(worst: ([^)]+)\)", outputs["compat"])
        st = steps["compat"]
        if m:
            err = float(m.group(1))
            st.key, st.data = f"max rel. error {err:.1e} ({m.group(2)}), tol {COMPAT_TOL:g}", {
                "max_relative_error": err}
            if st.status == "ok" and not err <= COMPAT_TOL:
                st.status = "failed (tolerance)"
    rows = _json(work / "bench_train.json").get("rows", [])
    if rows:
        steps["bench_train"].key = "; ".join(
            f"{r['arch']} {r['tokens_per_s']:,.0f} tok/s ({r['of_matmul']:.0%} of matmul)"
            for r in rows)
    metrics = work / "run" / "metrics.jsonl"
    if steps["train"].status == "ok" and metrics.is_file():
        rows = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()]
        speed = statistics.median(r["tokens_per_sec"] for r in rows[1:] or rows)
        peak = _json(work / "train_peak.json").get("peak_bytes")
        steps["train"].key = (f"{speed:,.0f} tok/s, loss {rows[-1]['loss']:.3f} at step "
                              f"{rows[-1]['step']}, peak {_mib(peak)}")
        steps["train"].data = {"tokens_per_s": speed, "peak_bytes": peak}
    ev = _json(work / "run" / "eval.json")
    if steps["evaluate"].status == "ok" and ev:
        peak = _json(work / "evaluate_peak.json").get("peak_bytes")
        train_peak = steps["train"].data.get("peak_bytes")
        ratio = "" if peak is None or not train_peak else f" ({peak / train_peak:.2f}x train)"
        steps["evaluate"].key = (f"ppl {ev['perplexity']['overall']['ppl']:.2f}, "
                                 f"{ev['seconds']:.0f}s, peak {_mib(peak)}{ratio}")
        steps["evaluate"].data = {"peak_bytes": peak}
        if peak is not None and train_peak and peak > train_peak:
            steps["evaluate"].status = "failed (memory > train)"
    if "chat" in outputs:
        replies = outputs["chat"].count("model> ")
        steps["chat"].key = f"{replies} replies, saved and loaded"
        if steps["chat"].status == "ok" and replies < 2:
            steps["chat"].status = "failed (no reply)"
    gen = _json(work / "bench_generate.json")
    if isinstance(gen, list) and gen:
        last = max(r["history"] for r in gen)
        ms = {r["arch"]: r["ms_per_token_median"] for r in gen if r["history"] == last}
        steps["bench_generate"].key = ", ".join(f"{a} {v:.2f} ms/token" for a, v in ms.items()) \
            + f" at {last:,} tokens of history"
        if {"xl", "window"} <= set(ms):
            steps["bench_generate"].key += f" (xl/window {ms['xl'] / ms['window']:.2f}x)"


def summary(steps: dict[str, Step], device: str, total: float) -> str:
    lines = [f"gpu_check on {device}: {total:.0f}s in all", "",
             "| step | status | seconds | key number |", "|---|---|---|---|"]
    for st in steps.values():
        lines.append(f"| {st.name} | {st.status} | {st.seconds:.0f} | {st.key or '-'} |")
    return "\n".join(lines)


def device_name() -> str:
    """The accelerator in words (asked in a child process: this one stays free of jax)."""
    code = "import jax; d = jax.devices(); print(f'{len(d)} x {d[0].device_kind}')"
    try:
        out = subprocess.run([PY, "-c", code], capture_output=True, text=True, timeout=120)
        return out.stdout.strip() or "unknown device"
    except subprocess.TimeoutExpired:
        return "unknown device"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tiny", action="store_true", help="tiny sizes (CPU, seconds)")
    parser.add_argument("--out", default=None,
                        help="summary, logs and JSON (default $OUT/gpu_check or runs/gpu_check)")
    parser.add_argument("--work", default=None, help="run and data directory (default "
                        "runs/gpu_check_work; not under --out: checkpoints are large)")
    parser.add_argument("--data-dir", default=None, help="datasets (default WORK/data)")
    parser.add_argument("--only", default=None, help="comma list of steps to run")
    args = parser.parse_args(argv)
    out = Path(args.out or (Path(os.environ["OUT"]) / "gpu_check" if os.environ.get("OUT")
                            else REPO / "runs" / "gpu_check"))
    work = Path(args.work or REPO / "runs" / "gpu_check_work")
    logs = out / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    work.mkdir(parents=True, exist_ok=True)
    import shutil

    shutil.rmtree(work / "run", ignore_errors=True)  # a fresh short run every time
    specs = plan(args.tiny, work, Path(args.data_dir) if args.data_dir else None)
    only = set(args.only.split(",")) if args.only else set(specs)
    unknown = only - set(specs)
    if unknown:
        parser.error(f"--only: unknown steps {sorted(unknown)}; choose from {', '.join(specs)}")
    start = time.perf_counter()
    device = device_name()
    steps = {name: Step(name) for name in specs if name in only}
    outputs: dict[str, str] = {}
    for name in steps:
        need = specs[name].get("needs")
        if need and (need not in steps or steps[need].status != "ok"):
            steps[name].key = f"needs {need}"
            continue
        steps[name], outputs[name] = run_step(name, specs[name], logs)
    for name in ("compat", "bench_train", "train", "evaluate", "chat", "bench_generate"):
        steps.setdefault(name, Step(name, key="not selected"))
    steps = {k: steps[k] for k in specs}
    key_numbers(steps, outputs, work)
    table = summary(steps, device, time.perf_counter() - start)
    (out / "summary.md").write_text(table + "\n")
    (out / "summary.json").write_text(json.dumps(
        {"device": device, "steps": [vars(s) for s in steps.values()]}, indent=1) + "\n")
    for name in ("bench_train.json", "bench_generate.json", "train_peak.json",
                 "evaluate_peak.json"):
        if (work / name).is_file():
            shutil.copy(work / name, out / name)
    for name in ("metrics.jsonl", "eval.json", "summary.json", "config.json"):
        if (work / "run" / name).is_file():
            shutil.copy(work / "run" / name, out / f"run_{name}")
    print(table)
    print(f"wrote {out / 'summary.md'} (logs in {logs})")
    return 0 if all(s.status in ("ok", "skipped") for s in steps.values()
                    if s.key != "not selected") else 1


if __name__ == "__main__":
    sys.exit(main())
