"""`longctx chat --workdir DIR`: talk to a trained run (any architecture that decodes).

Each line is a turn, or a command: /save NAME, /load NAME, /reset, /session [HEADER],
/model TEXT, /stats, /help, /quit. With a terminal the reply streams token by token after `model> `;
with standard input not a terminal (scripting) each input line is echoed after `you> `
and the exit status is 1 if any command or turn failed (each failure is reported on one
line and the conversation goes on unchanged).
"""

from __future__ import annotations

import argparse
import sys
from typing import TextIO

from longctx.errors import UserError

HELP = """commands:
  /save NAME         save the whole conversation state to DIR/chats/NAME/
  /load NAME         continue a saved conversation
  /reset             forget everything and start again
  /session [HEADER]  start a new session (a gap in time, e.g. /session 3 days later)
  /model TEXT        a model turn you write (plant a fact to ask about later)
  /stats             tokens so far, turns, attention span in use
  /help              this text
  /quit              leave (also end of input / Ctrl-D)"""


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("chat", help="chat with a trained run (XL, sliding window, ...)",
                              description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workdir", required=True, help="run directory (from longctx train)")
    p.add_argument("--seed", type=int, default=0, help="sampler PRNG seed")
    p.add_argument("--temperature", type=float, default=0.8, help="0 = greedy")
    p.add_argument("--top-k", type=int, default=0, help="0 = off")
    p.add_argument("--top-p", type=float, default=1.0, help="1 = off")
    p.add_argument("--max-new-tokens", type=int, default=64, help="reply length limit")
    p.add_argument("--step", type=int, default=None, help="checkpoint step (default latest)")
    p.set_defaults(func=run_chat)


def run_chat(args: argparse.Namespace) -> int:
    from longctx.fsguard import check_dir_arg
    from longctx.generate.chat import Chat
    from longctx.generate.sampler import SamplerSettings, check_seed
    from longctx.models import archs
    from longctx.rundir import load_run

    settings = SamplerSettings(args.temperature, args.top_k, args.top_p, args.max_new_tokens)
    check_seed(args.seed)
    if args.step is not None and args.step < 0:
        raise UserError(f"--step: must be >= 0, got {args.step}")
    workdir = check_dir_arg(args.workdir, "--workdir")
    if not workdir.is_dir():
        raise UserError(f"--workdir {workdir}: no such directory")
    # a line that is not UTF-8 is read with U+FFFD in place of its bad bytes, not a traceback
    if hasattr(sys.stdin, "reconfigure"):
        sys.stdin.reconfigure(errors="replace")
    run = load_run(workdir, args.step)
    chat = Chat(run, settings, seed=args.seed)
    interactive = sys.stdin.isatty()
    if interactive:
        import readline  # noqa: F401  (gives input() line editing and history)
        cfg = run.cfg.model
        print(f"longctx chat: {cfg.arch} run {run.workdir} (step {run.step}, span "
              f"{archs.span(cfg)}); /help for commands, Ctrl-D to leave")
    return repl(chat, sys.stdin, sys.stdout, sys.stderr, interactive)


def repl(chat, stdin: TextIO, out: TextIO, err: TextIO, interactive: bool) -> int:
    """Read turns and commands until /quit or end of input; returns the exit status."""
    failed = False
    while True:
        line = _read_line(stdin, out, interactive)
        if line is None:
            break
        if not line.strip():
            continue
        if not interactive:
            out.write(f"you> {line}\n")
        try:
            if line.startswith("/"):
                if not command(chat, line.strip(), out):
                    break
            else:
                out.write("model> ")
                out.flush()
                chat.send(line, on_text=lambda s: (out.write(s), out.flush()))
                out.write("\n")
        except UserError as exc:
            failed = True
            out.flush()
            err.write(f"longctx chat: error: {exc}\n")
            err.flush()
        except KeyboardInterrupt:
            out.write("\n(interrupted: that turn is dropped, the conversation is as before)\n")
        out.flush()
    return 1 if failed and not interactive else 0


def _read_line(stdin: TextIO, out: TextIO, interactive: bool) -> str | None:
    """The next line without its newline, or None at the end of input."""
    if interactive:  # input() gives line editing and history (readline)
        try:
            return input("you> ")
        except EOFError:
            out.write("\n")
            return None
    line = stdin.readline()
    return line.rstrip("\n") if line else None


def _save(chat, name: str):
    """/save: the only write chat makes into the run, so it holds the run's lock only while
    it writes; a full or read-only disk is one line and leaves no temporary file."""
    import os
    from pathlib import Path

    from longctx.fsguard import machine_limits
    from longctx.rundir.lock import RunLock

    chats = Path(chat.run.workdir) / "chats"
    folder = chats / name
    new = [p for p in (folder, chats) if not p.exists()]  # this save creates them

    def cleanup() -> None:
        for tmp in folder.glob(f".*.tmp{os.getpid()}") if folder.is_dir() else []:
            tmp.unlink(missing_ok=True)
        for made in new:
            if made.is_dir() and not any(made.iterdir()):
                made.rmdir()

    with RunLock(chat.run.workdir, "chat", create=False), \
            machine_limits(f"/save {name}", f"cannot write {folder}", cleanup=cleanup):
        return chat.save(name)


def command(chat, line: str, out: TextIO) -> bool:
    """Run one /command; False means leave."""
    name, _, arg = line.partition(" ")
    arg = arg.strip()
    if name in ("/quit", "/exit"):
        return False
    if name == "/help":
        out.write(HELP + "\n")
    elif name == "/save":
        folder = _save(chat, arg)
        out.write(f"[saved {len(chat.conv.tokens)} tokens to {folder}]\n")
    elif name == "/load":
        chat.load(arg)
        out.write(f"[loaded '{arg}': {len(chat.conv.tokens)} tokens, "
                  f"{sum(t.speaker != 'session' for t in chat.conv.turns)} turns]\n")
    elif name == "/reset":
        chat.reset()
        out.write("[conversation reset]\n")
    elif name == "/session":
        chat.new_session(arg)
        out.write(f"[new session{': ' + arg if arg else ''}]\n")
    elif name == "/model":
        chat.plant(arg)
        out.write(f"[model turn added: {arg}]\n")
    elif name == "/stats":
        s = chat.stats()
        extra = "".join(f", {k.replace('_', ' ')} {v}" for k, v in s["state"].items())
        out.write(f"[{s['arch']}: {s['tokens']} tokens, {s['turns']} turns, {s['sessions']} "
                  f"sessions; span in use {s['span_in_use']}/{s['span_max']}{extra}]\n")
    else:
        raise UserError(f"unknown command '{name}': type /help for the commands")
    return True
