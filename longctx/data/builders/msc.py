"""TFDS builder of Multi-Session Chat (Xu, Szlam & Weston, ACL 2022), session-3 episodes.

Each JSON line is one episode: sessions 1-2 in `previous_dialogs` (each with the time gap
to the next session) and session 3 in `dialog`. Turns alternate between the two speakers,
speaker 0 first, in every session (session-3 `id`s are not always 'Speaker 1/2').
A session header says the gap in time, e.g. '5 days later'. The file is
`msc/msc_dialogue/session_3/test.txt` of ParlAI's `msc_v0.1.tar.gz`.
"""

from __future__ import annotations

from longctx.data.builders.base import FileCorpusBuilder, require
from longctx.data.conversation import Conversation, Turn
from longctx.errors import UserError


def _episode(obj: dict, where: str, lineno: int) -> Conversation:
    previous = require(obj, "previous_dialogs", list, where)
    sessions = [require(p, "dialog", list, f"{where}: previous_dialogs[{k}]")
                for k, p in enumerate(previous)] + [require(obj, "dialog", list, where)]
    headers = [""]
    for k, p in enumerate(previous):
        num = require(p, "time_num", (int, float), f"{where}: previous_dialogs[{k}]")
        unit = require(p, "time_unit", str, f"{where}: previous_dialogs[{k}]")
        headers.append(f"{num:g} {unit} later")
    meta = obj.get("metadata") if isinstance(obj.get("metadata"), dict) else {}
    conv_id = f"msc-{meta.get('initial_data_id', f'line{lineno}')}"
    turns = []
    for s, dialog in enumerate(sessions):
        if not dialog:
            raise UserError(f"{where}: conversation '{conv_id}' session {s + 1} has no turns")
        for i, turn in enumerate(dialog):
            text = require(turn, "text", str, f"{where}: session {s + 1} turn {i}")
            turns.append(Turn(i % 2, s, text.strip()))
    return Conversation(conv_id, turns, headers)


class MscDialogues(FileCorpusBuilder, skip_registration=True):
    """Multi-Session Chat: 3 sessions an episode; 10% of episodes (by id hash) validate."""

    name = "longctx_msc"
    DESCRIPTION = "Multi-Session Chat session-3 episodes (3 sessions each), as token streams."
    CITATION = ("Xu, Szlam and Weston. Beyond Goldfish Memory: Long-Term Open-Domain "
                "Conversation. ACL 2022.")

    PREFIX = "msc"
    # ParlAI's release; its checksum is not recorded (registered on first download), the
    # member's is (checksums.tsv).
    URL = "http://parl.ai/downloads/msc/msc_v0.1.tar.gz"
    MEMBER = "msc/msc_dialogue/session_3/test.txt"
    RELEASE_FILE = MEMBER
    parse = staticmethod(_episode)
