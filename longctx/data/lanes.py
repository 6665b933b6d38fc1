"""Lane-stable batches with an exactly resumable position.

A batch has one row per lane. Lane `l` (of `batch_size` lanes in all) reads the
conversations at positions l, l + B, l + 2B, ... of an endless stream that is each epoch's
seeded permutation of the split, one after another; so a lane's conversations depend only
on (seed, l, B, split size) and a process that reads only its own lanes gets exactly the
rows the whole batch would have. A conversation of T tokens gives T - 1 (input, target)
pairs (inputs ids[:-1], targets ids[1:]: the last target is <|eos|>, never a token of the
next conversation). A lane emits them `seg_len` at a time; a conversation always starts
a row's segment (`reset` True there: the model clears that row's memory), and the rest of
its last segment is padding (<|pad|>, mask 0).

mode 'segments' (Transformer-XL, seg_len = tgt_len) and 'sequences' (sliding window and
vanilla, seg_len = the training sequence length) use the same mechanics: a conversation
longer than a sequence continues in the lane's next sequence, with reset False.

The state (`get_state`) is a small JSON-serialisable dict: per lane, how many
conversations it has started and its token offset in the current one; `set_state` (in
any process) continues with exactly the batches that would have come next.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from longctx.errors import UserError

MODES = ("segments", "sequences")
STATE_VERSION = 1


def lanes_for_process(batch_size: int, process_index: int, process_count: int) -> list[int]:
    """The contiguous block of lane ids that process `process_index` reads."""
    if batch_size % process_count:
        raise UserError(f"{batch_size} lanes do not split over {process_count} processes")
    per = batch_size // process_count
    return list(range(process_index * per, (process_index + 1) * per))


class Lanes:
    """Iterator of batches {inputs, targets, mask, reset} over a split (see module doc)."""

    def __init__(self, ds: Any, split: str, batch_size: int, seg_len: int, *,
                 mode: str = "segments", lane_ids: list[int] | None = None, seed: int = 0,
                 loop: bool = True):
        if mode not in MODES:
            raise UserError(f"lanes mode must be one of {MODES}, got {mode!r}")
        if batch_size <= 0 or seg_len <= 0:
            raise UserError(f"lanes need batch_size > 0 and seg_len > 0, got {batch_size}, "
                            f"{seg_len}")
        lane_ids = list(range(batch_size)) if lane_ids is None else [int(i) for i in lane_ids]
        if not lane_ids or len(set(lane_ids)) != len(lane_ids) or not all(
                0 <= i < batch_size for i in lane_ids):
            raise UserError(f"lane_ids must be distinct lanes in 0..{batch_size - 1}, "
                            f"got {lane_ids}")
        self._source = ds.source(split)
        self._n = len(self._source)
        if self._n == 0:
            raise UserError(f"split '{split}' has no conversations")
        self._pad = int(ds.special_ids["pad"])
        self._split, self._mode, self._seed, self._loop = split, mode, int(seed), loop
        self._batch_size, self._seg_len, self._lane_ids = batch_size, seg_len, lane_ids
        # per lane: [conversations started, token offset in the current one]
        self._pos = [[0, 0] for _ in lane_ids]
        self._perms: dict[int, np.ndarray] = {}
        self._current: dict[int, tuple[int, np.ndarray]] = {}  # row -> (conv index, ids)

    # -- the stream of conversations ---------------------------------------------------

    def _perm(self, epoch: int) -> np.ndarray:
        if epoch not in self._perms:
            if len(self._perms) > 4:
                self._perms.pop(min(self._perms))
            rng = np.random.default_rng([self._seed, epoch])
            self._perms[epoch] = rng.permutation(self._n)
        return self._perms[epoch]

    def conversation_index(self, lane: int, k: int) -> int | None:
        """Index (in the split) of the k-th conversation of `lane`; None past the end."""
        epoch, pos = divmod(lane + k * self._batch_size, self._n)
        if epoch > 0 and not self._loop:
            return None
        return int(self._perm(epoch)[pos])

    def _ids(self, row: int, index: int) -> np.ndarray:
        cached = self._current.get(row)
        if cached is None or cached[0] != index:
            cached = (index, np.asarray(self._source[index]["ids"], np.int32))
            self._current[row] = cached
        return cached[1]

    # -- batches ------------------------------------------------------------------------

    def __iter__(self) -> Lanes:
        return self

    def __next__(self) -> dict[str, np.ndarray]:
        rows, length = len(self._lane_ids), self._seg_len
        batch = {
            "inputs": np.full((rows, length), self._pad, np.int32),
            "targets": np.full((rows, length), self._pad, np.int32),
            "mask": np.zeros((rows, length), np.float32),
            "reset": np.zeros((rows,), bool),
        }
        active = False
        for row, lane in enumerate(self._lane_ids):
            k, offset = self._pos[row]
            index = self.conversation_index(lane, k)
            if index is None:
                continue  # this lane has read its share (loop=False): an all-padding row
            active = True
            ids = self._ids(row, index)
            n = min(length, len(ids) - 1 - offset)
            batch["inputs"][row, :n] = ids[offset:offset + n]
            batch["targets"][row, :n] = ids[offset + 1:offset + 1 + n]
            batch["mask"][row, :n] = 1.0
            batch["reset"][row] = offset == 0
            offset += n
            self._pos[row] = [k + 1, 0] if offset == len(ids) - 1 else [k, offset]
        if not active:
            raise StopIteration
        return batch

    # -- resumable state ----------------------------------------------------------------

    def _key(self) -> dict[str, Any]:
        return {"version": STATE_VERSION, "split": self._split, "mode": self._mode,
                "seed": self._seed, "batch_size": self._batch_size, "seg_len": self._seg_len,
                "num_conversations": self._n, "loop": self._loop}

    def get_state(self) -> dict[str, Any]:
        """Small JSON-serialisable position: {lane id: [conversations started, offset]}."""
        lanes = {str(lane): list(pos) for lane, pos in zip(self._lane_ids, self._pos,
                                                             strict=True)}
        return {**self._key(), "lanes": lanes}

    def set_state(self, state: dict[str, Any]) -> None:
        """Continue from `state` (from get_state of this or any lanes over the same split
        and layout; it must hold this iterator's lanes)."""
        for key, want in self._key().items():
            if state.get(key) != want:
                raise UserError(f"lanes state: '{key}' is {state.get(key)!r} but these lanes "
                                f"have {want!r}; it was saved for other data or batching")
        lanes = state.get("lanes", {})
        missing = [lane for lane in self._lane_ids if str(lane) not in lanes]
        if missing:
            raise UserError(f"lanes state: no position for lanes {missing}")
        pos = [lanes[str(lane)] for lane in self._lane_ids]
        for lane, (k, offset) in zip(self._lane_ids, pos, strict=True):
            index = self.conversation_index(lane, k)
            if index is not None and offset >= len(self._source[index]["ids"]) - 1:
                raise UserError(f"lanes state: lane {lane} is at offset {offset}, past the end "
                                f"of its conversation; it was saved for other data")
        self._pos = [list(p) for p in pos]


def merge_states(states: list[dict[str, Any]]) -> dict[str, Any]:
    """One state holding every lane of `states` (e.g. each process's), so that any layout
    of processes can restore from it."""
    if not states:
        raise UserError("lanes state: nothing to merge")
    key = {k: v for k, v in states[0].items() if k != "lanes"}
    lanes: dict[str, list[int]] = {}
    for state in states:
        if {k: v for k, v in state.items() if k != "lanes"} != key:
            raise UserError("lanes state: cannot merge states of different data or batching")
        lanes.update(state["lanes"])
    for lane, pos in lanes.items():
        if not (isinstance(pos, list) and len(pos) == 2 and all(
                isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in pos)):
            raise UserError(f"lanes state: lane {lane}'s position {str(pos)[:60]} is not two "
                            "integers >= 0 (conversations started, offset)")
    return {**key, "lanes": lanes}


def make_lanes(ds: Any, split: str, batch_size: int, seg_len: int, *, mode: str = "segments",
               lane_ids: list[int] | None = None, seed: int = 0, loop: bool = True) -> Lanes:
    """Lane-stable batches of `split` (see `Lanes`); `lane_ids` = this process's lanes."""
    return Lanes(ds, split, batch_size, seg_len, mode=mode, lane_ids=lane_ids, seed=seed,
                 loop=loop)
