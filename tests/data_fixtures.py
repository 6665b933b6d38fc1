"""Helpers shared by the data tests: small dataset configs, the real-data samples, a
network switch and a local HTTP server. Datasets are built once per session in the shared
`data_dir` (building is idempotent, so each test module just opens what an earlier one
built)."""

from __future__ import annotations

import contextlib
import functools
import http.server
import os
import socket
import threading
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


class _Handler(http.server.SimpleHTTPRequestHandler):
    seen: list[str] = []

    def do_GET(self):  # noqa: N802 (http.server's name)
        type(self).seen.append(self.path)
        super().do_GET()

    def log_message(self, *args):  # quiet
        pass


PROXY_VARIABLES = ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy",
                   "ALL_PROXY")


@contextlib.contextmanager
def serve_folder(root: Path) -> Iterator[tuple[str, list[str]]]:
    """(base URL, paths requested so far) of an HTTP server on 127.0.0.1 serving `root`,
    with no proxy in the way; stopped on exit."""
    handler = type("Handler", (_Handler,), {"seen": []})
    httpd = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(handler, directory=str(root)))
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05},
                              daemon=True)
    saved = {k: os.environ.pop(k) for k in PROXY_VARIABLES if k in os.environ}
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_port}", handler.seen
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=30)
        os.environ.update(saved)
