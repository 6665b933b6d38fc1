"""The built synthetic dataset: token positions of probes, distances, buckets, the 1/N
baseline, determinism of records and files, offline building and reading."""

from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from longctx.data import BUCKET_NAMES, distance_bucket, prepare_dataset
from longctx.data.tokenizer import train_tokenizer
from tests.data_fixtures import SMALL, network_off, synthetic_config

N = 8  # forced-choice candidates


@pytest.fixture(scope="module")
def ds(data_dir):
    with network_off():
        return prepare_dataset(synthetic_config(data_dir))


def test_handle(ds):
    assert ds.vocab_size == len(ds.tokenizer) <= SMALL["vocab_size"]
    assert (ds.tokenizer_dir / "tokenizer.json").is_file()
    assert {"pad", "bos", "eos", "eot", "session", "spk0", "spk1"} <= set(ds.special_ids)
    assert len(ds.source("train")) == SMALL["num_train"]
    assert len(ds.conversations("validation")) == SMALL["num_validation"]
    assert len(ds.slot_values("pet")) >= 200


def test_vocabulary_is_read_without_transformers_and_agrees_with_it(ds, tmp_path):
    """A dataset opens without importing transformers (training needs only the vocabulary
    size and special ids); what it reads equals transformers' view of the same files; a
    damaged tokenizer.json is one line naming it."""
    import subprocess
    import sys

    from longctx.data.tokenizer import special_ids, vocabulary
    from longctx.errors import UserError
    from tests.conftest import REPO, subprocess_env

    assert vocabulary(ds.tokenizer_dir) == (len(ds.tokenizer), special_ids(ds.tokenizer))
    probe = ("import sys; from longctx.data.dataset import DialogueDataset; "
             "from longctx.data.builders import builder_class; from pathlib import Path; "
             f"d = DialogueDataset(Path({str(ds.root)!r}), None, builder_class('synthetic')); "
             "print(d.vocab_size, 'transformers' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", probe], cwd=REPO, env=subprocess_env(),
                         capture_output=True, text=True, timeout=120)
    assert out.stdout.split() == [str(ds.vocab_size), "False"], out.stderr[-2000:]
    damaged = tmp_path / "tokenizer"
    damaged.mkdir()
    (damaged / "tokenizer.json").write_text('{"model": ')
    with pytest.raises(UserError, match="tokenizer.*unreadable.*rebuild"):
        vocabulary(damaged)


def test_turn_and_session_spans(ds):
    sp = ds.special_ids
    for conv in ds.conversations("validation"):
        ids = conv.ids
        assert ids[0] == sp["bos"] and ids[-1] == sp["eos"] and ids.dtype == np.int32
        for turn in conv.turns:
            assert ids[turn.start - 1] == sp[f"spk{turn.speaker}"]
            assert ids[turn.end - 1] == sp["eot"]
        assert [ids[s] for s, _ in conv.sessions] == [sp["session"]] * len(conv.sessions)
        assert conv.sessions[-1][1] == len(ids) - 1


def test_probe_values_at_recorded_positions_and_distances(ds):
    for conv, text in zip(ds.conversations("validation"), ds.texts("validation"), strict=True):
        assert len(conv.probes) == 2 * 8
        for p in conv.probes:
            want = ds.encode_value(p.value)
            for turn, (start, end) in ((p.fact_turn, p.fact_value_span),
                                       (p.answer_turn, p.answer_value_span)):
                np.testing.assert_array_equal(conv.ids[start:end], want)
                assert ds.tokenizer.decode(conv.ids[start:end]) == " " + p.value
                span = conv.turns[turn]
                assert span.start <= start < end < span.end and span.speaker == p.speaker
            assert p.distance == p.answer_value_span[0] - (p.fact_value_span[1] - 1) > 0
            question = conv.turns[p.answer_turn - 1]
            assert question.speaker == 1 - p.speaker
            assert p.value not in text.turns[p.answer_turn - 1].text


def test_every_distance_bucket_has_50_validation_probes(ds):
    w = SMALL["span"]
    probes = [p for c in ds.conversations("validation") for p in c.probes]
    counts = Counter(distance_bucket(p.distance, w) for p in probes)
    assert all(counts[b] >= 50 for b in BUCKET_NAMES), counts
    # from about 21 tokens (the rest of the statement, an acknowledgement, the question) to > 8W
    assert min(p.distance for p in probes) < 0.75 * w and max(p.distance for p in probes) >= 8 * w


def _candidates(probe, lengths, rng):
    """The true value and N-1 distractors of the slot with the same token length."""
    length = lengths[probe.slot][probe.value]
    same = [v for v, n in lengths[probe.slot].items() if v != probe.value and n == length]
    return [probe.value, *rng.choice(same, size=N - 1, replace=False)]


def test_question_only_baseline_scores_chance(ds):
    """Picking by value frequency in the training split (all a model without the fact has)
    scores about 1/N: the probes need the fact."""
    freq = Counter(p.value for c in ds.conversations("train") for p in c.probes)
    rng = np.random.default_rng(0)
    lengths = {slot: {v: len(ds.encode_value(v)) for v in ds.slot_values(slot)}
               for slot in {p.slot for c in ds.conversations("validation") for p in c.probes}}
    credit = []
    for conv in ds.conversations("validation"):
        for p in conv.probes:
            cands = _candidates(p, lengths, rng)
            scores = np.asarray([freq[v] for v in cands])
            best = np.flatnonzero(scores == scores.max())
            credit.append((0 in best) / len(best))  # ties: fractional credit
    assert len(credit) >= 300
    assert abs(np.mean(credit) - 1 / N) < 0.05, np.mean(credit)


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file()}


def test_same_seed_identical_files_other_seed_differs(ds, tmp_path):
    tiny = {"num_train": 6, "num_validation": 3}
    with network_off():
        a = prepare_dataset(synthetic_config(tmp_path / "a", **tiny))
        b = prepare_dataset(synthetic_config(tmp_path / "b", **tiny))
        c = prepare_dataset(synthetic_config(tmp_path / "c", seed=1, **tiny))
    files_a, files_b = _files(a.root), _files(b.root)
    files_a.pop("dataset.json"), files_b.pop("dataset.json")  # names its data_dir
    assert files_a == files_b
    assert any(name.endswith("array_record-00000-of-00001") for name in files_a)
    for split in ("train", "validation"):
        ra, rc = a.conversations(split), c.conversations(split)
        assert all(np.array_equal(x.ids, y.ids) and x.probes == y.probes
                   for x, y in zip(ra, b.conversations(split), strict=True))
        assert not all(np.array_equal(x.ids, y.ids) for x, y in zip(ra, rc, strict=True))


def test_tokenizer_training_is_deterministic(ds, tmp_path):
    texts = [t.text for conv in ds.texts("train")[:10] for t in conv.turns]
    train_tokenizer(texts, 400, tmp_path / "one")
    train_tokenizer(texts, 400, tmp_path / "two")
    one, two = (tmp_path / d / "tokenizer.json" for d in ("one", "two"))
    assert one.read_bytes() == two.read_bytes()


def test_prepare_is_idempotent_and_leaves_no_temp(ds, data_dir):
    before = (ds.root / "dataset.json").stat().st_mtime_ns
    again = prepare_dataset(synthetic_config(data_dir))
    assert again.root == ds.root and (ds.root / "dataset.json").stat().st_mtime_ns == before
    assert not [p for p in Path(data_dir).iterdir() if p.name.endswith(".tmp")]
