"""`prepare_dataset`: build a dataset and its tokenizer once (atomically), then read it.

On disk, under `data_cfg.data_dir`::

    <dir_name>/                 e.g. synthetic-1.0.0-n200-40-w64-v2048-s0
        dataset.json            what was built (config, counts, tokenizer sha256); written last
        tokenizer/              PreTrainedTokenizerFast.save_pretrained (or the files of
                                the tokenizer `data.tokenizer_from` names, copied)
        tfds/<builder>/1.0.0/   array_record shards + TFDS metadata

Everything is written into a temporary sibling folder and renamed into place, so a
folder with that name is always complete; a build killed outright (SIGKILL) leaves its
temporary folder, which the next build in that data_dir removes. Every source error is raised before anything
is written.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import io
import json
import os
import re
import secrets
import shutil
import tempfile
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from longctx.config import DataConfig
from longctx.data.builders import builder_class
from longctx.data.builders.base import SPLITS, DialogueBuilder
from longctx.data.conversation import Conversation
from longctx.data.render import TokenizedConversation, from_record, record_text, render, to_record, value_ids
from longctx.data.tokenizer import files_sha256, load_tokenizer, vocabulary
from longctx.errors import UserError

MANIFEST = "dataset.json"


def _read_manifest(path: Path) -> dict[str, Any]:
    """The built dataset's manifest; a damaged one is one line naming it."""
    try:
        manifest = json.loads(path.read_text())
        if not isinstance(manifest, dict):
            raise ValueError(f"a JSON {type(manifest).__name__}, not an object")
    except (OSError, ValueError, RecursionError) as exc:  # ValueError: JSON and UTF-8
        text = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
        raise UserError(f"{path}: unreadable dataset manifest ({text}); delete "
                        f"{path.parent} and build it again (longctx data build)") from None
    return manifest


class DialogueDataset:
    """A built dataset: its tokenizer, random-access records and decoded conversations."""

    def __init__(self, root: Path, cfg: DataConfig, builder_cls: type[DialogueBuilder]):
        self.root = root
        self.config = cfg
        self.tokenizer_dir = root / "tokenizer"
        self.vocab_size, self.special_ids = vocabulary(self.tokenizer_dir)
        self.manifest = _read_manifest(root / MANIFEST)
        self._builder_cls = builder_cls
        self._conversations: dict[str, list[TokenizedConversation]] = {}

    @cached_property
    def tokenizer(self):
        """The dataset's tokenizer (transformers' PreTrainedTokenizerFast), loaded on first
        use: training reads token ids and needs only `vocab_size` and `special_ids`."""
        return load_tokenizer(self.tokenizer_dir)

    @cached_property
    def _sources(self):
        builder = self._builder_cls(data_dir=str(self.root / "tfds"), file_format="array_record")
        return builder.as_data_source()

    def source(self, split: str):
        """Random-access records of `split` (dicts of numpy; layout in `render.to_record`)."""
        if split not in SPLITS:
            raise UserError(f"unknown split '{split}' (known: {', '.join(SPLITS)})")
        return self._sources[split]

    def conversations(self, split: str) -> list[TokenizedConversation]:
        """Every conversation of `split` as a token stream, in the dataset's order."""
        if split not in self._conversations:
            src = self.source(split)
            self._conversations[split] = [from_record(src[i]) for i in range(len(src))]
        return self._conversations[split]

    def texts(self, split: str) -> list[Conversation]:
        """Every conversation of `split` as text (turns, session headers, probe offsets)."""
        src = self.source(split)
        return [record_text(src[i]) for i in range(len(src))]

    def slot_values(self, slot: str) -> tuple[str, ...]:
        """All values a synthetic slot draws from (each has >= 7 others of its token
        length, so forced choice among 8 always finds distractors); () for real corpora."""
        return tuple(self.manifest.get("slot_values", {}).get(slot, ()))

    def encode_value(self, value: str) -> np.ndarray:
        """Tokens of a slot value exactly as it appears in a stream (after a space)."""
        return value_ids(self.tokenizer, value)

    def __repr__(self) -> str:
        return f"DialogueDataset({str(self.root)!r}, vocab_size={self.vocab_size})"


def _quiet_prepare(builder: DialogueBuilder, download_dir: Path) -> None:
    """download_and_prepare without TFDS's progress bars and banner."""
    import tensorflow_datasets as tfds

    tfds.display_progress_bar(False)
    with contextlib.redirect_stdout(io.StringIO()):
        builder.download_and_prepare(
            download_dir=str(download_dir),
            download_config=tfds.download.DownloadConfig(try_download_gcs=False))


def dataset_dir(cfg: DataConfig) -> Path:
    """Where the dataset described by `cfg` lives (built or not)."""
    return Path(cfg.data_dir) / builder_class(cfg.name).dir_name(cfg)


def prepare_dataset(cfg: DataConfig) -> DialogueDataset:
    """Build the dataset and its tokenizer if missing (idempotent), then open it."""
    from longctx.fsguard import check_dir_arg, machine_limits

    builder_cls = builder_class(cfg.name)
    root = check_dir_arg(cfg.data_dir, "data.data_dir") / builder_cls.dir_name(cfg)
    if not (root / MANIFEST).is_file():
        with machine_limits(f"data.data_dir {cfg.data_dir}", f"cannot build {root.name}"):
            _build(cfg, builder_cls, root)
    return DialogueDataset(root, cfg, builder_cls)


# `.<dataset folder>.<random>.tmp`: a build in progress (it holds an flock on the folder)
# or one that was killed (SIGKILL, power loss) and is removed by the next build.
_TMP_NAME = re.compile(r"^\.[a-z]+-\d+\.\d+\.\d+-.+\.tmp$")


def clean_stale_builds(data_dir: Path) -> list[Path]:
    """Remove the temporary folders of builds that died (no process holds their lock)."""
    removed = []
    for path in sorted(data_dir.glob(".*.tmp")) if data_dir.is_dir() else []:
        if not _TMP_NAME.match(path.name) or not path.is_dir() or path.is_symlink():
            continue
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            continue  # a live build (another process) holds it
        else:
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
        finally:
            os.close(fd)
    return removed


def _build(cfg: DataConfig, builder_cls: type[DialogueBuilder], root: Path) -> None:
    splits = builder_cls.read(cfg)  # every source error surfaces here, before any write
    root.parent.mkdir(parents=True, exist_ok=True)
    clean_stale_builds(root.parent)
    # The name is chosen before the folder exists, so that a Ctrl-C at any point after the
    # `try` (even between creating the folder and taking its lock) still removes it.
    tmp = root.parent / f".{root.name}.{secrets.token_hex(6)}.tmp"
    lock = None
    try:
        tmp.mkdir()  # a name taken already (never in practice) raises here
        tmp.chmod(0o755)  # shared like any folder, whatever the umask
        lock = os.open(tmp, os.O_RDONLY)  # held until the end: marks the build as alive
        fcntl.flock(lock, fcntl.LOCK_EX)
        splits, tokenizer, extra = builder_cls.tokenize(cfg, splits, tmp / "tokenizer")
        records = {split: [to_record(c, render(c, tokenizer)) for c in convs]
                   for split, convs in splits.items()}
        (tmp / "downloads").mkdir()
        with _temp_files_in(tmp / "downloads"):
            builder = builder_cls(records=records, data_dir=str(tmp / "tfds"),
                                  file_format="array_record")
        _quiet_prepare(builder, tmp / "downloads")
        shutil.rmtree(tmp / "downloads", ignore_errors=True)
        manifest = {
            "name": cfg.name,
            "config": dataclasses.asdict(cfg),
            "builder": builder_cls.name,
            "version": str(builder_cls.VERSION),
            "conversations": {s: len(c) for s, c in splits.items()},
            "tokens": {s: int(sum(len(r["ids"]) for r in recs)) for s, recs in records.items()},
            "tokenizer_sha256": files_sha256(tmp / "tokenizer"),
            **extra,
        }
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
        try:
            os.rename(tmp, root)
        except OSError:
            if not (root / MANIFEST).is_file():  # not a concurrent build that finished first
                raise
    finally:  # also on Ctrl-C: no half-written dataset is left
        _remove(tmp)
        if lock is not None:
            os.close(lock)


@contextlib.contextmanager
def _temp_files_in(path: Path):
    """Python's temporary files go under `path` meanwhile. A new TFDS builder makes an empty
    `/tmp/tmp*tfds` folder for dataset metadata from GCS (read only when GCS is enabled,
    never removed): one folder left in /tmp per dataset built, without this."""
    before = tempfile.tempdir
    tempfile.tempdir = str(path)
    try:
        yield
    finally:
        tempfile.tempdir = before


def _remove(tmp: Path, attempts: int = 3) -> None:
    """Remove a build folder; again if a writer thread the interrupt did not stop added a
    file while it was being removed."""
    for _ in range(attempts):
        shutil.rmtree(tmp, ignore_errors=True)
        if not tmp.exists():
            return
