"""Run one `longctx` command in this process, then report the device memory it peaked at.

    python experiments/peak_memory.py --json peak.json -- train --config ... --workdir runs/x
    python experiments/peak_memory.py -- evaluate --workdir runs/x

The peak is the largest `peak_bytes_in_use` of `jax.local_devices()[i].memory_stats()` (what
XLA's allocator held at most, however much it had reserved); the CPU backend reports no
memory statistics, so there it is null ("n/a"). Exits with the command's status.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

if __package__ in (None, ""):  # run from a checkout without installing
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def peak_bytes() -> int | None:
    """The largest peak of in-use device memory over the local devices (None: not reported)."""
    import jax

    peaks = []
    for device in jax.local_devices():
        stats = device.memory_stats() or {}
        if "peak_bytes_in_use" in stats:
            peaks.append(int(stats["peak_bytes_in_use"]))
    return max(peaks) if peaks else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", default=None, help="also write {command, status, peak_bytes}")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- then longctx arguments")
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("give a longctx command after --, e.g. -- evaluate --workdir runs/x")
    from longctx.cli import main as longctx_main

    try:
        status = longctx_main(command)
    except SystemExit as exc:  # argparse errors and the like
        status = exc.code if isinstance(exc.code, int) else 1
    peak = peak_bytes()
    import jax

    kind = jax.local_devices()[0].device_kind
    text = "n/a (backend reports none)" if peak is None else f"{peak / 2**20:.0f} MiB"
    print(f"peak device memory of 'longctx {command[0]}': {text} on {kind}", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps({"command": command, "status": status,
                                               "device": kind, "peak_bytes": peak}) + "\n")
    return status


if __name__ == "__main__":
    sys.exit(main())
