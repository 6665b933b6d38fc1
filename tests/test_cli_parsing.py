"""The `longctx` argument parser: help for every option, options and overrides in any
order, a global -v, and usage errors as one line naming the command."""

import argparse

import pytest

from longctx.cli import Parser, build_parser, iter_parsers


def missing_help(parser: argparse.ArgumentParser) -> list[str]:
    """'PROG ARG' for every argument and subcommand under `parser` without help text."""
    missing = []
    for p in iter_parsers(parser):
        for action in p._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            if isinstance(action, argparse._SubParsersAction):
                # the subcommands are listed with their own help lines (argparse lists only
                # the subcommands registered with help)
                documented = {a.dest for a in action._choices_actions if (a.help or "").strip()}
                missing += [f"{p.prog} {name}" for name in action.choices if name not in documented]
                continue
            if not (action.help or "").strip() or action.help == argparse.SUPPRESS:
                missing.append(f"{p.prog} {'/'.join(action.option_strings) or action.dest}")
    return missing


def test_every_option_and_command_has_help():
    assert missing_help(build_parser()) == []


def test_the_help_check_finds_a_missing_one():
    parser = Parser(prog="x")
    parser.add_argument("--documented", help="has help")
    parser.add_argument("--bare")
    sub = parser.add_subparsers(dest="command")
    sub.add_parser("quiet").add_argument("name")
    sub.add_parser("loud", help="documented")
    assert missing_help(parser) == ["x --bare", "x quiet", "x quiet name"]


@pytest.mark.parametrize("argv", [
    ["train", "--workdir", "D", "model.n_layer=2", "--config", "X", "train.seed=1"],
    ["train", "model.n_layer=2", "--config", "X", "train.seed=1", "--workdir", "D"],
    ["train", "--config", "X", "--workdir", "D", "model.n_layer=2", "train.seed=1"],
    ["train", "--config", "X", "model.n_layer=2", "--peer-timeout", "12", "train.seed=1",
     "--workdir", "D"],
])
def test_train_options_and_overrides_in_any_order(argv):
    args = build_parser().parse_args(argv)
    assert (args.config, args.workdir) == ("X", "D")
    assert args.overrides == ["model.n_layer=2", "train.seed=1"]
    assert args.peer_timeout == (12 if "--peer-timeout" in argv else None)


def test_other_commands_take_options_between_overrides():
    parser = build_parser()
    args = parser.parse_args(["sweep", "--config", "X", "model.arch=xl", "--root", "R",
                              "--grid", "train.seed=0,1", "optim.b1=0.5"])
    assert (args.root, args.grid, args.overrides) == ("R", ["train.seed=0,1"],
                                                      ["model.arch=xl", "optim.b1=0.5"])
    args = parser.parse_args(["data", "stats", "synthetic", "data.num_train=3", "--json",
                              "data.span=4", "--span", "9"])
    assert (args.name, args.json, args.span) == ("synthetic", True, 9)
    assert args.overrides == ["data.num_train=3", "data.span=4"]
    args = parser.parse_args(["compare", "a", "--out", "o", "b"])
    assert (args.workdirs, args.out) == (["a", "b"], "o")


@pytest.mark.parametrize("argv,verbose", [
    (["info", "--workdir", "D"], False),
    (["-v", "info", "--workdir", "D"], True),
    (["info", "--workdir", "D", "--verbose"], True),
    (["data", "build", "synthetic", "-v"], True),
])
def test_verbose_is_global(argv, verbose):
    assert build_parser().parse_args(argv).verbose is verbose


@pytest.mark.parametrize("argv,expected", [
    (["train", "--workdir", "D", "model.n_layer=2", "--bogus", "--config", "X"],
     "longctx train: error: unrecognized arguments: --bogus"),
    (["info"], "longctx info: error: the following arguments are required: --workdir"),
    (["data", "stats", "synthetic", "--span"], "longctx data stats: error: argument --span"),
])
def test_usage_errors_are_one_line_naming_the_command(argv, expected, capsys):
    with pytest.raises(SystemExit) as exit_:
        build_parser().parse_args(argv)
    assert exit_.value.code == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(expected), captured.err
    assert lines[0].endswith(f"(see {' '.join(['longctx', *argv[:2 if argv[0] == 'data' else 1]])}"
                             " --help)")
