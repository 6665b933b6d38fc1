"""experiments/retrieval_reach.py `--data-from`: a run is scored on another run's dataset
only when both share the tokenizer files; `--data-seed`: on a fresh draw, same tokenizer."""

from __future__ import annotations

import dataclasses
import json
import shutil

from longctx.rundir import load_run
from tests.conftest import load_script


def _copy_with(run, where, **data):
    """A copy of `run` whose config.json has other data settings."""
    shutil.copytree(run, where)
    cfg = json.loads((where / "config.json").read_text())
    cfg["data"].update(data)
    (where / "config.json").write_text(json.dumps(cfg))
    return where


def test_data_from_takes_the_other_runs_data_when_the_tokenizer_is_shared(tiny_run, tmp_path):
    reach = load_script("retrieval_reach")
    other = _copy_with(tiny_run, tmp_path / "other", train_near=1.0, train_near_max=2.0)
    run = load_run(tiny_run)
    assert run.cfg.data.train_near_max == 1.0
    assert reach.other_data(run, other) == ""
    assert run.cfg.data.train_near == 1.0 and run.cfg.data.train_near_max == 2.0
    assert run.cfg.model == load_run(tiny_run).cfg.model  # only the data section changes

    tok = json.loads((other / "tokenizer" / "tokenizer.json").read_text())
    vocab = tok["model"]["vocab"]
    a, b = sorted(vocab, key=vocab.get)[-2:]
    vocab[a], vocab[b] = vocab[b], vocab[a]
    (other / "tokenizer" / "tokenizer.json").write_text(json.dumps(tok))
    run = load_run(tiny_run)
    assert "another tokenizer" in reach.other_data(run, other)
    assert run.cfg.data.train_near_max == 1.0  # left as it was
    shutil.rmtree(other / "tokenizer")
    assert "tokenizer/ folder" in reach.other_data(run, other)


def test_data_seed_draws_other_conversations_with_the_runs_tokenizer(tiny_run, tmp_path):
    from longctx.data import prepare_dataset
    from longctx.data.tokenizer import files_sha256

    reach = load_script("retrieval_reach")
    run = load_run(tiny_run)
    own = prepare_dataset(run.cfg.data)
    reach.fresh_data(run, 7)
    run.cfg = dataclasses.replace(run.cfg, data=dataclasses.replace(run.cfg.data,
                                                                    data_dir=str(tmp_path / "d")))
    fresh = prepare_dataset(run.cfg.data)
    assert fresh.manifest["tokenizer_sha256"] == files_sha256(tiny_run / "tokenizer")
    assert len(fresh.conversations("validation")) == len(own.conversations("validation"))
    assert [c.ids.tolist() for c in fresh.conversations("validation")] != [
        c.ids.tolist() for c in own.conversations("validation")]
    assert run.cfg.model == load_run(tiny_run).cfg.model  # only the data section changes


def test_confusion_pairs_set_the_true_value_against_the_other_speakers(data_dir):
    """experiments/retrieval_confusion.py: each pair is (the answer's value, the other
    speaker's stated value of the same slot), equal in length and different."""
    import numpy as np

    from longctx.data import prepare_dataset
    from tests.conftest import smoke_config

    confusion = load_script("retrieval_confusion")
    ds = prepare_dataset(smoke_config(data_dir).data)
    convs = ds.conversations("validation")
    values = {}

    def value_tokens(slot):
        return values.setdefault(slot, [ds.encode_value(v) for v in ds.slot_values(slot)])

    other, rand, distances, twin_before = confusion.pairs(convs, value_tokens,
                                                          np.random.default_rng(0))
    assert len(other) == len(rand) == len(distances) == len(twin_before) > 10
    assert 0 < sum(twin_before) < len(twin_before)  # both cases occur
    for req, alt, before in zip(other, rand, twin_before, strict=True):
        conv = convs[req.stream]
        probe = next(p for p in conv.probes if p.answer_value_span[0] == req.pos)
        twin = next(p for p in conv.probes if p.slot == probe.slot and p.speaker != probe.speaker)
        true, wrong = req.candidates
        np.testing.assert_array_equal(true, conv.ids[slice(*probe.answer_value_span)])
        np.testing.assert_array_equal(wrong, conv.ids[slice(*twin.fact_value_span)])
        assert true.size == wrong.size and not np.array_equal(true, wrong)
        assert alt.pos == req.pos and alt.candidates[1].size == true.size
        assert before == (twin.fact_value_span[1] <= req.pos)
