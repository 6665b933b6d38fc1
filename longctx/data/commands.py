"""`longctx data build [--config FILE] NAME [data.key=value ...]` and
`longctx data stats [--config FILE] [--span W] [--json] NAME [data.key=value ...]`
(options, NAME and the overrides in any order). msc and qmsum read `data.source=FILE` when
set, else download the official release once into `<data_dir>/downloads/` (see
`longctx.data.builders.download`)."""

from __future__ import annotations

import argparse
import json

from longctx.config import Config, DataConfig, load_experiment, parse_overrides, validate
from longctx.errors import UserError


def _data_config(args: argparse.Namespace) -> DataConfig:
    cfg = load_experiment(args.config) if args.config else Config()
    bad = [o for o in args.overrides if not o.split("=", 1)[0].strip().startswith("data.")]
    if bad:
        raise UserError(f"data commands take data.key=value overrides only, got {bad[0]!r}")
    cfg = parse_overrides(cfg, [f"data.name={args.name}", *args.overrides])
    validate(cfg)
    return cfg.data


def _build(args: argparse.Namespace) -> int:
    from longctx.data.dataset import dataset_dir, prepare_dataset

    cfg = _data_config(args)
    existed = (dataset_dir(cfg) / "dataset.json").is_file()
    ds = prepare_dataset(cfg)
    counts = ", ".join(f"{split} {n}" for split, n in ds.manifest["conversations"].items())
    verb = "already built" if existed else "built"
    print(f"{verb}: {ds.root}\n  conversations: {counts}; vocabulary {ds.vocab_size}; "
          f"tokenizer {ds.tokenizer_dir}")
    return 0


def _stats(args: argparse.Namespace) -> int:
    from longctx.data.dataset import prepare_dataset
    from longctx.data.stats import dataset_stats, format_stats

    cfg = _data_config(args)
    span = args.span or cfg.span
    if span <= 0:
        raise UserError(f"--span must be > 0, got {span}")
    stats = dataset_stats(prepare_dataset(cfg), span)
    print(json.dumps(stats, indent=2) if args.json else format_stats(stats))
    return 0


SOURCES = """\
where the real corpora come from:
  msc and qmsum read data.source=FILE when it is set (a local copy of the release's
  file; nothing is downloaded). Otherwise the official release is downloaded once,
  through TFDS's download manager, into <data.data_dir>/downloads/ and checked against its
  recorded sha256 (a checksum not yet recorded is registered on first download in
  <data.data_dir>/downloads/checksums.tsv):
    msc    http://parl.ai/downloads/msc/msc_v0.1.tar.gz
           (its msc/msc_dialogue/session_3/test.txt; LONGCTX_MSC_URL replaces the URL)
    qmsum  Yale-LILY/QMSum on GitHub, data/ALL/jsonl/train.jsonl at a pinned commit
           (LONGCTX_QMSUM_URL replaces the URL)
  On a machine without a network pass data.source=FILE.
"""


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register `longctx data {build,stats}`."""
    parser = subparsers.add_parser("data", help="build datasets and print their statistics")
    sub = parser.add_subparsers(dest="data_command", required=True)
    for name, func, help_ in (("build", _build, "build a dataset and its tokenizer"),
                              ("stats", _stats, "print a dataset's statistics")):
        p = sub.add_parser(name, help=help_, description=help_, epilog=SOURCES,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        p.add_argument("name", choices=("synthetic", "msc", "qmsum"), help="the dataset")
        p.add_argument("overrides", nargs="*", help="data.key=value, e.g. data.num_train=400, "
                       "data.source=FILE (msc, qmsum: a local corpus file instead of the "
                       "download)")
        p.add_argument("--config", help="take the data section from an experiment file")
        if name == "stats":
            p.add_argument("--span", type=int, default=0,
                           help="W for the probe-distance buckets (default data.span)")
            p.add_argument("--json", action="store_true", help="print JSON")
        p.set_defaults(func=func)

