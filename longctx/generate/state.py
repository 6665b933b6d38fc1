"""The dialogue state of a chat, and saving/loading it without pickle.

A `Conversation` holds everything the next reply depends on: the model's decode state
(the architecture's `decode_init` pytree: XL's key/value cache of memory + segment, the
window's ring buffer, ...), every token so far, the turns as text, and the sampler's PRNG
key. `/save NAME` writes `DIR/chats/NAME/`:

- `state-<digest>.npz`: the decode-state leaves (by pytree path), `tokens`, `rng`;
- `meta.json`: format version, model config, checkpoint step, the turns, and the npz's
  file name and SHA-256.

Atomic: the npz is written under a temporary name and renamed, then `meta.json` is
replaced in one `os.replace`; a crash leaves the old save or the new one, never a mix.
Loading checks every file, digest, key, shape and dtype before anything is returned, so a
failed load leaves the caller's conversation untouched.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jax
import numpy as np

from longctx.errors import UserError

# The version of the saved layout; a save of another version is refused, not misread.
FORMAT = "longctx-chat/2"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_DIGEST = re.compile(r"^[0-9a-f]{64}$")


@dataclass
class Turn:
    """One turn as text: who spoke ('user', 'model' or 'session' for a session header)."""

    speaker: str
    text: str


@dataclass
class Conversation:
    """The whole dialogue state; `decode` is the model's decode-state pytree (batch 1)."""

    decode: Any
    tokens: list[int] = field(default_factory=list)
    turns: list[Turn] = field(default_factory=list)
    rng: np.ndarray = field(default_factory=lambda: np.zeros(2, np.uint32))


def chats_dir(workdir: str | Path) -> Path:
    return Path(workdir) / "chats"


def check_name(name: str) -> str:
    """A save name is one path component: letters, digits, '_', '.', '-' (at most 64)."""
    if not _NAME.match(name or ""):
        raise UserError(f"chat name {name!r}: use 1-64 letters, digits, '_', '.' or '-' "
                        "(starting with a letter or digit), e.g. /save monday")
    return name


def save_folder(workdir: str | Path, name: str) -> Path:
    """`workdir/chats/NAME`, refused if a link takes it outside chats/ (a save is read and
    written only there)."""
    chats = chats_dir(workdir)
    folder = chats / check_name(name)
    if folder.exists() and chats.resolve() not in folder.resolve().parents:
        raise UserError(f"{folder}: links outside {chats}; a saved chat must be a folder "
                        "there (remove the link)")
    return folder


def _bits(dtype: np.dtype) -> np.dtype:
    """npz cannot name ml_dtypes (bfloat16 reads back as raw 'V2'): such leaves are stored
    as unsigned integers of the same width and viewed back through the template's dtype."""
    return np.dtype(f"uint{8 * dtype.itemsize}") if dtype.kind == "V" else dtype


def _leaf_names(tree: Any) -> list[tuple[str, Any]]:
    flat, _ = jax.tree_util.tree_flatten_with_path(tree)
    out = []
    for path, leaf in flat:
        arr = np.asarray(leaf)
        out.append(("decode" + jax.tree_util.keystr(path), arr.view(_bits(arr.dtype))))
    return out


def _npz_bytes(conv: Conversation) -> bytes:
    arrays = dict(_leaf_names(conv.decode))
    arrays["tokens"] = np.asarray(conv.tokens, np.int32)
    arrays["rng"] = np.asarray(conv.rng, np.uint32)
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def save(conv: Conversation, workdir: str | Path, name: str, meta: dict[str, Any]) -> Path:
    """Write the conversation to `workdir/chats/name/` atomically; returns that folder."""
    folder = save_folder(workdir, name)
    folder.mkdir(parents=True, exist_ok=True)
    data = _npz_bytes(conv)
    digest = hashlib.sha256(data).hexdigest()
    npz_name = f"state-{digest[:16]}.npz"
    _write_atomic(folder / npz_name, data)
    record = {
        "format": FORMAT,
        **meta,
        "turns": [{"speaker": t.speaker, "text": t.text} for t in conv.turns],
        "num_tokens": len(conv.tokens),
        "state_file": npz_name,
        "state_sha256": digest,
    }
    _write_atomic(folder / "meta.json", json.dumps(record, indent=1).encode())
    for old in folder.glob("state-*.npz"):
        if old.name != npz_name:
            old.unlink(missing_ok=True)
    return folder


def _fail(where: Path, what: str, fix: str) -> UserError:
    return UserError(f"{where}: {what}; {fix} (the current conversation is unchanged)")


def saved_names(workdir: str | Path) -> list[str]:
    folder = chats_dir(workdir)
    return sorted(p.parent.name for p in folder.glob("*/meta.json")) if folder.is_dir() else []


def _model_today(saved: Any) -> Any:
    """A saved model config in today's layout (one saved before the architecture sections,
    with flat keys, migrates as a run's config.json does); as saved if it does not read."""
    from longctx.config import ConfigError, from_dict

    try:
        return from_dict({"model": saved}).model.to_dict() if isinstance(saved, dict) else saved
    except ConfigError:
        return saved


def load(workdir: str | Path, name: str, template: Any, expect: dict[str, Any],
         vocab_size: int) -> Conversation:
    """Read `workdir/chats/name/`; `template` is an empty decode state giving the expected
    leaves, `expect` the meta values that must match (model config...), `vocab_size` the
    bound of every token id. UserError otherwise."""
    try:
        folder = save_folder(workdir, name)
    except UserError as exc:
        raise UserError(f"{exc} (the current conversation is unchanged)") from None
    meta_path = folder / "meta.json"
    if not meta_path.is_file():
        known = ", ".join(saved_names(workdir)) or "none"
        raise _fail(meta_path, f"no saved chat '{name}' (saved chats: {known})",
                    f"check the name, or /save {name} first")
    try:
        meta = json.loads(meta_path.read_text())
        if not isinstance(meta, dict):
            raise ValueError("not a JSON object")
    except (ValueError, RecursionError) as exc:  # ValueError: JSON and UTF-8 alike
        raise _fail(meta_path, f"unreadable JSON ({exc})",
                    f"delete {folder} and save again") from None
    if meta.get("format") != FORMAT:
        raise _fail(meta_path, f"format {meta.get('format')!r} is not {FORMAT!r}",
                    "save it again with this version of longctx")
    for key, want in expect.items():
        have = _model_today(meta.get(key)) if key == "model" else meta.get(key)
        if have != want:
            raise _fail(meta_path, f"saved with a different {key} ({meta.get(key)!r}, this run "
                        f"has {want!r})", "load it with the run that saved it")
    digest = meta.get("state_sha256")
    if not isinstance(digest, str) or not _DIGEST.match(digest):
        raise _fail(meta_path, f"state_sha256 {str(digest)[:80]!r} is not a SHA-256",
                    f"delete {folder} and save again")
    # The state file's name follows from its digest, inside this save's folder: no path is
    # ever taken from meta.json (its `state_file` is informative only).
    npz_path = folder / f"state-{digest[:16]}.npz"
    try:
        data = npz_path.read_bytes()
    except OSError as exc:
        raise _fail(npz_path, f"missing or unreadable state file ({exc.strerror})",
                    f"delete {folder} and save again") from None
    if hashlib.sha256(data).hexdigest() != digest:
        raise _fail(npz_path, "corrupt state file (its SHA-256 does not match meta.json)",
                    f"delete {folder} and save again")
    arrays = _read_npz(data, npz_path, folder)
    try:
        turns = [Turn(_text(t["speaker"]), _text(t["text"])) for t in meta["turns"]]
    except (KeyError, TypeError, ValueError) as exc:
        raise _fail(meta_path, f"unreadable turns ({type(exc).__name__}: {exc})",
                    f"delete {folder} and save again") from None
    tokens = _array(arrays, "tokens", npz_path, np.int32, ndim=1)
    if tokens.size and not (0 <= tokens.min() and tokens.max() < vocab_size):
        bad = int(tokens[(tokens < 0) | (tokens >= vocab_size)][0])
        raise _fail(npz_path, f"token id {bad} is outside this model's vocabulary "
                    f"(0..{vocab_size - 1})", "load it with the run that saved it")
    return Conversation(decode=_restore_tree(template, arrays, npz_path),
                        tokens=tokens.tolist(), turns=turns,
                        rng=_array(arrays, "rng", npz_path, np.uint32, (2,)))


def _text(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(f"{str(value)[:40]!r} is not text")
    return value


def _read_npz(data: bytes, npz_path: Path, folder: Path) -> dict[str, np.ndarray]:
    """Every member of the saved .npz as an array; refuses a member that is not a plain
    .npy array (numpy would hand back a pickle's raw bytes) and any damaged zip."""
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
    except Exception as exc:  # noqa: BLE001 (zipfile, numpy format and OS errors alike)
        raise _fail(npz_path, f"unreadable saved state ({type(exc).__name__}: "
                    f"{' '.join(str(exc).split())[:160]})",
                    f"delete {folder} and save again") from None
    for key, value in arrays.items():
        if not isinstance(value, np.ndarray) or value.dtype.hasobject:
            raise _fail(npz_path, f"member '{key}' is not a plain .npy array",
                        f"delete {folder} and save again")
    return arrays


def _array(arrays: dict, key: str, where: Path, dtype: Any, shape: tuple | None = None,
           ndim: int | None = None):
    if key not in arrays:
        raise _fail(where, f"no array '{key}' in the saved state", "save it again")
    arr = arrays[key]
    if (arr.dtype != dtype or (shape is not None and arr.shape != shape)
            or (ndim is not None and arr.ndim != ndim)):
        raise _fail(where, f"array '{key}' is {arr.dtype}{list(arr.shape)}, expected "
                    f"{np.dtype(dtype)}{list(shape) if shape is not None else ''}",
                    "load it with the run that saved it")
    return arr


def _restore_tree(template: Any, arrays: dict, where: Path) -> Any:
    flat, treedef = jax.tree_util.tree_flatten_with_path(template)
    leaves = []
    for path, leaf in flat:
        name = "decode" + jax.tree_util.keystr(path)
        dtype = np.asarray(leaf).dtype
        arr = _array(arrays, name, where, _bits(dtype), tuple(leaf.shape))
        leaves.append(arr.view(dtype))
    return jax.tree_util.tree_unflatten(treedef, [jax.numpy.asarray(x) for x in leaves])
