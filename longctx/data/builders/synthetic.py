"""TFDS builder of the synthetic long-dialogue memory benchmark (`longctx.data.synthetic_dialogues`)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from longctx.config import DataConfig
from longctx.data import synthetic_dialogues
from longctx.data.builders.base import DialogueBuilder, make_tokenizer, vocab_tag
from longctx.data.conversation import Conversation
from longctx.data.render import value_ids
from longctx.data.slots import SLOTS
from longctx.data.synthetic_dialogues import NUM_CANDIDATES
from longctx.data.tokenizer import copy_tokenizer, encode_texts
from longctx.errors import UserError

RATIO_TOLERANCE = 0.05
MAX_ROUNDS = 12


class SyntheticDialogues(DialogueBuilder, skip_registration=True):
    """Two-speaker, multi-session dialogues with facts recalled at planned distances."""

    name = "longctx_synthetic"
    DESCRIPTION = ("Synthetic two-speaker multi-session dialogues: persona facts stated once "
                   "and asked back by the other speaker at log-spread distances.")

    @classmethod
    def dir_name(cls, cfg: DataConfig) -> str:
        echo = f"-e{cfg.echo:g}" if cfg.echo > 0 else ""
        near = f"-near{cfg.train_near:g}" if cfg.train_near > 0 else ""
        near += f"to{cfg.train_near_max:g}" if near and cfg.train_near_max != 1.0 else ""
        ack = f"-ack{cfg.train_ack:g}" if cfg.train_ack > 0 else ""
        return (f"synthetic-{cls.VERSION}-n{cfg.num_train}-{cfg.num_validation}"
                f"-w{cfg.span}-{vocab_tag(cfg)}-s{cfg.seed}{echo}{near}{ack}")

    @classmethod
    def read(cls, cfg: DataConfig, values: dict[str, tuple[str, ...]] | None = None,
             chars_per_token: float = synthetic_dialogues.CHARS_PER_TOKEN
             ) -> dict[str, list[Conversation]]:
        return {split: synthetic_dialogues.generate_split(split, num, cfg.span, cfg.seed, values,
                                                chars_per_token, cfg.echo, cfg.train_near,
                                                cfg.train_ack, cfg.train_near_max)
                for split, num in (("train", cfg.num_train),
                                   ("validation", cfg.num_validation))}

    @classmethod
    def tokenize(cls, cfg: DataConfig, splits: dict[str, list[Conversation]], out_dir: Path
                 ) -> tuple[dict[str, list[Conversation]], Any, dict[str, Any]]:
        """Train the tokenizer on the training split; then, until both hold, generate the
        conversations again and retrain:

        * every probe value has >= NUM_CANDIDATES - 1 distractors of its token length in
          its slot: a value whose length too few values share is dropped (with its whole
          length class, so the classes left keep their size). The sets only shrink, and a
          dropped value changes only the facts that drew it. The final sets are the
          dataset's `slot_values` (training never sees a value outside them).
        * distances were planned with the tokenizer's real characters per token (within
          RATIO_TOLERANCE), so the probes fill the distance buckets as planned.

        Two to four rounds in practice. A tokenizer given by `data.tokenizer_from` is
        copied once, not trained: only the values and the ratio adjust to it.
        """
        pool = {slot.name: slot.values for slot in SLOTS}
        ratio = synthetic_dialogues.CHARS_PER_TOKEN
        given = copy_tokenizer(cfg.tokenizer_from, out_dir) if cfg.tokenizer_from else None
        for _ in range(MAX_ROUNDS):
            tokenizer = given if given is not None else make_tokenizer(cfg, splits["train"],
                                                                       out_dir)
            pool = {slot: _common_lengths(tokenizer, values) for slot, values in pool.items()}
            measured = _chars_per_token(tokenizer, splits["train"])
            settled = abs(measured / ratio - 1) <= RATIO_TOLERANCE
            if settled and all(p.value in pool[p.slot] for convs in splits.values()
                               for c in convs for p in c.probes):
                return splits, tokenizer, {"slot_values": {k: list(v) for k, v in pool.items()},
                                           "chars_per_token": ratio}
            ratio = ratio if settled else measured
            splits = cls.read(cfg, pool, ratio)
        fix = ("give data.tokenizer_from a tokenizer trained on similar text, or leave it "
               "unset" if cfg.tokenizer_from else "raise data.num_train or data.vocab_size")
        raise UserError(f"synthetic slot values did not settle in {MAX_ROUNDS} rounds of "
                        f"tokenizer training; {fix}")


def _common_lengths(tokenizer, pool: tuple[str, ...]) -> tuple[str, ...]:
    lengths = {v: len(value_ids(tokenizer, v)) for v in pool}
    count = Counter(lengths.values())
    return tuple(v for v in pool if count[lengths[v]] >= NUM_CANDIDATES)


def _chars_per_token(tokenizer, convs: list[Conversation], sample: int = 100) -> float:
    """Characters per token of the turns of (the first `sample`) conversations."""
    texts = [t.text for c in convs[:sample] for t in c.turns]
    tokens = sum(len(e.ids) for e in encode_texts(tokenizer, texts))
    return sum(map(len, texts)) / max(tokens, 1)
