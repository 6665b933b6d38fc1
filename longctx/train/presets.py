"""Named experiment sizes, typed and defined once, shared by the experiment scripts.

A `Preset` is what one size of a study trains: the seeds, the tokens every model consumes
per optimiser step, the matched span (`MatchedSpan`: the same W for every architecture),
the decoder's shape (`Shape`, identical for every architecture, so parameter counts match),
and the remaining settings (data recipe, budget, optimiser, evaluation) as `section.key=value`
overrides. `batch_overrides` gives each architecture the batch that makes its tokens per
step equal to the others'. The scripts (`experiments/dialogue_comparison.py`,
`real_dialogue_study.py`, `reach_study.py`) read these; none copies another's lists.
"""

from __future__ import annotations

from dataclasses import dataclass

from longctx.config import Config, parse_overrides
from longctx.errors import UserError
from longctx.models import archs


@dataclass(frozen=True)
class MatchedSpan:
    """One span W for every architecture: XL mem_len = W with segments of tgt_len <= W, the
    window W (trained on sequences of seq_len), vanilla ctx_len = W, recurrent memory
    tokens on segments of tgt_len; the synthetic data places its probes in units of W."""

    span: int
    tgt_len: int
    seq_len: int

    def overrides(self) -> list[str]:
        w = self.span
        return [f"model.xl.mem_len={w}", f"model.window.window={w}", f"model.vanilla.ctx_len={w}",
                f"model.xl.tgt_len={self.tgt_len}", f"model.rmt.seg_len={self.tgt_len}",
                f"model.window.seq_len={self.seq_len}", f"data.span={w}"]


@dataclass(frozen=True)
class Shape:
    """The decoder's size, the same for every architecture."""

    n_layer: int
    n_head: int
    d_model: int
    d_head: int
    d_inner: int
    dropout: float = 0.0
    dtype: str = "float32"

    def overrides(self) -> list[str]:
        return [f"model.{k}={getattr(self, k)}" for k in
                ("n_layer", "n_head", "d_model", "d_head", "d_inner", "dropout", "dtype")]


@dataclass(frozen=True)
class Derived:
    """A model that starts from another architecture's trained run of the same size and
    seed (`train.init_from`) and trains `train_tokens` more; 0: the source's parameters as
    they are, run by another mechanism (e.g. a trained XL with a retrieval memory)."""

    arch: str
    source: str
    train_tokens: int = 0
    settings: tuple[str, ...] = ()

    def overrides(self, source_workdir: str) -> list[str]:
        budget = ([f"train.train_tokens={self.train_tokens}"] if self.train_tokens
                  else ["train.train_tokens=0", "train.num_steps=0"])
        return [f"train.init_from={source_workdir}", *budget, *self.settings]


@dataclass(frozen=True)
class Preset:
    """One named size of a study (see the module docstring)."""

    seeds: tuple[int, ...]
    tokens_per_step: int
    span: MatchedSpan
    shape: Shape
    settings: tuple[str, ...] = ()  # the rest, as section.key=value overrides
    evaluate_args: tuple[str, ...] = ()  # extra `longctx evaluate` arguments
    # the architectures this size compares (registered names); None: the studied ones
    # (`archs.studied()`: every registered architecture with `Arch.in_studies`)
    archs: tuple[str, ...] | None = None
    # models started from another architecture's run of this size (after those are trained)
    derived: tuple[Derived, ...] = ()

    def overrides(self) -> list[str]:
        return [*self.span.overrides(), *self.shape.overrides(), *self.settings]

    def arch_names(self) -> tuple[str, ...]:
        """The architectures to train, each checked against the registry (ConfigError
        naming model.arch for an unknown one)."""
        names = archs.studied() if self.archs is None else self.archs
        out = tuple(archs.get(n).name for n in names)
        for d in self.derived:
            archs.get(d.arch)
            if d.source not in out:
                raise UserError(f"derived model {d.arch} starts from {d.source}, which this "
                                f"size does not train ({', '.join(out)})")
        return out


def batch_overrides(base: Config, arch: str, tokens_per_step: int,
                    overrides: list[str] = ()) -> list[str]:
    """The batch that gives `arch` `tokens_per_step` tokens per optimiser step on `base`
    with `overrides` (each architecture's row is its own: XL a segment, the window a
    sequence, vanilla its context), so equal token budgets are equal numbers of updates."""
    cfg = parse_overrides(base, [*overrides, f"model.arch={arch}"])
    row = archs.tokens_per_step(cfg.model)
    if tokens_per_step % row:
        raise UserError(f"tokens_per_step {tokens_per_step} is not a multiple of the {arch} "
                        f"row length {row}; choose a multiple of every architecture's row")
    return [f"train.batch_size={tokens_per_step // row}"]


# Settings shared by sizes (each written once).
SYNTHETIC = ("data.num_train=1000", "data.num_validation=60", "data.vocab_size=2048")
# Copying emerges early (experiments/RESULTS.md): every training fact planned within 2W,
# training acknowledgements that say a stated value back, no dropout, a flat-ish rate.
README_RECIPE = ("data.train_near=1", "data.train_near_max=2", "data.train_ack=1")
CPU_EVAL = ("eval.max_conversations=60", "eval.vanilla_stride=16")
GPU_SHAPE = Shape(n_layer=8, n_head=8, d_model=512, d_head=64, d_inner=2048, dtype="bfloat16")
GPU_SPAN = MatchedSpan(span=512, tgt_len=256, seq_len=2048)

# The main comparison (experiments/dialogue_comparison.py).
COMPARISON: dict[str, Preset] = {
    # README: one seed each; train + evaluate + compare in about 13 minutes on 2 cores
    # (--parallel 2), and memory shows: XL recalls facts 1-2W back far above the window
    # and chance.
    # Validation keeps the benchmark's distances and plain acknowledgements.
    "readme": Preset(
        seeds=(0,), tokens_per_step=512, span=MatchedSpan(64, 64, 256),
        shape=Shape(n_layer=2, n_head=4, d_model=128, d_head=32, d_inner=512),
        settings=(*SYNTHETIC, *README_RECIPE, "train.train_tokens=1200000",
                  "optim.learning_rate=2e-3", "optim.end_learning_rate=1e-3",
                  "optim.warmup_steps=50", *CPU_EVAL, "eval.context_lengths=16,32,64"),
        # the trained XL with a retrieval memory, no retraining (experiments/RESULTS.md)
        derived=(Derived("xl_retrieval", "xl"),)),
    # The CPU study: 3 seeds, about an hour. Every training fact inside W
    # (`data.train_near=1`; validation keeps the benchmark's distances), no dropout, and a
    # learning rate still high when copying appears (~2.3M tokens in).
    "cpu": Preset(
        seeds=(0, 1, 2), tokens_per_step=512, span=MatchedSpan(64, 64, 256),
        shape=Shape(n_layer=3, n_head=4, d_model=128, d_head=32, d_inner=512),
        settings=(*SYNTHETIC, "data.train_near=1", "train.train_tokens=3000000",
                  "optim.learning_rate=2e-3", "optim.end_learning_rate=1e-3",
                  "optim.warmup_steps=50", *CPU_EVAL, "eval.context_lengths=16,32,64")),
    # The GPU study (bfloat16 compute, larger model and span).
    "gpu": Preset(
        seeds=(0, 1, 2), tokens_per_step=8192, span=GPU_SPAN,
        shape=Shape(**{**GPU_SHAPE.__dict__, "dropout": 0.1}),
        settings=("data.num_train=20000", "data.num_validation=200", "data.vocab_size=8192",
                  "train.train_tokens=200000000", "optim.learning_rate=6e-4",
                  "optim.end_learning_rate=3e-5", "optim.warmup_steps=1000",
                  "checkpoint.every_steps=1000", "train.log_every=100",
                  "eval.vanilla_stride=64", "eval.context_lengths=64,128,256,512,1024")),
    # The GPU study cut to one seed and a few minutes of one H200 (experiments/
    # gpu_study.sh): the `gpu` shapes with the README recipe, 20M tokens per model (~50-70 s
    # each at the 290-430k tokens/s measured there), and a short evaluation: 20 validation
    # conversations (~320 probes), vanilla stride 64, no speed section (its stride-1
    # recompute would take about a minute per model).
    "gpu-quick": Preset(
        seeds=(0,), tokens_per_step=8192, span=GPU_SPAN, shape=GPU_SHAPE,
        evaluate_args=("--no-speed",),
        settings=("data.num_train=2000", "data.num_validation=20", "data.vocab_size=8192",
                  *README_RECIPE, "train.train_tokens=20000000", "optim.learning_rate=1e-3",
                  "optim.end_learning_rate=1e-4", "optim.warmup_steps=200",
                  "checkpoint.every_steps=1000", "train.log_every=100",
                  "eval.max_conversations=20", "eval.vanilla_stride=64",
                  "eval.context_lengths=128,512,1024")),
}

# The real dialogue study (experiments/real_dialogue_study.py), trained on MSC.
REAL_DIALOGUE: dict[str, Preset] = {
    # End-to-end check on the 8-episode / 3-meeting samples in tests/data (a smoke model),
    # every kind of model the study runs: the studied ones, recurrent memory tokens (2
    # segments a row) and the trained XL with a retrieval memory.
    "tiny": Preset(
        seeds=(0,), tokens_per_step=256, span=MatchedSpan(32, 32, 64),
        shape=Shape(n_layer=2, n_head=2, d_model=32, d_head=16, d_inner=64),
        settings=("data.vocab_size=400", "train.train_tokens=8192", "optim.warmup_steps=4",
                  "checkpoint.every_steps=16", "train.log_every=8",
                  "model.rmt.n_mem_tokens=4", "model.rmt.bptt_segments=2",
                  "eval.max_conversations=2", "eval.vanilla_stride=16",
                  "eval.context_lengths=16,32", "model.xl_retrieval.store_len=256"),
        # vanilla, the memoryless control, is the cpu size's (its path is the same)
        archs=("xl", "window", "rmt"), derived=(Derived("xl_retrieval", "xl"),)),
    # The CPU study (experiments/RESULTS.md): 3 seeds, the main CPU study's shape. MSC's
    # 451 training episodes are ~0.5M tokens (vocab 2048), so 1.2M tokens is ~2.4 epochs:
    # dropout 0.1 against overfitting. About 50 minutes on one core per job.
    "cpu": Preset(
        seeds=(0, 1, 2), tokens_per_step=512, span=MatchedSpan(64, 64, 256),
        shape=Shape(**{**COMPARISON["cpu"].shape.__dict__, "dropout": 0.1}),
        settings=("data.vocab_size=2048", "train.train_tokens=1200000",
                  "optim.learning_rate=2e-3", "optim.end_learning_rate=1e-4",
                  "optim.warmup_steps=50", "checkpoint.every_steps=500", "train.log_every=50",
                  *CPU_EVAL, "eval.context_lengths=16,32,64,128,256")),
}
# The memory mechanisms of issue 20 on MSC: the cpu size's shape, recipe and budget with
# XL, the window, recurrent memory tokens (16 vectors; K = 4 segments of W a row, so the
# gradient through the memory spans 4W, the distances the recurrence buckets reach, at
# 2 rows x 256 = the same 512 tokens per step) and the trained XL run with a retrieval
# memory (no retraining). No vanilla: it was the earlier study's memoryless control.
REAL_DIALOGUE["cpu-memory"] = Preset(
    seeds=(0, 1, 2), tokens_per_step=512, span=REAL_DIALOGUE["cpu"].span,
    shape=REAL_DIALOGUE["cpu"].shape,
    settings=(*REAL_DIALOGUE["cpu"].settings, "model.rmt.n_mem_tokens=16",
              "model.rmt.bptt_segments=4"),
    archs=("xl", "window", "rmt"), derived=(Derived("xl_retrieval", "xl"),))
