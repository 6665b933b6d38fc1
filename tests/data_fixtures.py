"""Helpers shared by the data tests: small dataset configs, the real-data samples, and a
network switch. Datasets are built once per session in the shared `data_dir` (building is
idempotent, so each test module just opens what an earlier one built)."""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterator
from pathlib import Path

from longctx.config import DataConfig

SAMPLES = Path(__file__).resolve().parent / "data"
MSC_SAMPLE = SAMPLES / "msc_sample.jsonl"
QMSUM_SAMPLE = SAMPLES / "qmsum_sample.jsonl"

# 20 validation conversations x 16 probes: >= 50 probes in every distance bucket
SMALL = {"num_train": 40, "num_validation": 20, "span": 32, "vocab_size": 512}


def synthetic_config(data_dir: Path | str, **overrides) -> DataConfig:
    return DataConfig(name="synthetic", data_dir=str(data_dir), **{**SMALL, **overrides})


def real_config(name: str, data_dir: Path | str, **overrides) -> DataConfig:
    source = str({"msc": MSC_SAMPLE, "qmsum": QMSUM_SAMPLE}[name])
    return DataConfig(**{"name": name, "data_dir": str(data_dir), "source": source,
                         "vocab_size": 400, **overrides})


@contextlib.contextmanager
def network_off() -> Iterator[None]:
    """Any attempt to open a network connection raises (offline builds and reads)."""

    def refuse(*args, **kwargs):
        raise OSError("network is off in this test")

    saved = socket.socket.connect, socket.create_connection, socket.getaddrinfo
    socket.socket.connect, socket.create_connection, socket.getaddrinfo = refuse, refuse, refuse
    try:
        yield
    finally:
        socket.socket.connect, socket.create_connection, socket.getaddrinfo = saved
