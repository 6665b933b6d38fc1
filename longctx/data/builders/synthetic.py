"""TFDS builder of the synthetic long-dialogue memory benchmark (`longctx.data.dialogues`)."""

from __future__ import annotations

from longctx.config import DataConfig
from longctx.data import dialogues
from longctx.data.builders.base import DialogueBuilder
from longctx.data.conversation import Conversation


class SyntheticDialogues(DialogueBuilder, skip_registration=True):
    """Two-speaker, multi-session dialogues with facts recalled at planned distances."""

    name = "longctx_synthetic"
    DESCRIPTION = ("Synthetic two-speaker multi-session dialogues: persona facts stated once "
                   "and asked back by the other speaker at log-spread distances.")

    @classmethod
    def dir_name(cls, cfg: DataConfig) -> str:
        return (f"synthetic-{cls.VERSION}-n{cfg.num_train}-{cfg.num_validation}"
                f"-w{cfg.span}-v{cfg.vocab_size}-s{cfg.seed}")

    @classmethod
    def read(cls, cfg: DataConfig) -> dict[str, list[Conversation]]:
        return {
            "train": dialogues.generate_split("train", cfg.num_train, cfg.span, cfg.seed),
            "validation": dialogues.generate_split("validation", cfg.num_validation, cfg.span,
                                                   cfg.seed),
        }

    @classmethod
    def slot_values(cls, slot: str) -> tuple[str, ...]:
        return dialogues.slot_values(slot)
