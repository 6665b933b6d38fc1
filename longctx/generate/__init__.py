"""longctx.generate: talking to a trained XL or sliding-window run.

- `sampler.py`: greedy / temperature / top-k / top-p token choice, seeded, jit-friendly.
- `streaming.py`: `Stream`, one interface over the models' decode states (history in
  segment mode, replies token by token; fixed shapes, compiled once).
- `state.py`: the dialogue state (`Conversation`) and its pickle-free, atomic save/load.
- `chat.py`: `Chat`, the message path parse -> attend -> dialogue state -> respond.
- `commands.py`: the `longctx chat` command and its /commands.
"""
