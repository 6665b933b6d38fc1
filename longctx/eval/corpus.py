"""Which conversations an evaluation reads: the run's own built dataset, or any corpus (a
user's file with `--source`, else the release its builder downloads into the run's
data_dir) rendered with the run's OWN tokenizer.

Evaluating on another corpus never builds a dataset and never trains a tokenizer: its
text conversations are read and checked by the corpus's builder (`read` / `parse`, every
problem one line naming the file and line), split as that builder splits, and rendered
token by token with the tokenizer saved in the run directory. The file evaluated and its
sha256 are recorded, so eval.json says exactly which text the numbers are about.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from longctx.errors import UserError

SPLITS = ("train", "validation", "all")  # 'all': every conversation, in file order


@dataclass
class Corpus:
    """Tokenized conversations of one split, how to encode slot values, and provenance."""

    name: str
    split: str
    convs: list  # TokenizedConversation
    value_tokens: Callable[[str], list[np.ndarray]]
    tokenizer: Any
    source: dict[str, str] | None  # {"path", "sha256"} of the corpus file; None: generated


def _provenance(path: Path) -> dict[str, str]:
    from longctx.data.builders.base import file_sha256

    return {"path": str(path.resolve()), "sha256": file_sha256(path)}


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise UserError(f"unknown split '{split}' (known: {', '.join(SPLITS)})")


def _source_file(source: str) -> Path:
    path = Path(source)
    if not path.is_file():
        what = "is a directory" if path.is_dir() else "not found"
        raise UserError(f"--source '{path}': {what}; pass a corpus file (JSON lines)")
    return path


def _text_split(builder_cls, data_cfg, split: str, path: Path | None) -> list:
    """The text conversations of `split`, read and checked by the corpus's builder."""
    from longctx.data.builders.base import FileCorpusBuilder, read_conversations, split_by_hash

    if issubclass(builder_cls, FileCorpusBuilder):
        convs = read_conversations(path, builder_cls.parse)
        if split == "all":
            return convs
        try:
            return split_by_hash(convs, path)[split]
        except UserError as exc:
            raise UserError(f"{exc}; or evaluate every conversation with --split all") from None
    splits = builder_cls.read(data_cfg)
    if split == "all":
        return splits["train"] + splits["validation"]
    return splits[split]


def _own_dataset(run, split: str) -> Corpus | None:
    """The run's own dataset as built for training (its records, its tokenizer); None when
    a real corpus is not built here or was built with another tokenizer (then it is read
    and rendered like any other corpus: nothing is built, no tokenizer trained)."""
    from longctx.data.builders import builder_class
    from longctx.data.builders.base import FileCorpusBuilder, source_path
    from longctx.data.dataset import MANIFEST, dataset_dir, prepare_dataset
    from longctx.data.render import value_ids

    data_cfg = run.cfg.data
    builder_cls = builder_class(data_cfg.name)
    file_corpus = issubclass(builder_cls, FileCorpusBuilder)
    path = None
    if file_corpus:
        if data_cfg.source and not Path(data_cfg.source).is_file():
            raise UserError(f"source file '{data_cfg.source}': not found; pass --source FILE")
        path = source_path(data_cfg, builder_cls)  # data.source, else the release's
        if not (dataset_dir(data_cfg) / MANIFEST).is_file():
            return None
    ds = prepare_dataset(data_cfg)  # synthetic: generated as training generated it
    tok = run.tokenizer if run.tokenizer is not None else ds.tokenizer
    if tok.get_vocab() != ds.tokenizer.get_vocab():
        if file_corpus:
            return None
        from longctx.data.render import render

        texts = (ds.texts("train") + ds.texts("validation") if split == "all"
                 else ds.texts(split))
        convs = [render(c, tok) for c in texts]
    else:
        convs = (ds.conversations("train") + ds.conversations("validation")
                 if split == "all" else ds.conversations(split))

    def values(slot: str) -> list[np.ndarray]:
        return [value_ids(tok, v) for v in ds.slot_values(slot)]

    return Corpus(data_cfg.name, split, convs, values, tok,
                  _provenance(path) if path is not None else None)


def _other_corpus(run, name: str, split: str, source: str | None,
                  max_conversations: int) -> Corpus:
    """Another corpus (or a user's file) rendered with the run's own tokenizer."""
    from longctx.data.builders import builder_class
    from longctx.data.builders.base import FileCorpusBuilder, source_path
    from longctx.data.render import render, value_ids

    builder_cls = builder_class(name)
    if run.tokenizer is None:
        raise UserError(f"{run.workdir}: no tokenizer/ folder, so it can only be evaluated "
                        "on its own dataset; import it with --tokenizer")
    file_corpus = issubclass(builder_cls, FileCorpusBuilder)
    if source is not None and not file_corpus:
        raise UserError(f"--source does not apply to dataset '{name}' (it is generated); "
                        "use it with msc or qmsum")
    path = None
    if file_corpus:  # --source, else the run's data.source for its own corpus, else download
        own_source = run.cfg.data.source if name == run.cfg.data.name else ""
        if source is None and own_source and not Path(own_source).is_file():
            raise UserError(f"source file '{own_source}': not found; pass --source FILE")
        path = _source_file(source) if source is not None else source_path(
            dataclasses.replace(run.cfg.data, name=name, source=own_source), builder_cls)
    data_cfg = dataclasses.replace(run.cfg.data, name=name,
                                   source=str(path) if path is not None else "")
    texts = _text_split(builder_cls, data_cfg, split, path)
    if max_conversations > 0:
        texts = texts[:max_conversations]
    tok = run.tokenizer
    convs = [render(c, tok) for c in texts]
    pools: dict[str, tuple[str, ...]] = {}
    if not file_corpus:  # synthetic: every value of each slot, as the generator draws them
        from longctx.data.slots import SLOTS

        pools = {slot.name: tuple(slot.values) for slot in SLOTS}

    def values(slot: str) -> list[np.ndarray]:
        return [value_ids(tok, v) for v in pools.get(slot, ())]

    return Corpus(name, split, convs, values, tok,
                  _provenance(path) if path is not None else None)


def load_corpus(run, dataset: str | None = None, split: str = "validation",
                max_conversations: int = 0, source: str | None = None) -> Corpus:
    """The conversations to evaluate `run` on, tokenized with the run's tokenizer."""
    _check_split(split)
    name = dataset or run.cfg.data.name
    corpus = None
    if name == run.cfg.data.name and source is None:
        corpus = _own_dataset(run, split)
        if corpus is not None and max_conversations > 0:
            corpus.convs = corpus.convs[:max_conversations]
    if corpus is None:
        corpus = _other_corpus(run, name, split, source, max_conversations)
    if not corpus.convs:
        where = f" of {corpus.source['path']}" if corpus.source else ""
        raise UserError(f"dataset '{name}' split '{split}'{where} has no conversations")
    top = max(int(c.ids.max()) for c in corpus.convs)
    if top >= run.cfg.model.n_token:
        raise UserError(f"{run.workdir}: token id {top} of dataset '{name}' is outside "
                        f"the model's vocabulary ({run.cfg.model.n_token}); give the run a "
                        "tokenizer/ folder matching its weights")
    cache: dict[str, list[np.ndarray]] = {}
    encode = corpus.value_tokens

    def cached(slot: str) -> list[np.ndarray]:
        if slot not in cache:
            cache[slot] = encode(slot)
        return cache[slot]

    corpus.value_tokens = cached
    return corpus
