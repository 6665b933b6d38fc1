"""Fetch a real corpus's official release through TFDS's DownloadManager, with checksums.

A `FileCorpusBuilder` names its release: `URL` (a file, or an archive holding the corpus
file `MEMBER`). `fetch` downloads it into `<data_dir>/downloads/` with
`tfds.download.DownloadManager` (cached: a later call reads the copy without network),
takes `MEMBER` out of the archive with `tfds.download.iter_archive`, and returns the
corpus file's path.

Checksums work as in TFDS, by URL, in TFDS's `checksums.tsv` format (`URL<TAB>size<TAB>
sha256<TAB>filename`). `checksums.tsv` beside the builders (found by TFDS through the
builders' `code_path`) holds the known ones, and every download of a listed URL is
verified against it. A URL it does not list is accepted on first download and registered
in `<data_dir>/downloads/checksums.tsv`; every later download into that data_dir is
verified against that first one. A file inside an archive is keyed `ARCHIVE_URL#MEMBER`
and checked (or registered) the same way after extraction.

`LONGCTX_<NAME>_URL` (`LONGCTX_MSC_URL`, `LONGCTX_QMSUM_URL`) replaces a builder's URL:
a mirror, or a local server in the tests. Checksums are per URL, so a mirror's are
registered on first use.

Any failure (no network, an HTTP error, a wrong checksum, a missing member) is one
UserError line that says to pass `data.source=FILE` instead; the partial download is
removed first.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import socket
import tarfile
import tempfile
import urllib.parse
import urllib.request
import zipfile
import zlib
from pathlib import Path

from longctx.data.builders.base import file_sha256
from longctx.errors import UserError

REGISTRY = "checksums.tsv"  # first-download checksums of a data_dir, under downloads/
CONNECT_TIMEOUT_S = 10.0


class _Failed(Exception):
    """Why a download failed (the part in parentheses of the user's line)."""


def url_variable(builder_cls) -> str:
    """The environment variable that replaces the builder's URL, e.g. LONGCTX_MSC_URL."""
    return f"LONGCTX_{builder_cls.PREFIX.upper()}_URL"


def release_url(builder_cls) -> str:
    """The URL to download: $LONGCTX_<NAME>_URL when set, else the official release's."""
    return os.environ.get(url_variable(builder_cls), "").strip() or builder_cls.URL


def fetch(builder_cls, data_dir: Path) -> Path:
    """The corpus file of `builder_cls`'s release: cached, or downloaded and checked.
    Raises UserError (one line) when it cannot be had; nothing half-written remains."""
    url = release_url(builder_cls)
    downloads = Path(data_dir) / "downloads"
    own = downloads / builder_cls.name
    tag = hashlib.sha256(url.encode()).hexdigest()[:16]  # one folder per archive URL
    extracted = downloads / "extracted" / builder_cls.name / tag
    new_dirs = [d for d in (own, *_self_and_parents(extracted)) if not d.exists()]
    old_tmp = set(own.glob("*.tmp.*")) if own.is_dir() else set()
    try:
        return _fetch(builder_cls, url, downloads, extracted)
    except _Failed as exc:
        for path in set(own.glob("*.tmp.*")) - old_tmp if own.is_dir() else ():
            shutil.rmtree(path, ignore_errors=True)  # TFDS's partial download
        if extracted in new_dirs:
            shutil.rmtree(extracted, ignore_errors=True)
        for d in sorted(new_dirs, key=lambda p: len(p.parts), reverse=True):
            with contextlib.suppress(OSError):
                d.rmdir()  # only the empty folders this call made
        raise UserError(
            f"could not download {url} ({exc}); on a machine without a network pass "
            f"data.source=FILE with the release's {builder_cls.RELEASE_FILE}") from None


def _self_and_parents(path: Path) -> list[Path]:
    return [path, *path.parents]


def _fetch(builder_cls, url: str, downloads: Path, extracted: Path) -> Path:
    import tensorflow_datasets as tfds
    from tensorflow_datasets.core.download import checksums
    from tensorflow_datasets.core.download.download_manager import NonMatchingChecksumError

    registry = downloads / REGISTRY
    known = dict(builder_cls.url_infos or {})  # checksums.tsv beside the builders
    first = checksums.load_url_infos(registry) if registry.is_file() else {}
    infos = {**first, **known}
    package = Path(str(builder_cls.code_path)).with_name(REGISTRY)
    where = {key: (package if key in known else registry) for key in infos}
    if not _cached(downloads / builder_cls.name, url):
        _check_reachable(url)
    tfds.display_progress_bar(False)
    manager = tfds.download.DownloadManager(
        download_dir=downloads, extract_dir=downloads / "extracted", url_infos=infos,
        dataset_name=builder_cls.name)
    try:
        path = Path(manager.download(url))
    except NonMatchingChecksumError:
        raise _Failed(f"its sha256 is not the {infos[url].checksum} recorded in "
                      f"{where[url]}") from None
    except (tfds.download.DownloadError, OSError) as exc:
        raise _Failed(_first_line(exc)) from None
    out = path
    if builder_cls.MEMBER:
        key = f"{url}#{builder_cls.MEMBER}"
        out = extracted / builder_cls.MEMBER
        if not (out.is_file() and key in infos and file_sha256(out) == infos[key].checksum):
            try:
                _extract(path, url, builder_cls.MEMBER, out)
                _check(out, key, infos, where)
            except _Failed:
                _forget(path)  # not the release: the next try downloads it again
                raise
        _register(registry, key, out, infos)
    if url in infos:
        return out
    _register(registry, url, path, infos)
    # once more, now known: TFDS files the copy under its checksum here, not in a later
    # (perhaps concurrent) call
    return _fetch(builder_cls, url, downloads, extracted)


def _cached(folder: Path, url: str) -> bool:
    """Whether TFDS holds a download of `url` in `folder` (its `.INFO` files name it)."""
    for info in folder.glob("*.INFO") if folder.is_dir() else ():
        try:
            urls = json.loads(info.read_text()).get("urls", [])
        except (OSError, ValueError, RecursionError, AttributeError):  # damaged: not a match
            continue
        if isinstance(urls, list) and url in urls and info.with_suffix("").is_file():
            return True
    return False


def _check_reachable(url: str) -> None:
    """Fail fast without a network: TFDS retries a refused connection for minutes."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise _Failed("only http(s) URLs can be downloaded")
    proxies = urllib.request.getproxies()
    if parts.scheme in proxies and not urllib.request.proxy_bypass(parts.hostname):
        return  # the request goes through a proxy: let it try
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        socket.create_connection((parts.hostname, port), timeout=CONNECT_TIMEOUT_S).close()
    except OSError as exc:
        raise _Failed(f"cannot connect to {parts.hostname}:{port}: "
                      f"{exc.strerror or exc}") from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:300]


def _extract(archive: Path, url: str, member: str, out: Path) -> None:
    """Write `member` of `archive` to `out` (atomically) with TFDS's archive reader."""
    import tensorflow_datasets as tfds
    from tensorflow_datasets.core.download.resource import guess_extract_method

    method = guess_extract_method(urllib.parse.urlsplit(url).path)
    if method == tfds.download.ExtractMethod.NO_EXTRACT:
        raise _Failed(f"not an archive, so it has no {member}")
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        with open(archive, "rb") as f:
            for name, handle in tfds.download.iter_archive(f, method):
                if name == member:
                    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", dir=out.parent)
                    try:
                        with os.fdopen(fd, "wb") as dst:
                            shutil.copyfileobj(handle, dst)
                        os.replace(tmp, out)
                    finally:
                        with contextlib.suppress(FileNotFoundError):
                            os.unlink(tmp)
                    return
    except (OSError, EOFError, ValueError, tarfile.TarError, zipfile.BadZipFile,
            zlib.error) as exc:
        raise _Failed(f"unreadable archive: {_first_line(exc)}") from None
    raise _Failed(f"the archive has no {member}")


def _check(path: Path, key: str, infos: dict, where: dict) -> None:
    """Raise unless `path` has the sha256 recorded for `key` (when one is)."""
    if key in infos and file_sha256(path) != infos[key].checksum:
        path.unlink()
        raise _Failed(f"its {key.split('#', 1)[-1]} does not have the sha256 "
                      f"{infos[key].checksum} recorded in {where[key]}")


def _register(registry: Path, key: str, path: Path, infos: dict) -> None:
    """Record a first download's checksum in the data_dir's registry (TFDS's format,
    named as the URL or member names the file)."""
    if key in infos:
        return
    from tensorflow_datasets.core.download import checksums

    info = checksums.compute_url_info(path)
    info.filename = Path(urllib.parse.urlsplit(key).fragment or
                         urllib.parse.urlsplit(key).path).name
    checksums.save_url_infos(registry, {key: info})


def _forget(path: Path) -> None:
    """Remove a download and TFDS's `.INFO` file beside it."""
    for p in (path, path.with_name(path.name + ".INFO")):
        with contextlib.suppress(FileNotFoundError):
            p.unlink()
