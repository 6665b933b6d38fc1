"""The `import-txl` subcommand: a run directory from the original Transformer-XL's weights."""

from __future__ import annotations

import argparse
from pathlib import Path

from longctx.errors import UserError


def _import_txl(args: argparse.Namespace) -> int:
    from longctx.compat.original_xl import load_reference
    from longctx.config import Config
    from longctx.rundir import save_params_run
    from longctx.rundir.layout import read_tokenizer

    path = Path(args.reference)
    if not path.is_file():
        raise UserError(f"'{path}': no such file; pass a reference .npz weight file")
    if args.tokenizer and not (Path(args.tokenizer) / "tokenizer.json").is_file():
        raise UserError(f"--tokenizer '{args.tokenizer}': no tokenizer.json there; pass a "
                        "folder saved with save_pretrained (e.g. a run's tokenizer/)")
    from longctx.fsguard import machine_limits, remove_until_quiet
    from longctx.rundir.lock import RunLock

    model_cfg, params = load_reference(path)
    if args.tokenizer:  # checked before anything is written: readable, and fits the model
        tokenizer = read_tokenizer(Path(args.tokenizer), "pass an intact tokenizer folder")
        if len(tokenizer) > model_cfg.n_token:
            raise UserError(f"--tokenizer '{args.tokenizer}': {len(tokenizer)} tokens, more "
                            f"than the {model_cfg.n_token} the weights have (n_token); pass "
                            "the tokenizer these weights were trained with")
    cfg = Config(name=args.name or path.stem, model=model_cfg)
    with RunLock(args.workdir, "import-txl") as lock:
        written = [lock.workdir / name for name in ("config.json", "tokenizer", "checkpoints")
                   if not (lock.workdir / name).exists()]

        def cleanup() -> None:  # a full or read-only disk: remove what this import wrote
            remove_until_quiet(lambda: [new for new in written
                                        if new.exists() or new.is_symlink()])

        with machine_limits(f"--workdir {lock.workdir}", "cannot write the run", cleanup):
            out = save_params_run(lock.workdir, cfg, params, tokenizer_dir=args.tokenizer)
    print(f"imported {path} ({model_cfg.n_layer} layers, d_model {model_cfg.d_model}, "
          f"mem_len {model_cfg.xl.mem_len}, tgt_len {model_cfg.xl.tgt_len}) into {out}")
    return 0


def add_parser(subparsers) -> None:
    """Register `import-txl`."""
    p = subparsers.add_parser("import-txl",
                              help="make a run directory from original Transformer-XL weights")
    p.add_argument("reference", help="reference .npz (weights under the original's names)")
    p.add_argument("--workdir", required=True, help="new run directory to create")
    p.add_argument("--tokenizer", default=None, help="tokenizer folder to copy in (optional)")
    p.add_argument("--name", default=None, help="run name (default: the file's stem)")
    p.set_defaults(func=_import_txl)
