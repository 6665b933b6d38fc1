"""A run directory: what `train` and `import-txl` write and `info`, `evaluate` and `chat` read.

    config.json          the resolved config (vocabulary size filled in)
    tokenizer/           the dataset's tokenizer (`save_pretrained`); may be absent for
                         imported weights
    checkpoints/<step>/  orbax items: `params` always; a training step also holds `state`
                         (optimiser, step, PRNG key), `memory`, `data` and `config`
    metrics.jsonl, tb/, summary.json   written by `train`
    eval.json            written by `evaluate`
    chats/<name>/        saved chat states
    .lock                the owner lock every writer holds (`lock`)

This package owns the layout, the rule that decides which checkpoint step is readable
(`steps`), which config fields a run is bound to (`settings`), loading parameters for
inference and writing a parameters-only run (`run`). Training adds its own train-state
checkpoints on top (`longctx.train.checkpoint`); evaluation and chat need only this.
"""

from longctx.rundir.layout import checkpoint_dir, load_tokenizer, make_manager, read_config
from longctx.rundir.run import Run, load_run, save_params_run

__all__ = ["Run", "checkpoint_dir", "load_run", "load_tokenizer", "make_manager",
           "read_config", "save_params_run"]
