"""Devices and hosts: multi-host start-up, lane ownership, and moving state between the
per-device layout `pmap` wants and the global layout checkpoints hold.

Design: the step runs under `jax.pmap` over the local devices (the pmap axis spans every
device of every process). `pmap` state is per process, and orbax only saves global
`jax.Array`s, so at a checkpoint we convert: parameters and optimiser state become
replicated global arrays, the memory a global array sharded over lanes. Restoring does
the reverse. This keeps the hot loop in plain `pmap` and confines the
global-array view to the save/restore path.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from longctx.data.lanes import lanes_for_process
from longctx.errors import UserError
from longctx.models.state import Rows
from longctx.train.step import AXIS


@dataclass(frozen=True)
class Topology:
    """Where this process sits: its devices and the global lanes it feeds."""

    process_index: int
    process_count: int
    local_devices: tuple
    global_batch: int

    @property
    def num_local(self) -> int:
        return len(self.local_devices)

    @property
    def process_lanes(self) -> np.ndarray:
        """Global lane indices this process reads (a contiguous block)."""
        return np.asarray(lanes_for_process(self.global_batch, self.process_index,
                                            self.process_count), np.int32)

    @property
    def is_primary(self) -> bool:
        return self.process_index == 0


def _env_int(name: str) -> int | None:
    """An integer environment variable, None when unset; UserError when not an integer."""
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return None
    try:
        return int(raw.strip())
    except ValueError:
        raise UserError(f"environment variable {name}={raw!r}: expected an integer, "
                        f"e.g. {name}=2") from None


def process_layout(coordinator: str | None, num_processes: int | None,
                   process_id: int | None) -> tuple[str, int, int] | None:
    """The checked (coordinator, num_processes, process_id) of a multi-host run, from the
    flags or LONGCTX_COORDINATOR / _NUM_PROCESSES / _PROCESS_ID; None for a single process.
    Raises UserError (one line naming the flag) for an impossible combination."""
    coordinator = coordinator or os.environ.get("LONGCTX_COORDINATOR") or None
    flag_n = "--num-processes" if num_processes is not None else "LONGCTX_NUM_PROCESSES"
    flag_id = "--process-id" if process_id is not None else "LONGCTX_PROCESS_ID"
    num_processes = num_processes if num_processes is not None else _env_int("LONGCTX_NUM_PROCESSES")
    process_id = process_id if process_id is not None else _env_int("LONGCTX_PROCESS_ID")
    n = 1 if num_processes is None else num_processes
    pid = 0 if process_id is None else process_id
    if n < 1:
        raise UserError(f"{flag_n} {n}: must be >= 1")
    if not 0 <= pid < n:
        raise UserError(f"{flag_id} {pid}: must be in 0..{n - 1} for {n} process(es)")
    if not coordinator:
        if n > 1:
            raise UserError(f"{flag_n} {n} without a coordinator: pass --coordinator HOST:PORT "
                            "(or LONGCTX_COORDINATOR) for a multi-host run")
        return None
    host, _, port = coordinator.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise UserError(f"--coordinator {coordinator!r}: expected HOST:PORT, e.g. 10.0.0.1:1234")
    num_processes, process_id = n, pid
    return coordinator, num_processes, process_id


PEER_TIMEOUT_S = 30  # the default heartbeat/shutdown timeout of a multi-host run


def peer_timeout(flag: int | None) -> int:
    """Seconds after which a silent peer fails the run: --peer-timeout, LONGCTX_PEER_TIMEOUT
    or PEER_TIMEOUT_S."""
    name = "--peer-timeout" if flag is not None else "LONGCTX_PEER_TIMEOUT"
    value = flag if flag is not None else _env_int("LONGCTX_PEER_TIMEOUT")
    if value is None:
        return PEER_TIMEOUT_S
    if value < 1:
        raise UserError(f"{name} {value}: must be >= 1 second, e.g. {name.lstrip('-')}=30")
    return value


def init_distributed(coordinator: str | None, num_processes: int | None, process_id: int | None,
                     timeout_s: int | None = None) -> None:
    """Join a multi-host run (flags or LONGCTX_COORDINATOR / _NUM_PROCESSES / _PROCESS_ID).

    Heartbeat and shutdown timeouts are short (`peer_timeout`, 30 s by default) so that a
    dead peer makes the others fail within about that time instead of hanging.
    """
    layout = process_layout(coordinator, num_processes, process_id)
    timeout_s = peer_timeout(timeout_s)
    if layout is None:
        return
    coordinator, num_processes, process_id = layout
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    try:
        jax.distributed.initialize(
            coordinator_address=coordinator,
            num_processes=num_processes,
            process_id=process_id,
            initialization_timeout=timeout_s * 2,
            heartbeat_timeout_seconds=timeout_s,
            shutdown_timeout_seconds=timeout_s,
        )
    except Exception as exc:  # the runtime's errors are long; one line says what failed
        detail = " ".join(str(exc).split())[:300]
        raise UserError(f"--coordinator {coordinator}: could not join as process {process_id} "
                        f"of {num_processes} ({type(exc).__name__}: {detail}); check that every "
                        "process uses the same coordinator and --num-processes") from None


def topology(global_batch: int) -> Topology:
    return Topology(jax.process_index(), jax.process_count(), tuple(jax.local_devices()),
                    global_batch)


def global_mesh() -> Mesh:
    return Mesh(np.array(jax.devices()), ("data",))


# ----------------------------------------------------------------------------- per-device layout


def replicate(tree: Any, topo: Topology) -> Any:
    """Host pytree -> one copy per local device (leading axis = local device)."""
    def put(x):
        x = np.asarray(x)
        return np.broadcast_to(x, (topo.num_local,) + x.shape)

    return jax.tree.map(put, tree)


def to_devices(tree: Any) -> Any:
    """Per-device host stacks [num_local, ...] -> device arrays laid out exactly as a pmapped
    function returns them (an identity pmap), so feeding them back never recompiles. A
    pytree without leaves (a mechanism that carries no state) is returned as it is."""
    if not jax.tree.leaves(tree):
        return tree
    return _identity(tree)


_identity = jax.pmap(lambda tree: tree, axis_name=AXIS)  # outputs on the step's mesh axis


def unreplicate(tree: Any) -> Any:
    """Per-device copies -> one host copy (numpy): each leaf's first local shard, fetched
    together. (Indexing `x[0]` ran a device program per leaf: ~85 ms of every save of a
    smoke run's state on CPU.)"""
    first = jax.tree.map(lambda x: x.addressable_data(0) if isinstance(x, jax.Array) else x,
                         tree)
    return jax.tree.map(lambda x: np.asarray(x)[0, ...], jax.device_get(first))


def shard_rows(tree: Any, axes: Any, num_local: int) -> Any:
    """Split each leaf's lane axis into [num_local, ...] per-device pieces (numpy in, numpy out)."""

    def split(x, a):
        x = np.asarray(x)
        parts = np.split(x, num_local, axis=a)
        return np.stack(parts, axis=0)

    return jax.tree.map(split, tree, axes)


def unshard_rows(tree: Any, axes: Any) -> Any:
    """Inverse of `shard_rows`: per-device pieces back to this process's lanes (numpy)."""

    def join(x, a):
        x = np.asarray(x)
        return np.concatenate(list(x), axis=a)

    return jax.tree.map(join, tree, axes)


def shard_batch(batch: dict, num_local: int) -> dict:
    """A process's batch (lanes first) -> [num_local, lanes/num_local, ...]."""
    return {k: np.asarray(v).reshape((num_local, -1) + np.shape(v)[1:]) for k, v in batch.items()}


def memory_to_devices(memory: Rows, topo: Topology) -> Rows:
    """This process's memory -> [num_local, ...] pieces along its batch axes."""
    return shard_rows(memory, memory.batch_axes(), topo.num_local)


def memory_from_devices(memory: Rows) -> Rows:
    """Inverse of `memory_to_devices` (numpy)."""
    return unshard_rows(memory, memory.batch_axes())


# ----------------------------------------------------------------------------- global layout


def to_global_replicated(tree: Any) -> Any:
    """Host copies (identical on every process) -> replicated global arrays."""
    sharding = NamedSharding(global_mesh(), P())
    return jax.tree.map(lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)),
                        tree)


def to_global_lanes(tree: Rows, topo: Topology) -> Rows:
    """This process's lanes -> global arrays sharded over the lane axis."""
    axes = tree.batch_axes()

    def make(x, a):
        spec = [None] * np.ndim(x)
        spec[a] = "data"
        shape = list(np.shape(x))
        shape[a] = shape[a] * topo.process_count
        return jax.make_array_from_process_local_data(
            NamedSharding(global_mesh(), P(*spec)), np.asarray(x), tuple(shape))

    return jax.tree.map(make, tree, axes)


def abstract_global_lanes(tree: Rows) -> Rows:
    """Restore targets for a lane-sharded global pytree (shapes from a global host template)."""
    axes = tree.batch_axes()

    def spec(x, a):
        parts = [None] * np.ndim(x)
        parts[a] = "data"
        return jax.ShapeDtypeStruct(np.shape(x), np.asarray(x).dtype,
                                    sharding=NamedSharding(global_mesh(), P(*parts)))

    return jax.tree.map(spec, tree, axes)


def abstract_global_replicated(tree: Any) -> Any:
    sharding = NamedSharding(global_mesh(), P())
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(np.shape(x), np.asarray(x).dtype,
                                                       sharding=sharding), tree)


def local_from_global(tree: Any) -> Any:
    """Global arrays -> this process's data as numpy (replicated: the full copy;
    lane-sharded: this process's lanes, in order)."""

    def local(x):
        if not isinstance(x, jax.Array):
            return np.asarray(x)
        if x.is_fully_replicated:
            return np.asarray(x.addressable_data(0))
        shards = sorted(x.addressable_shards, key=lambda s: tuple(i.start or 0 for i in s.index))
        axis = next(i for i, sl in enumerate(shards[0].index) if sl != slice(None))
        return np.concatenate([np.asarray(s.data) for s in shards], axis=axis)

    return jax.tree.map(local, tree)


def allgather_json(obj: Any) -> list:
    """Gather one JSON-able object from every process (for the data iterators' states)."""
    import json

    if jax.process_count() == 1:
        return [obj]
    from jax.experimental import multihost_utils

    raw = np.frombuffer(json.dumps(obj).encode(), dtype=np.uint8)
    size = multihost_utils.process_allgather(np.array([raw.size], np.int32))
    padded = np.zeros(int(np.max(size)), np.uint8)
    padded[: raw.size] = raw
    allraw = multihost_utils.process_allgather(padded)
    return [json.loads(bytes(allraw[i][: int(size[i][0])]).decode()) for i in range(len(allraw))]


