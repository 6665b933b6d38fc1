"""Downloading a real corpus's release through TFDS's DownloadManager, offline: the samples
in tests/data served from 127.0.0.1 (LONGCTX_<NAME>_URL points the builder there), the
checksums recorded and verified, the MSC member taken out of a tar.gz, and one clear line
for every failure, with nothing half-written left behind."""

from __future__ import annotations

import hashlib
import io
import tarfile

import pytest

from longctx.cli import main
from longctx.config import DataConfig
from longctx.data import prepare_dataset
from longctx.data.builders.msc import MscDialogues
from longctx.data.builders.qmsum import QmsumMeetings
from longctx.data.dataset import dataset_dir
from tests.data_fixtures import MSC_SAMPLE, QMSUM_SAMPLE, network_off, real_config, serve_folder

MEMBER = MscDialogues.MEMBER


@pytest.fixture
def server(tmp_path):
    """(served folder, base URL, requests seen) of an HTTP server on 127.0.0.1."""
    root = tmp_path / "www"
    root.mkdir()
    with serve_folder(root) as (base, seen):
        yield root, base, seen


def _tarball(path, members: dict[str, bytes]) -> None:
    with tarfile.open(path, "w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _files(folder):
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


def _registry(data_dir) -> dict[str, str]:
    lines = (data_dir / "downloads" / "checksums.tsv").read_text().splitlines()
    return {line.split("\t")[0]: line.split("\t")[2] for line in lines}


def test_package_checksums_are_read_by_tfds():
    infos = MscDialogues.url_infos  # TFDS's loader of checksums.tsv beside the builders
    info = infos[f"{MscDialogues.URL}#{MEMBER}"]
    assert info.checksum == "1f114489f05d3ce69291f8f5b6d1adc2d36f77268a2cf3bd286a68dab69018fe"
    assert int(info.size) == 3_375_206
    assert QmsumMeetings.URL.startswith("https://raw.githubusercontent.com/Yale-LILY/QMSum/")


def test_qmsum_downloads_once_then_reads_the_copy(server, tmp_path, monkeypatch):
    root, base, seen = server
    (root / "train.jsonl").write_bytes(QMSUM_SAMPLE.read_bytes())
    url = f"{base}/train.jsonl"
    monkeypatch.setenv("LONGCTX_QMSUM_URL", url)
    data_dir = tmp_path / "d"
    cfg = DataConfig(name="qmsum", data_dir=str(data_dir), vocab_size=400)
    ds = prepare_dataset(cfg)
    assert seen == ["/train.jsonl"]
    assert _registry(data_dir) == {url: _sha(QMSUM_SAMPLE.read_bytes())}  # first download
    local = real_config("qmsum", tmp_path / "local")  # the same file as data.source
    assert dataset_dir(cfg).name == dataset_dir(local).name
    assert sum(len(ds.conversations(s)) for s in ("train", "validation")) == 3
    with network_off():  # the copy is read, checked against the registry, not fetched
        again = prepare_dataset(DataConfig(name="qmsum", data_dir=str(data_dir),
                                           vocab_size=400))
    assert again.root == ds.root and seen == ["/train.jsonl"]


def test_msc_member_from_the_archive(server, tmp_path, monkeypatch):
    root, base, seen = server
    sample = MSC_SAMPLE.read_bytes()
    _tarball(root / "msc_v0.1.tar.gz", {"msc/README.txt": b"other files\n", MEMBER: sample})
    url = f"{base}/msc_v0.1.tar.gz"
    monkeypatch.setenv("LONGCTX_MSC_URL", url)
    data_dir = tmp_path / "d"
    cfg = DataConfig(name="msc", data_dir=str(data_dir), vocab_size=400)
    ds = prepare_dataset(cfg)
    assert dataset_dir(cfg).name == dataset_dir(real_config("msc", tmp_path / "l")).name
    assert len(ds.conversations("train")) + len(ds.conversations("validation")) == 8
    registry = _registry(data_dir)
    assert registry[f"{url}#{MEMBER}"] == _sha(sample)
    assert registry[url] == _sha((root / "msc_v0.1.tar.gz").read_bytes())
    assert seen == ["/msc_v0.1.tar.gz"]


def test_local_source_overrides_the_download(server, tmp_path, monkeypatch):
    root, base, seen = server
    monkeypatch.setenv("LONGCTX_QMSUM_URL", f"{base}/train.jsonl")
    prepare_dataset(real_config("qmsum", tmp_path / "d"))
    assert seen == [] and not (tmp_path / "d" / "downloads").exists()


def _fails(args, capsys) -> str:
    assert main(["data", "build", *args]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    return err


def test_no_network_and_no_source_is_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("LONGCTX_MSC_URL", raising=False)
    with network_off():
        err = _fails(["msc", f"data.data_dir={tmp_path}/d"], capsys)
    assert (f"could not download {MscDialogues.URL} (" in err and "network is off" in err
            and f"pass data.source=FILE with the release's {MEMBER}" in err)
    assert not (tmp_path / "d").exists()


def test_wrong_checksum_is_one_line_and_leaves_nothing(server, tmp_path, monkeypatch, capsys):
    root, base, seen = server
    (root / "train.jsonl").write_bytes(QMSUM_SAMPLE.read_bytes())
    url = f"{base}/train.jsonl"
    monkeypatch.setenv("LONGCTX_QMSUM_URL", url)
    data_dir = tmp_path / "d"
    registry = data_dir / "downloads" / "checksums.tsv"
    registry.parent.mkdir(parents=True)
    registry.write_text(f"{url}\t49787\t{'0' * 64}\ttrain.jsonl\n")  # recorded earlier
    err = _fails(["qmsum", f"data.data_dir={data_dir}"], capsys)
    assert seen == ["/train.jsonl"]  # downloaded, then refused
    assert f"could not download {url} (its sha256 is not the {'0' * 64} recorded in" in err
    assert "pass data.source=FILE with the release's data/ALL/jsonl/train.jsonl" in err
    assert _files(data_dir) == ["downloads/checksums.tsv"]


ARCHIVE_FAILURES = {
    "member checksum": ({MEMBER: b'{"x": 1}\n'}, True, "does not have the sha256"),
    "member missing": ({"msc/other.txt": b"x"}, False, f"the archive has no {MEMBER}"),
    "not found": (None, False, "HTTP code: 404"),
}


@pytest.mark.parametrize("case", sorted(ARCHIVE_FAILURES))
def test_archive_failures_are_one_line(case, server, tmp_path, monkeypatch, capsys):
    root, base, seen = server
    members, recorded, message = ARCHIVE_FAILURES[case]
    if members is not None:
        _tarball(root / "msc.tar.gz", members)
    url = f"{base}/msc.tar.gz"
    monkeypatch.setenv("LONGCTX_MSC_URL", url)
    data_dir = tmp_path / "d"
    before = []
    if recorded:  # the member's checksum is known (as the official release's is)
        registry = data_dir / "downloads" / "checksums.tsv"
        registry.parent.mkdir(parents=True)
        registry.write_text(f"{url}#{MEMBER}\t10\t{'1' * 64}\ttest.txt\n")
        before = ["downloads/checksums.tsv"]
    err = _fails(["msc", f"data.data_dir={data_dir}"], capsys)
    assert err.startswith(f"longctx data: error: could not download {url} (") and message in err
    assert (_files(data_dir) if data_dir.exists() else []) == before
    if case == "member checksum":  # the archive was not kept: the next try fetches again
        _fails(["msc", f"data.data_dir={data_dir}"], capsys)
        assert seen == ["/msc.tar.gz"] * 2
