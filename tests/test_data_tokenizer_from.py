"""`data.tokenizer_from`: a dataset built with an existing tokenizer (a run's) holds that
tokenizer's files, has its own folder per tokenizer, and lets the run warm-start on it;
bad paths are refused in one line with nothing written."""

from __future__ import annotations

import json
import shutil

import pytest

from longctx.data import prepare_dataset
from longctx.data.dataset import dataset_dir
from longctx.data.tokenizer import files_sha256
from longctx.errors import UserError
from longctx.rundir import load_run
from longctx.train.loop import train
from longctx.train.warm_start import read_record
from tests.conftest import smoke_config

# the smoke data with every training fact planned near (W/4..2W): other texts, so a
# tokenizer trained on them would differ from the smoke run's
NEAR = ("data.train_near=1", "data.train_near_max=2")


def _data(data_dir, *overrides):
    return smoke_config(data_dir, *NEAR, *overrides).data


def _other_tokenizer(run, where):
    """A valid tokenizer that is not the run's: two ids swapped."""
    shutil.copytree(run / "tokenizer", where)
    tok = json.loads((where / "tokenizer.json").read_text())
    vocab = tok["model"]["vocab"]
    a, b = sorted(vocab, key=vocab.get)[-2:]
    vocab[a], vocab[b] = vocab[b], vocab[a]
    (where / "tokenizer.json").write_text(json.dumps(tok))
    return where


def test_built_dataset_holds_the_given_tokenizers_files(data_dir, tiny_run, tmp_path):
    ds = prepare_dataset(_data(tmp_path / "data", f"data.tokenizer_from={tiny_run}"))
    sha = files_sha256(tiny_run / "tokenizer")
    assert files_sha256(ds.tokenizer_dir) == sha == ds.manifest["tokenizer_sha256"]
    assert f"-tok{sha[:12]}-" in ds.root.name and "-v512-" not in ds.root.name
    assert ds.vocab_size == load_run(tiny_run).cfg.model.n_token
    assert ds.manifest["config"]["tokenizer_from"] == str(tiny_run)
    # every probe value has its distractors under the given tokenizer, as when trained
    lengths = {len(ds.encode_value(v)) for v in ds.slot_values("pet")}
    assert all(sum(len(ds.encode_value(v)) == n for v in ds.slot_values("pet")) >= 8
               for n in lengths)
    # the same tokenizer named by its own folder or the dataset's: the same dataset, reused
    before = (ds.root / "dataset.json").stat().st_mtime_ns
    for given in (tiny_run / "tokenizer", ds.root):
        again = prepare_dataset(_data(tmp_path / "data", f"data.tokenizer_from={given}"))
        assert again.root == ds.root
    assert (ds.root / "dataset.json").stat().st_mtime_ns == before


def test_another_tokenizer_gives_another_dataset_folder(tiny_run, tmp_path):
    other = _other_tokenizer(tiny_run, tmp_path / "other")
    mine = dataset_dir(_data(tmp_path, f"data.tokenizer_from={tiny_run}"))
    theirs = dataset_dir(_data(tmp_path, f"data.tokenizer_from={other}"))
    trained = dataset_dir(_data(tmp_path))
    assert len({mine, theirs, trained}) == 3
    mine_tag, theirs_tag = (f"tok{files_sha256(t)[:12]}" for t in (tiny_run / "tokenizer", other))
    assert mine.name.replace(mine_tag, theirs_tag) == theirs.name  # only the tokenizer differs
    assert mine.name.replace(mine_tag, "v512") == trained.name


def test_run_warm_starts_on_a_dataset_built_with_its_tokenizer(data_dir, tiny_run, tmp_path):
    """Refused on the near-fact data with its own trained tokenizer; accepted on the same
    data built with the source run's tokenizer."""
    steps = ("train.num_steps=2", "train.log_every=1", f"train.init_from={tiny_run}")
    with pytest.raises(UserError, match="another tokenizer"):
        train(smoke_config(data_dir, *NEAR, *steps), tmp_path / "refused")
    train(smoke_config(data_dir, *NEAR, *steps, f"data.tokenizer_from={tiny_run}"),
          tmp_path / "w")
    record = read_record(tmp_path / "w")
    assert record is not None and record["path"] == str(tiny_run.absolute())
    assert files_sha256(tmp_path / "w" / "tokenizer") == files_sha256(tiny_run / "tokenizer")
    assert load_run(tmp_path / "w").step == 2


@pytest.mark.parametrize("case", ["missing", "file", "empty", "unreadable", "not_longctx"])
def test_bad_tokenizer_from_is_refused_in_one_line(tiny_run, tmp_path, case):
    given = tmp_path / "given"
    if case == "file":
        given.write_text("x")
    elif case != "missing":
        given.mkdir()
    if case == "unreadable":
        (given / "tokenizer.json").write_text("{")
    if case == "not_longctx":  # a readable tokenizer whose special tokens are not ours
        shutil.copytree(tiny_run / "tokenizer", given, dirs_exist_ok=True)
        tok = json.loads((given / "tokenizer.json").read_text())
        vocab = tok["model"]["vocab"]
        vocab["<|pad|>"], vocab["<|bos|>"] = vocab["<|bos|>"], vocab["<|pad|>"]
        for added in tok["added_tokens"]:
            added["id"] = vocab[added["content"]]
        (given / "tokenizer.json").write_text(json.dumps(tok))
    cfg = _data(tmp_path / "data", f"data.tokenizer_from={given}")
    with pytest.raises(UserError) as err:
        prepare_dataset(cfg)
    message = str(err.value)
    assert "\n" not in message and "data.tokenizer_from" in message and str(given) in message
    expected = {"missing": "no such directory", "file": "is a file",
                "empty": "holds neither tokenizer.json", "unreadable": "unreadable",
                "not_longctx": "not a longctx tokenizer"}[case]
    assert expected in message
    built = tmp_path / "data"
    assert not built.exists() or not any(p for p in built.iterdir() if p.name != "downloads")


@pytest.mark.parametrize("given", [False, True])
def test_values_that_do_not_settle_get_the_fix_that_applies(given, tiny_run, tmp_path,
                                                            monkeypatch):
    """No rounds left (MAX_ROUNDS 0): a trained tokenizer's fix is more data or vocabulary,
    a given tokenizer's is another tokenizer (its vocabulary size is not the config's)."""
    from longctx.data.builders import synthetic

    monkeypatch.setattr(synthetic, "MAX_ROUNDS", 0)
    extra = (f"data.tokenizer_from={tiny_run}",) if given else ()
    (tmp_path / "data").mkdir()
    cfg = smoke_config(tmp_path / "data", *NEAR, *extra).data
    with pytest.raises(UserError, match="did not settle") as err:
        prepare_dataset(cfg)
    assert ("data.tokenizer_from" in str(err.value)) == given
    assert ("data.vocab_size" in str(err.value)) != given
    assert [p.name for p in (tmp_path / "data").iterdir()] == [], "nothing half-built left"
