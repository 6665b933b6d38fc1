"""One byte-level BPE per dataset, trained on its training split, saved and loaded offline.

Every model compared on a dataset shares its tokenizer, so it is trained once when the
dataset is built and saved beside it with `save_pretrained` (training copies the folder
into each run directory). Training is deterministic: the same texts give the same
`tokenizer.json`, byte for byte. A dataset can instead take an existing tokenizer
(`data.tokenizer_from`: its files copied byte for byte), so that a run trained on one
dataset can be warm-started on another (`train.init_from` checks the tokenizer's files).
"""

from __future__ import annotations

import hashlib
import os
import shutil
from collections.abc import Iterable
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from longctx.errors import UserError

PAD, BOS, EOS = "<|pad|>", "<|bos|>", "<|eos|>"
EOT = "<|eot|>"  # end of a turn
SESSION = "<|session|>"  # a new session: a gap in time (its header text follows)
MAX_SPEAKERS = 8  # speaker i renders as <|spk{min(i, 7)}|> (QMSum meetings have more)
SPEAKERS = tuple(f"<|spk{i}|>" for i in range(MAX_SPEAKERS))
SPECIAL_TOKENS = (PAD, BOS, EOS, EOT, SESSION, *SPEAKERS)  # ids 0 .. 12, in this order

# special_ids keys: 'pad', 'bos', 'eos', 'eot', 'session', 'spk0' .. 'spk7'
SPECIAL_NAMES = ("pad", "bos", "eos", "eot", "session", *(f"spk{i}" for i in range(MAX_SPEAKERS)))


def train_tokenizer(texts: Iterable[str], vocab_size: int, out_dir: str | Path):
    """Train a byte-level BPE on `texts`, save it as a PreTrainedTokenizerFast in `out_dir`."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    wrapped = _wrap(tok)
    wrapped.save_pretrained(str(out_dir))
    return load_tokenizer(out_dir)


def _wrap(tok: Tokenizer):
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token=PAD,
        bos_token=BOS,
        eos_token=EOS,
        additional_special_tokens=[EOT, SESSION, *SPEAKERS],
    )


def load_tokenizer(path: str | Path):
    """Load a saved tokenizer from a local folder (never the network)."""
    from transformers import PreTrainedTokenizerFast

    return _read(Path(path), lambda p: PreTrainedTokenizerFast.from_pretrained(
        str(p), local_files_only=True))


def _read(path: Path, reader):
    """`reader(path)` for a saved tokenizer folder; a missing or damaged tokenizer.json is
    one line naming the folder and how to fix it."""
    if not (path / "tokenizer.json").is_file():
        raise UserError(f"tokenizer folder '{path}': no tokenizer.json; rebuild the dataset")
    try:
        return reader(path)
    except Exception as exc:  # noqa: BLE001 (tokenizers, json, OS and transformers errors)
        text = " ".join(str(exc).split()) or type(exc).__name__
        raise UserError(f"tokenizer folder '{path}': unreadable ({text:.200}); delete the "
                        "dataset folder and rebuild it (longctx data build)") from None


def vocabulary(path: str | Path) -> tuple[int, dict[str, int]]:
    """(vocabulary size, special ids) of a saved tokenizer, read with `tokenizers` alone:
    what training needs, without importing transformers (~1 s of a process's start-up).
    Equal to `len(load_tokenizer(path))` and `special_ids(load_tokenizer(path))`."""
    path = Path(path)
    tok = _read(path, lambda p: Tokenizer.from_file(str(p / "tokenizer.json")))
    ids = _checked_special_ids(tok.token_to_id, str(path))
    return tok.get_vocab_size(with_added_tokens=True), ids


def text_backend(tokenizer) -> Tokenizer:
    """The fast backend of `tokenizer`, set to read special-token spellings in text as plain
    text (`encode_special_tokens`): a corpus line or a chat message that contains
    '<|eot|>' becomes the bytes '<', '|', 'eot', ... and never the control token. Control
    tokens enter a stream only where `render` (or chat) inserts them as ids."""
    backend = tokenizer.backend_tokenizer
    backend.encode_special_tokens = True
    return backend


def encode_text(tokenizer, text: str):
    """`text` as plain-text tokens (a `tokenizers.Encoding`; no special token ids)."""
    return text_backend(tokenizer).encode(text, add_special_tokens=False)


def encode_texts(tokenizer, texts: list[str]) -> list:
    """Several texts as plain-text tokens (`encode_text` for each, batched)."""
    return text_backend(tokenizer).encode_batch(texts, add_special_tokens=False)


def special_ids(tokenizer) -> dict[str, int]:
    """Ids of the special tokens by name ('pad', 'bos', 'eos', 'eot', 'session', 'spk0'..)."""
    where = getattr(tokenizer, "name_or_path", "") or "the tokenizer"
    return _checked_special_ids(tokenizer.convert_tokens_to_ids, where)


def _checked_special_ids(token_to_id, where: str) -> dict[str, int]:
    """{name: id} of the special tokens, which a longctx tokenizer holds as ids 0..12 in
    SPECIAL_TOKENS' order (anything else is one line naming `where`)."""
    ids = {name: token_to_id(tok) for name, tok in zip(SPECIAL_NAMES, SPECIAL_TOKENS, strict=True)}
    if list(ids.values()) != list(range(len(SPECIAL_TOKENS))):
        raise UserError(f"{where}: not a longctx tokenizer (special tokens {ids}, expected ids "
                        f"0..{len(SPECIAL_TOKENS) - 1} in the order {', '.join(SPECIAL_TOKENS)})")
    return ids


TOKENIZER_FROM = "config key 'data.tokenizer_from'"
_GIVE = ("give a run directory, a built dataset's folder (each holds tokenizer/) or a "
         "tokenizer folder (holds tokenizer.json)")


def files_sha256(folder: str | Path) -> str:
    """SHA-256 over a folder's files (names and bytes, sorted): a tokenizer's identity."""
    digest = hashlib.sha256()
    for f in sorted(p for p in Path(folder).iterdir() if p.is_file()):
        digest.update(f.name.encode())
        digest.update(f.read_bytes())
    return digest.hexdigest()


def given_tokenizer_dir(path: str | Path) -> Path:
    """The tokenizer folder `data.tokenizer_from` names (absolute): the folder itself when
    it holds tokenizer.json, else its tokenizer/ subfolder (a run or dataset directory)."""
    where = Path(path).expanduser().absolute()
    if not where.exists():
        raise UserError(f"{TOKENIZER_FROM}: {where}: no such directory; {_GIVE}")
    if not where.is_dir():
        raise UserError(f"{TOKENIZER_FROM}: {where} is a file, not a directory; {_GIVE}")
    for folder in (where, where / "tokenizer"):
        if (folder / "tokenizer.json").is_file():
            return folder
    raise UserError(f"{TOKENIZER_FROM}: {where} holds neither tokenizer.json nor "
                    f"tokenizer/tokenizer.json; {_GIVE}")


def copy_tokenizer(path: str | Path, out_dir: str | Path):
    """The tokenizer `data.tokenizer_from` names, checked to be a longctx tokenizer (one
    line otherwise), its files copied byte for byte into `out_dir`; loaded from there."""
    src = given_tokenizer_dir(path)
    try:
        special_ids(load_tokenizer(src))
    except UserError as exc:
        reason = str(exc).split(": ", 1)[-1].split("; ")[0]
        raise UserError(f"{TOKENIZER_FROM}: {src}: {reason}; {_GIVE}") from None
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for f in sorted(p for p in src.iterdir() if p.is_file()):
        shutil.copyfile(f, out / f.name)
    return load_tokenizer(out)
