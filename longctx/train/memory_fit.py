"""Will a training run fit in memory? A rough estimate, checked before anything is allocated.

A config that cannot fit (e.g. `model.xl.mem_len=10**9`) would otherwise die in an
out-of-memory error after start-up; `check_fits` refuses it first with one line that names
the key to lower. The estimate counts float32 bytes of what the training step holds:

- state: parameters, AdamW's two moments, the gradients and the update (one more
  accumulator with grad_accum > 1), per device;
- the architecture's state (`Arch.state_floats`; XL: its memory [n_layer+1, mem_len,
  d_model]), read, written and concatenated with the segment (three copies), per lane;
- activations kept for the backward pass: per layer the attention scores and
  probabilities [n_head, T, K] and the hidden states, plus the logits [T, vocab] (three
  copies: logits, log-softmax, gradient), per lane; with remat one layer's worth (T
  queries, K keys per query: the architecture's `call_shape`);
- host copies: the state and the global architecture state as numpy (restore templates,
  saves).

It is deliberately rough (about right within 2x); it exists to refuse what is far out of
reach, not to pack memory tightly.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from longctx.config import Config, ConfigError, ModelConfig, apply_override, lookup
from longctx.models import archs

F32 = 4
GIB = 1024**3


def num_params(m: ModelConfig, vocab: int) -> int:
    """Parameter count of the decoder (`longctx.models.Decoder`) for `vocab` tokens."""
    hd = m.n_head * m.d_head
    layer = (m.d_model * 3 * hd + m.d_model * hd + hd * m.d_model  # qkv_net, r_net, o_net
             + 2 * m.d_model + 2 * m.d_model  # two LayerNorms
             + m.d_model * m.d_inner + m.d_inner + m.d_inner * m.d_model + m.d_model)  # FF
    biases = 2 * hd * (m.n_layer if m.untie_r else 1)  # r_w_bias, r_r_bias
    own = archs.get(m).extra_params(m)  # what the mechanism adds
    return vocab * m.d_model + vocab + m.n_layer * layer + biases + own


@dataclass(frozen=True)
class Estimate:
    """Bytes of one device's share and of the host's own copies."""

    state: int  # per device
    memory: int  # per device: the architecture's state of its lanes
    activations: int  # per device
    host: int  # numpy copies held by the training loop

    @property
    def device(self) -> int:
        return self.state + self.memory + self.activations


def estimate(cfg: Config, num_local: int = 1, num_processes: int = 1) -> Estimate:
    """The rough memory a training run of `cfg` needs (see the module docstring)."""
    m = cfg.model
    vocab = m.n_token if m.n_token > 0 else cfg.data.vocab_size
    params = num_params(m, vocab) * F32
    state = params * (5 + (cfg.optim.grad_accum > 1))
    lanes = max(1, cfg.train.batch_size // max(1, num_processes * num_local))
    arch = archs.get(m)
    mem_lane = arch.state_floats(m) * F32
    shape = arch.call_shape(m)
    t, k = shape.queries, shape.keys
    hd = m.n_head * m.d_head
    per_layer = (2 * m.n_head * t * k + t * (8 * m.d_model + 4 * hd + 2 * m.d_inner)
                 + k * (3 * hd + m.d_model)) * F32
    kept = per_layer * (1 if m.remat else m.n_layer) + m.n_layer * t * m.d_model * F32
    act_lane = kept + per_layer + 3 * t * vocab * F32
    host = 6 * params + 2 * cfg.train.batch_size * mem_lane
    return Estimate(state=state, memory=3 * lanes * mem_lane, activations=lanes * act_lane,
                    host=host)


def host_available() -> int | None:
    """Bytes this process may still allocate: MemAvailable, capped by a cgroup limit."""
    found = []
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                found.append(int(line.split()[1]) * 1024)
    except (OSError, ValueError, IndexError):
        found.clear()  # no readable /proc/meminfo: only a cgroup limit can bound us
    for limit, used in (("memory.max", "memory.current"),
                        ("memory/memory.limit_in_bytes", "memory/memory.usage_in_bytes")):
        try:
            root = Path("/sys/fs/cgroup")
            cap = (root / limit).read_text().strip()
            if cap.isdigit() and int(cap) < 2**60:
                found.append(int(cap) - int((root / used).read_text().strip()))
        except (OSError, ValueError):
            continue
    return min(found) if found else None


def device_available(device) -> int | None:
    """Free bytes on an accelerator (None for the CPU, whose memory is the host's)."""
    if device.platform == "cpu":
        return None
    try:
        stats = device.memory_stats() or {}
    except Exception:  # not every backend reports memory statistics
        return None
    if "bytes_limit" not in stats:
        return None
    return int(stats["bytes_limit"]) - int(stats.get("bytes_in_use", 0))


def _size(n: float) -> str:
    """Bytes in MiB, GiB or TiB."""
    for unit, scale in (("TiB", 1024 * GIB), ("GiB", GIB)):
        if n >= scale:
            return f"{n / scale:,.1f} {unit}"
    return f"{n / 2**20:,.1f} MiB"


# The keys that size a run; the one whose default value would shrink it most is named.
SIZE_KEYS = ("model.xl.mem_len", "model.xl.tgt_len", "model.window.seq_len",
             "model.window.window", "model.vanilla.ctx_len", "train.batch_size", "model.d_model",
             "model.d_inner", "model.n_layer", "model.n_head", "model.d_head", "model.n_token",
             "data.vocab_size", "model.rmt.seg_len", "model.rmt.n_mem_tokens")


def _culprit(cfg: Config, need: Callable[[Config], int]) -> str:
    """The key of SIZE_KEYS whose default value would reduce `need(cfg)` the most."""
    def with_default(key: str) -> Config:
        return apply_override(dataclasses.replace(cfg), key, lookup(Config(), key))

    return max(SIZE_KEYS, key=lambda k: need(cfg) - need(with_default(k)))


def _refuse(cfg: Config, need: Callable[[Config], int], have: int, where: str,
            est: Estimate) -> None:
    key = _culprit(cfg, need)
    default = lookup(Config(), key)
    also = "" if key == "train.batch_size" else " or train.batch_size"
    if est.activations > est.state and not cfg.model.remat:
        also += ", or set model.remat=true"
    raise ConfigError(
        f"config key '{key}': the run needs about {_size(need(cfg))} of {where} memory (state "
        f"{_size(est.state)}, architecture state {_size(est.memory)}, activations "
        f"{_size(est.activations)} per device) but {_size(have)} is free; lower {key} "
        f"(default {default}){also}", key)


def check_fits(cfg: Config, devices: list, num_processes: int = 1) -> Estimate:
    """Raise ConfigError (naming the key to lower) when the run cannot fit in the free host
    or device memory; return the estimate otherwise."""
    n = len(devices)
    est = estimate(cfg, n, num_processes)
    free_device = device_available(devices[0]) if devices else None
    free_host = host_available()
    checks: list[tuple[Callable[[Config], int], int | None, str]] = []
    if free_device is None:  # CPU devices share the host's memory
        checks.append((lambda c: n * estimate(c, n, num_processes).device
                       + estimate(c, n, num_processes).host, free_host, "host"))
    else:
        checks.append((lambda c: estimate(c, n, num_processes).device, free_device,
                       f"{devices[0].platform.upper()} device"))
        checks.append((lambda c: estimate(c, n, num_processes).host, free_host, "host"))
    for need, have, where in checks:
        if have is not None and need(cfg) > have:
            _refuse(cfg, need, have, where, est)
    return est
