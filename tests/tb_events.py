"""Reading TensorBoard event files back (TFRecord framing + tensorboardX's Event proto),
so tests check what TensorBoard would show without installing TensorBoard."""

from __future__ import annotations

import struct
from pathlib import Path


def scalars(tb_dir: Path) -> dict[str, dict[int, float]]:
    """tag -> {step: value} of every scalar in the event files under `tb_dir` (a later file
    overrides an earlier one's value at the same step)."""
    from tensorboardX.proto import event_pb2

    out: dict[str, dict[int, float]] = {}
    for path in sorted(Path(tb_dir).glob("events.out.tfevents.*")):
        data = path.read_bytes()
        at = 0
        while at + 12 <= len(data):
            (length,) = struct.unpack("<Q", data[at : at + 8])
            record = data[at + 12 : at + 12 + length]
            at += 12 + length + 4  # length, its crc, the record, its crc
            event = event_pb2.Event.FromString(record)
            for value in event.summary.value:
                out.setdefault(value.tag, {})[event.step] = value.simple_value
    return out
