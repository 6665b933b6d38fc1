"""The TFDS builder shared by every dialogue dataset, and the checked JSON-lines reader
of the real corpora.

A dataset is built in two steps (see `longctx.data.dataset`): the source is read into
text `Conversation`s and checked (every error before anything is written), then the
tokenizer is trained and the rendered records are written by `download_and_prepare`.
The builder itself only writes records it is handed, in order (no shuffling), as
array_record files that `as_data_source()` reads without TensorFlow.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import tensorflow_datasets as tfds
from etils import epath

from longctx.config import DataConfig
from longctx.data.conversation import Conversation, validate
from longctx.data.tokenizer import copy_tokenizer, files_sha256, given_tokenizer_dir, train_tokenizer
from longctx.errors import UserError

SPLITS = ("train", "validation")


def features() -> tfds.features.FeaturesDict:
    """One record = one conversation (layout in `longctx.data.render`)."""
    return tfds.features.FeaturesDict({
        "conv_id": tfds.features.Text(),
        "ids": tfds.features.Tensor(shape=(None,), dtype=np.int32),
        "turns": tfds.features.Tensor(shape=(None, 5), dtype=np.int32),
        "sessions": tfds.features.Tensor(shape=(None, 2), dtype=np.int32),
        "probes": tfds.features.Tensor(shape=(None, 7), dtype=np.int32),
        "text": tfds.features.Text(),
    })


class DialogueBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """Writes pre-rendered conversation records; subclasses say how to read their source."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES: ClassVar[dict[str, str]] = {"1.0.0": "First release."}
    DESCRIPTION: ClassVar[str] = ""
    CITATION: ClassVar[str] = ""

    @tfds.core.utils.classproperty
    @classmethod
    def code_path(cls) -> epath.Path:
        """The builder's module file: TFDS reads the download checksums from
        `checksums.tsv` beside it (`url_infos`). Given directly because TFDS's own lookup
        imports `importlib_resources`, which is not installed."""
        return epath.Path(inspect.getfile(cls))

    def __init__(self, *, records: dict[str, list[dict[str, Any]]] | None = None, **kwargs):
        self._records = records
        super().__init__(**kwargs)

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(builder=self, description=self.DESCRIPTION,
                                     features=features(), citation=self.CITATION,
                                     disable_shuffling=True)

    def _split_generators(self, dl_manager):
        if self._records is None:
            raise UserError(f"dataset '{self.name}' is not built; run `longctx data build`")
        return {split: self._generate_examples(split) for split in SPLITS}

    def _generate_examples(self, split: str):
        for index, record in enumerate(self._records[split]):
            yield f"{index:07d}", record

    # -- what subclasses define --------------------------------------------------------

    @classmethod
    def dir_name(cls, cfg: DataConfig) -> str:
        """Folder name under data_dir; differs whenever the built data would differ."""
        raise NotImplementedError

    @classmethod
    def read(cls, cfg: DataConfig) -> dict[str, list[Conversation]]:
        """The checked text conversations of each split (raises UserError)."""
        raise NotImplementedError

    @classmethod
    def tokenize(cls, cfg: DataConfig, splits: dict[str, list[Conversation]], out_dir: Path
                 ) -> tuple[dict[str, list[Conversation]], Any, dict[str, Any]]:
        """Train the tokenizer on the training split, or copy the given one (saved in
        `out_dir`, `make_tokenizer`); return the final splits, the tokenizer and extra
        manifest entries (the synthetic set adjusts)."""
        return splits, make_tokenizer(cfg, splits["train"], out_dir), {}


class FileCorpusBuilder(DialogueBuilder, skip_registration=True):
    """A real corpus read from one JSON-lines file: one conversation a line (`parse`),
    split by a hash of its id, named by the file's digest so a different file builds a
    different dataset. The file is `data.source` when set, else the official release's,
    downloaded into `<data_dir>/downloads/` (`longctx.data.builders.download`)."""

    PREFIX: ClassVar[str] = ""  # the dataset folder's name starts with it
    URL: ClassVar[str] = ""  # the official release: the corpus file, or an archive holding it
    MEMBER: ClassVar[str] = ""  # the corpus file inside the archive at URL ('' = URL is it)
    RELEASE_FILE: ClassVar[str] = ""  # the corpus file's name in the release (for messages)

    @staticmethod
    def parse(obj: dict, where: str, lineno: int) -> Conversation:
        raise NotImplementedError

    @classmethod
    def dir_name(cls, cfg: DataConfig) -> str:
        path = source_path(cfg, cls)
        return f"{cls.PREFIX}-{cls.VERSION}-{vocab_tag(cfg)}-{file_sha256(path)[:12]}"  # edits rebuild it

    @classmethod
    def read(cls, cfg: DataConfig) -> dict[str, list[Conversation]]:
        path = source_path(cfg, cls)
        return split_by_hash(read_conversations(path, cls.parse), path)


def vocab_tag(cfg: DataConfig) -> str:
    """The dataset folder name's tokenizer part: `v<vocab_size>` for a tokenizer trained
    on the data, `tok<sha256[:12]>` of the files of one given by `data.tokenizer_from`
    (the vocabulary size is then the given tokenizer's), so that datasets built with
    different tokenizers never share a folder."""
    if not cfg.tokenizer_from:
        return f"v{cfg.vocab_size}"
    return f"tok{files_sha256(given_tokenizer_dir(cfg.tokenizer_from))[:12]}"


def make_tokenizer(cfg: DataConfig, train_convs: list[Conversation], out_dir: Path):
    """The dataset's tokenizer, saved in `out_dir`: trained on `train_convs`, or the one
    `data.tokenizer_from` names, copied byte for byte."""
    if cfg.tokenizer_from:
        return copy_tokenizer(cfg.tokenizer_from, out_dir)
    return train_tokenizer(training_texts(train_convs), cfg.vocab_size, out_dir)


def training_texts(convs: list[Conversation]) -> Iterator[str]:
    """The texts the tokenizer learns from: session headers and turns, in order."""
    for conv in convs:
        yield from (h for h in conv.session_headers if h)
        yield from (t.text for t in conv.turns if t.text)


# ----------------------------------------------------------------------------- real corpora


def source_path(cfg: DataConfig, builder_cls: type[FileCorpusBuilder]) -> Path:
    """The corpus file to read: `data.source` when set (a local file overrides the
    download), else the official release's, downloaded once into `data_dir`."""
    if cfg.source:
        path = Path(cfg.source)
        if not path.is_file():
            raise UserError(f"source file '{path}': not found; set data.source=PATH to the "
                            f"release's {builder_cls.RELEASE_FILE}, or leave it unset to "
                            "download the release")
        return path
    from longctx.data.builders.download import fetch

    return fetch(builder_cls, Path(cfg.data_dir))


def file_sha256(path: Path) -> str:
    """Full sha256 of a file, read in chunks (corpora can be large)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


MAX_NESTING = 32  # a corpus record is a few levels deep (MSC: dialog -> turn -> field)
_STRINGS = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"')
_NOT_BRACKETS = re.compile(r"[^\[\]{}]+")


def nesting_depth(text: str) -> int:
    """How deeply the JSON `text` nests objects and arrays, found without parsing it (the
    parser recurses once per level, so a line nested thousands deep would exhaust Python's
    stack). Brackets inside strings do not count."""
    depth = deepest = 0
    for ch in _NOT_BRACKETS.sub("", _STRINGS.sub("", text)):
        if ch in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif ch in "]}":
            depth -= 1
    return deepest


def read_jsonl(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, object) of each non-blank line; UserError with file:line otherwise."""
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, 1):
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise UserError(f"{path}:{lineno}: not valid UTF-8 "
                                f"(byte {exc.start}: {exc.reason})") from None
            if not text.strip():
                continue
            depth = nesting_depth(text)
            if depth > MAX_NESTING:
                raise UserError(f"{path}:{lineno}: JSON nested {depth} levels deep (a corpus "
                                f"record needs at most {MAX_NESTING}); fix or remove the line")
            try:
                obj = json.loads(text)
            except json.JSONDecodeError as exc:
                raise UserError(f"{path}:{lineno}: malformed JSON line "
                                f"({exc.msg} at column {exc.colno})") from None
            except ValueError as exc:  # e.g. an integer of more than 4300 digits
                raise UserError(f"{path}:{lineno}: unreadable JSON line ({exc})") from None
            if not isinstance(obj, dict):
                raise UserError(f"{path}:{lineno}: expected a JSON object, got "
                                f"{type(obj).__name__}")
            yield lineno, obj


def require(obj: dict, key: str, kind: type | tuple[type, ...], where: str) -> Any:
    """obj[key] checked to be of `kind`; UserError naming `where` otherwise."""
    if not isinstance(obj, dict):
        raise UserError(f"{where}: expected a JSON object, got {type(obj).__name__}")
    if key not in obj:
        raise UserError(f"{where}: missing '{key}'")
    value = obj[key]
    if not isinstance(value, kind) or isinstance(value, bool):
        raise UserError(f"{where}: '{key}' should be {getattr(kind, '__name__', kind)}, "
                        f"got {type(value).__name__}")
    return value


def read_conversations(path: Path, parse: Callable[[dict, str, int], Conversation]
                       ) -> list[Conversation]:
    """Every line of a JSON-lines corpus parsed by `parse(obj, 'file:line', lineno)` and
    checked; the first problem raises UserError naming the file and line."""
    convs = []
    for lineno, obj in read_jsonl(path):
        where = f"{path}:{lineno}"
        conv = parse(obj, where, lineno)
        try:
            convs.append(validate(conv))
        except UserError as exc:
            raise UserError(f"{where}: {exc}") from None
    return convs


def split_by_hash(convs: list[Conversation], path: Path,
                  fraction: float = 0.1) -> dict[str, list[Conversation]]:
    """Deterministic split: the `fraction` of conversations with the smallest hash of their
    id go to validation (stable under reordering the file); file order is kept."""
    if len(convs) < 2:
        raise UserError(f"{path}: {len(convs)} conversation(s); need at least 2 to split "
                        "into train and validation")
    ids = [c.conv_id for c in convs]
    if len(set(ids)) != len(ids):
        dup = next(i for i in ids if ids.count(i) > 1)
        raise UserError(f"{path}: conversation id '{dup}' appears more than once")
    n_val = max(1, round(fraction * len(convs)))
    ranked = sorted(ids, key=lambda i: hashlib.sha256(i.encode()).hexdigest())
    val = set(ranked[:n_val])
    return {"train": [c for c in convs if c.conv_id not in val],
            "validation": [c for c in convs if c.conv_id in val]}
