"""TFDS builder of QMSum meeting transcripts (Zhong et al., NAACL 2021), training meetings.

Each JSON line is one meeting; its `meeting_transcripts` turns become one long single-
session conversation. Speakers are numbered by first appearance (the speaker token caps
at <|spk7|>: meetings have up to ~100 speakers); markers such as {disfmarker} are kept.
Queries and topics are not used. The file is `data/ALL/jsonl/train.jsonl` of the authors'
repository (github.com/Yale-LILY/QMSum).
"""

from __future__ import annotations

import hashlib
import json

from longctx.data.builders.base import FileCorpusBuilder, require
from longctx.data.conversation import Conversation, Turn
from longctx.errors import UserError


def _meeting(obj: dict, where: str, lineno: int) -> Conversation:
    transcript = require(obj, "meeting_transcripts", list, where)
    conv_id = "qmsum-" + hashlib.sha256(
        json.dumps(transcript, sort_keys=True).encode()).hexdigest()[:12]
    if not transcript:
        raise UserError(f"{where}: conversation '{conv_id}' has no turns")
    speakers: dict[str, int] = {}
    turns = []
    for i, turn in enumerate(transcript):
        name = require(turn, "speaker", str, f"{where}: meeting_transcripts[{i}]")
        text = require(turn, "content", str, f"{where}: meeting_transcripts[{i}]")
        speaker = speakers.setdefault(name, len(speakers))
        turns.append(Turn(speaker, 0, text.strip()))
    return Conversation(conv_id, turns, [""])


class QmsumMeetings(FileCorpusBuilder, skip_registration=True):
    """QMSum training meetings; 10% of meetings (by id hash) validate."""

    name = "longctx_qmsum"
    DESCRIPTION = "QMSum training meeting transcripts, one long conversation a meeting."
    CITATION = ("Zhong et al. QMSum: A New Benchmark for Query-based Multi-domain Meeting "
                "Summarization. NAACL 2021.")

    PREFIX = "qmsum"
    # the file at a pinned commit of the authors' repository; its checksum is not recorded
    # (registered on first download)
    URL = ("https://raw.githubusercontent.com/Yale-LILY/QMSum/"
           "83d7768c1f2b4dfeb091385d3dc7e239b8e5bb7e/data/ALL/jsonl/train.jsonl")
    RELEASE_FILE = "data/ALL/jsonl/train.jsonl"
    parse = staticmethod(_meeting)
