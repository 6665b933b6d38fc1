"""A memory mechanism is a plug-in: a toy one, defined in this file alone and registered
here, goes through `longctx train` (SIGKILLed and resumed to the same parameters),
`info`, `evaluate`, `compare` and a scripted `chat`; and no library file outside the
architecture modules tests `arch` against a name.

Run as a script, this file is the `longctx` command with the toy registered
(`python tests/test_arch_plugin.py train ...`), which is how the SIGKILLed child gets it;
in the test process the toy is registered only while a test that asks for it runs.
"""

from __future__ import annotations

import ast
import io
import json
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import pytest

from longctx.config_knobs import Knobs
from longctx.models import archs
from longctx.models.archs import Arch, CallShape
from longctx.models.primitives import descending_pos_emb
from longctx.models.state import Rows
from tests.conftest import run_main

THIS = Path(__file__).resolve()
REPO = THIS.parents[1]


@flax.struct.dataclass
class Gist(Rows):
    """The toy's state: one vector per lane, a running mean of what the lane saw."""

    vec: jax.Array  # [B, d_model] float32

    def batch_axes(self) -> Gist:
        return Gist(vec=0)


@dataclass(frozen=True)
class ToyKnobs(Knobs):
    """`model.toygist`: the toy's own section."""

    ranges: ClassVar[dict[str, str]] = {"seg_len": "[1, inf)"}

    seg_len: int = 16  # tokens a lane consumes per step


class ToyGist(Arch):
    """Each segment's embeddings get (gist * a learnt gate) added; after the segment the
    gist moves halfway to the mean of its last layer's states (no gradient across)."""

    name = "toygist"
    description = "toy: a running-mean vector per lane added to every embedding"
    lane_mode = "segments"
    has_memory = True
    knobs = ToyKnobs  # its own config section: model.toygist.seg_len

    def span(self, cfg):
        return cfg.toygist.seg_len

    def tokens_per_step(self, cfg):
        return cfg.toygist.seg_len

    def call_shape(self, cfg):
        t = cfg.toygist.seg_len
        return CallShape(queries=t, projected=t, keys=t, distances=t)

    def extra_params(self, cfg):
        return cfg.d_model

    def state_floats(self, cfg):
        return cfg.d_model

    def setup(self, mod):
        return mod.param("gist_gate", nn.initializers.normal(0.1), (mod.cfg.d_model,))

    def init_state(self, cfg, batch_size):
        return Gist(vec=jnp.zeros((batch_size, cfg.d_model), jnp.float32))

    def forward(self, mod, tokens, state, reset, deterministic):
        vec = jax.lax.stop_gradient(state.vec)
        if reset is not None:
            vec = jnp.where(jnp.asarray(reset, bool)[:, None], 0.0, vec)
        h = mod.embed(tokens, deterministic)
        h = h + (vec * mod.extra)[:, None, :].astype(h.dtype)
        t = tokens.shape[1]
        pos_emb = mod.dropout(descending_pos_emb(mod.cfg, t), deterministic)
        causal = jnp.tril(jnp.ones((t, t), bool))[None]
        h, _ = mod.run_layers(h, pos_emb, causal, deterministic=deterministic)
        gist = 0.5 * vec + 0.5 * jnp.mean(h.astype(jnp.float32), axis=1)
        return mod.output(h, deterministic), Gist(vec=gist)


@pytest.fixture
def toy():
    """The toy registered in this process for one test (the children register their own)."""
    archs.register(ToyGist())
    yield
    archs.unregister(ToyGist.name)

TOY = ["model.arch=toygist", "model.toygist.seg_len=16", "train.num_steps=12", "checkpoint.every_steps=4",
       "train.log_every=1", "eval.max_conversations=4", "eval.speed_tokens=32"]


def _train_args(workdir, data_dir):
    from tests.conftest import SMOKE

    return ["train", "--config", str(SMOKE), "--workdir", str(workdir),
            f"data.data_dir={data_dir}", *TOY]


def _killed_child(workdir, data_dir):
    """This file as the `longctx` command (the toy registered) in a bounded child that
    LONGCTX_FAULT SIGKILLs after step 6."""
    from tests.conftest import subprocess_env

    return subprocess.run([sys.executable, str(THIS), *_train_args(workdir, data_dir)],
                          cwd=REPO, env=subprocess_env(1, LONGCTX_FAULT="step:6"),
                          capture_output=True, text=True, timeout=300)


def _info(workdir, capsys):
    return json.loads(run_main(["info", "--workdir", str(workdir)], capsys).out
                      .strip().splitlines()[-1])


def test_registry_knows_the_toy_and_refuses_an_unknown_name(toy):
    from longctx.config import ConfigError, ModelConfig

    assert archs.names()[:3] == ("xl", "window", "vanilla") and "toygist" in archs.names()
    with pytest.raises(ConfigError, match="'model.arch': must be one of xl, window, vanilla"):
        archs.get(ModelConfig(arch="nope"))


def test_a_toy_mechanism_trains_resumes_evaluates_compares_and_chats(toy, data_dir, tmp_path,
                                                                     capsys, monkeypatch):
    """The commands in this process (the toy registered by the fixture), but for the
    training a SIGKILL ends, which is a child process registering the toy itself."""
    clean, killed = tmp_path / "clean", tmp_path / "killed"
    run_main(_train_args(clean, data_dir), capsys)
    proc = _killed_child(killed, data_dir)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    run_main(_train_args(killed, data_dir), capsys)
    info = _info(killed, capsys)
    assert info == _info(clean, capsys), "resumed after SIGKILL to the same parameters"
    assert info["arch"] == "toygist" and info["step"] == 12 and info["span"] == 16
    assert info["description"] == ToyGist.description
    # the estimate and the decoder agree on what the toy adds
    from longctx.config import from_dict
    from longctx.train.memory_fit import num_params

    cfg = from_dict(json.loads((clean / "config.json").read_text()))
    assert num_params(cfg.model, cfg.model.n_token) == info["num_params"]
    # its state was checkpointed with the run (it carries state across steps)
    assert any((clean / "checkpoints" / "12").glob("memory*"))

    ev = run_main(["evaluate", "--workdir", str(clean)], capsys)
    assert "toygist" in ev.out and (clean / "eval.json").is_file()
    result = json.loads((clean / "eval.json").read_text())
    assert result["run"]["arch"] == "toygist" and result["speed"]["stream"]["mode"].startswith(
        "toygist: chunks of 16")
    run_main(["evaluate", "--workdir", str(killed), "--no-speed"], capsys)
    out = tmp_path / "cmp"
    cmp = run_main(["compare", str(clean), str(killed), "--out", str(out)], capsys)
    assert "toygist" in cmp.out and (out / "results.md").is_file()

    monkeypatch.setattr(sys, "stdin", io.StringIO("hello there\n/stats\n/save first\n"
                                                  "how are you\n"))
    chat = run_main(["chat", "--workdir", str(clean), "--seed", "3", "--max-new-tokens", "12"],
                    capsys).out
    assert "[toygist:" in chat and "block position" in chat, chat[-2000:]
    assert (clean / "chats" / "first" / "meta.json").is_file()


# ----------------------------------------------------------------------------- the rule

ARCH_MODULES = {"longctx/models/archs"}


def _names_arch(node: ast.AST) -> bool:
    """`arch`, `x.arch` or `x["arch"]`: an expression that holds an architecture's name."""
    if isinstance(node, ast.Name):
        return node.id == "arch"
    if isinstance(node, ast.Attribute):
        return node.attr == "arch"
    if isinstance(node, ast.Subscript):
        return isinstance(node.slice, ast.Constant) and node.slice.value == "arch"
    return False


def _is_name_literal(node: ast.AST) -> bool:
    """A string constant, or a tuple / list / set of them."""
    if isinstance(node, ast.Constant):
        return isinstance(node.value, str)
    if isinstance(node, ast.Tuple | ast.List | ast.Set):
        return any(_is_name_literal(e) for e in node.elts)
    return False


def arch_name_comparisons(root: Path) -> list[str]:
    """'file:line' of every comparison of an architecture's name with a literal name under
    `root`'s longctx/, outside the architecture modules."""
    found = []
    for path in sorted((root / "longctx").rglob("*.py")):
        rel = path.relative_to(root).as_posix()
        if any(rel.startswith(d + "/") for d in ARCH_MODULES):
            continue
        for node in ast.walk(ast.parse(path.read_text(), rel)):
            if isinstance(node, ast.Compare):
                sides = [node.left, *node.comparators]
                if any(_names_arch(s) for s in sides) and any(_is_name_literal(s) for s in sides):
                    found.append(f"{rel}:{node.lineno}")
    return found


def test_no_library_file_compares_arch_to_a_name(tmp_path):
    assert arch_name_comparisons(REPO) == [], "ask longctx.models.archs instead"
    # the check sees what it forbids
    bad = tmp_path / "longctx" / "eval" / "bad.py"
    bad.parent.mkdir(parents=True)
    bad.write_text('def f(cfg):\n    return cfg.arch == "xl" or "xl" != cfg.model.arch or '
                   'run["arch"] in ("window",)\n')
    (tmp_path / "longctx" / "models" / "archs").mkdir(parents=True)
    (tmp_path / "longctx" / "models" / "archs" / "ok.py").write_text('x = arch == "xl"\n')
    assert arch_name_comparisons(tmp_path) == ["longctx/eval/bad.py:2"] * 3


if __name__ == "__main__":
    from longctx.cli import main

    archs.register(ToyGist())
    sys.exit(main())
