"""longctx from Python: load a run, score a conversation turn by turn, look at its recall
probes, chat with the run's memory, and read evaluation results into a table.

    python examples/quickstart.py --workdir runs/smoke      # a trained run
    python examples/quickstart.py --train runs/quick        # train the smoke config first

Walked through in docs/api.md; the tests run it on a tiny trained run.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import longctx.api as lc
from longctx.models import archs

SMOKE = Path(__file__).resolve().parents[1] / "experiments" / "smoke.py"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", help="a trained run directory")
    parser.add_argument("--train", help="train experiments/smoke.py here first (seconds)")
    parser.add_argument("--data-dir", default="data_cache", help="datasets (with --train)")
    args = parser.parse_args()
    lc.configure_logging()  # progress lines as the CLI shows them; library notes hidden
    if args.train:
        cfg = lc.load_config(SMOKE, f"data.data_dir={args.data_dir}", "train.eval_every_steps=6")
        lc.train(cfg, args.train)
    workdir = args.workdir or args.train
    if workdir is None:
        parser.error("give --workdir RUN or --train DIR")

    # 1. A run: its config, tokenizer and latest readable parameters.
    run = lc.load_run(workdir)
    m = run.cfg.model
    print(f"{run.cfg.name}: {m.arch}, W={archs.span(m)}, step {run.step}")

    # 2. Score a validation conversation turn by turn, and its planted recall probes.
    conv = lc.validation_conversations(run, limit=1)[0]
    score = lc.score_conversation(run, conv)
    print(f"{conv.conv_id}: {len(score.turns)} turns, mean NLL {score.nll:.3f}")
    for t in score.turns[:3]:
        print(f"  turn {t['turn']} (speaker {t['speaker']}, session {t['session']}): "
              f"{t['tokens']} tokens, NLL {t['nll']:.3f}")
    for p in score.probes[:3]:
        print(f"  probe {p['slot']} at distance {p['distance']} ({p['bucket']} W): "
              f"credit {p['credit']:.2f}")

    # ... or any conversation written as text (speakers alternate).
    mine = lc.conversation(["my dog is called rex .", "nice , rex is a good name .",
                            "what is my dog called ?", "your dog is called rex ."])
    print(f"own conversation: last turn NLL {lc.score_conversation(run, mine).turns[-1]['nll']:.3f}")

    # 3. Chat: the run's memory carries across turns; the reply streams as it is sampled.
    chat = lc.chat(run, temperature=0, max_new_tokens=16)
    chat.plant("my favourite food is pizza .")
    print("reply: ", end="")
    reply = lc.stream_reply(chat, "what is my favourite food ?",
                            on_text=lambda piece: print(piece, end="", flush=True))
    print(f"\n  ({len(reply)} characters, {chat.stats()['tokens']} tokens in the conversation)")

    # 4. Evaluate, then read eval.json files (any number of runs) into a table.
    if not (Path(workdir) / "eval.json").is_file():
        lc.evaluate(run)
    for row in lc.read_results([workdir]):
        print(f"eval.json: {row['arch']} ppl {row['ppl']:.2f}, recall inside "
              f"{row['recall inside']:.3f}, 1-2x {row['recall 1-2x']:.3f}")
    validation = [r for r in lc.read_metrics(workdir) if r["kind"] == "validation"]
    if validation:
        print(f"validation while training: loss {validation[-1]['loss']:.3f} at step "
              f"{validation[-1]['step']}")


if __name__ == "__main__":
    main()
