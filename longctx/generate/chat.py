"""The message path of a chat with a trained run, in one place.

    send(text) = parse    (tokenizer: the user's turn rendered exactly like training data)
              -> attend   (the model reads it on top of its memory / KV cache)
              -> state    (the dialogue state takes the turn: tokens, text, decode state)
              -> respond  (the sampler writes the reply token by token, fed back as it goes)

The stream looks like the training data (`longctx.data.render`): `<|bos|> <|session|>`
header, then per turn `<|spkS|> text <|eot|>`; the user is speaker 0, the model speaker 1.
Nothing is committed to the dialogue state until a reply is complete, so an interrupted
reply or a failed command leaves the conversation as it was.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import jax
import numpy as np

from longctx.data.tokenizer import encode_text, special_ids
from longctx.errors import UserError
from longctx.generate import state as saved
from longctx.generate.sampler import SamplerSettings
from longctx.generate.state import Conversation, Turn
from longctx.generate.streaming import Stream
from longctx.rundir import Run

USER, MODEL = 0, 1  # speaker indices of the user and the model


class Chat:
    """One conversation with a run; every public method keeps the state consistent."""

    def __init__(self, run: Run, settings: SamplerSettings, seed: int = 0) -> None:
        if run.tokenizer is None:
            raise UserError(f"{run.workdir}/tokenizer: missing; chat needs the run's tokenizer")
        self.run, self.settings, self.seed = run, settings, seed
        self.tokenizer = run.tokenizer
        self.special = special_ids(self.tokenizer)
        self.stream = Stream(run.cfg.model, run.params)
        self.knobs = settings.knobs()
        self.conv = self.fresh()

    # ------------------------------------------------------------------ the message path

    def parse(self, text: str, speaker: int = USER) -> np.ndarray:
        """1. parse: a turn as training renders it (`<|spkS|> text <|eot|>`); a user turn
        is followed by the model's speaker token, which opens the reply."""
        text = text.strip()
        if not text:
            raise UserError("empty turn: type something, or /help for the commands")
        sp = self.special
        body = encode_text(self.tokenizer, text).ids  # '<|eot|>' typed is text, not a token
        opens = [sp[f"spk{MODEL}"]] if speaker == USER else []
        return np.asarray([sp[f"spk{speaker}"], *body, sp["eot"], *opens], np.int32)

    def attend(self, conv: Conversation, tokens: np.ndarray):
        """2. attend: the model reads the tokens on top of its state -> (logits, decode)."""
        return self.stream.feed(conv.decode, tokens)

    def commit(self, conv: Conversation, decode, tokens, turns: list[Turn], rng) -> Conversation:
        """3. dialogue state: the next state holds the new tokens, turns, decode state, RNG."""
        return Conversation(decode=decode, tokens=[*conv.tokens, *map(int, tokens)],
                            turns=[*conv.turns, *turns], rng=np.asarray(rng, np.uint32))

    def respond(self, logits, decode, rng, on_text: Callable[[str], None] | None = None):
        """4. respond: sample until an end of turn (or any other special token, which cannot
        be inside a turn) or the length limit, feeding each kept token back; then close the
        turn with <|eot|>. -> (reply token ids, decode state, rng)."""
        eot, limit = self.special["eot"], self.settings.max_new_tokens
        key = jax.numpy.asarray(rng, jax.numpy.uint32)
        token, key = self.stream.sample(logits, key, self.knobs)
        ids: list[int] = []
        shown = ""
        while True:
            t = int(token[0])
            if t < len(self.special) or len(ids) >= limit - 1:  # room left for <|eot|>
                break
            ids.append(t)
            text = self.decode(ids)
            if on_text is not None and not text.endswith("\ufffd"):
                on_text(text[len(shown):])
                shown = text
            token, decode, key, _ = self.stream.reply_step(decode, token, key, self.knobs)
        _, decode = self.stream.feed(decode, np.asarray([eot], np.int32))
        text = self.decode(ids)
        if on_text is not None and len(text) > len(shown):
            on_text(text[len(shown):])
        return ids, decode, np.asarray(key)

    def send(self, text: str, on_text: Callable[[str], None] | None = None) -> str:
        """The whole path for one user turn; returns the reply text (streamed to on_text)."""
        conv = self.conv
        prompt = self.parse(text)
        logits, decode = self.attend(conv, prompt)
        ids, decode, rng = self.respond(logits, decode, conv.rng, on_text)
        reply = self.decode(ids)
        fed = [*prompt, *ids, self.special["eot"]]
        self.conv = self.commit(conv, decode, fed, [Turn("user", text.strip()),
                                                    Turn("model", reply)], rng)
        return reply

    # ------------------------------------------------------------------ commands

    def plant(self, text: str) -> None:
        """Put words in the model's mouth: a model turn read but not sampled (e.g. a fact it
        can be asked about later, to watch what it remembers)."""
        tokens = self.parse(text, speaker=MODEL)
        _, decode = self.attend(self.conv, tokens)
        self.conv = self.commit(self.conv, decode, tokens, [Turn("model", text.strip())],
                                self.conv.rng)

    def fresh(self) -> Conversation:
        """A new conversation: `<|bos|>` then the first session's `<|session|>`."""
        conv = Conversation(decode=self.stream.init(), rng=np.asarray(
            jax.random.PRNGKey(self.seed), np.uint32))
        return self._start_session(conv, "")

    def _start_session(self, conv: Conversation, header: str) -> Conversation:
        sp = self.special
        head = encode_text(self.tokenizer, header).ids
        tokens = ([sp["bos"]] if not conv.tokens else []) + [sp["session"], *head]
        _, decode = self.stream.feed(conv.decode, np.asarray(tokens, np.int32))
        return self.commit(conv, decode, tokens, [Turn("session", header)], conv.rng)

    def new_session(self, header: str = "") -> None:
        """Start a new session (a gap in time, e.g. '3 days later'), as the data marks it."""
        self.conv = self._start_session(self.conv, header.strip())

    def reset(self) -> None:
        """Forget everything: a fresh conversation with the starting seed."""
        self.conv = self.fresh()

    def _meta(self) -> dict:
        return {"model": self.run.cfg.model.to_dict()}

    def save(self, name: str) -> Path:
        return saved.save(self.conv, self.run.workdir, name,
                          {**self._meta(), "checkpoint_step": self.run.step})

    def load(self, name: str) -> None:
        """Replace the conversation by a saved one; on any error the current one stays."""
        self.conv = saved.load(self.run.workdir, name, self.stream.init(), self._meta(),
                               self.run.cfg.model.n_token)

    def stats(self) -> dict:
        """Tokens so far, turns, and how much of the attention span is in use."""
        used, most = self.stream.span_in_use(self.conv.decode)
        out = {"arch": self.run.cfg.model.arch, "tokens": len(self.conv.tokens),
               "turns": sum(t.speaker != "session" for t in self.conv.turns),
               "sessions": sum(t.speaker == "session" for t in self.conv.turns),
               "span_in_use": used, "span_max": most}
        out["state"] = self.stream.stats(self.conv.decode)  # the architecture's own numbers
        return out

    def decode(self, ids: list[int]) -> str:
        return self.tokenizer.backend_tokenizer.decode(ids, skip_special_tokens=True)
