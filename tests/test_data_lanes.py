"""Lane-stable batches: every lane replays whole conversations in order, resets exactly
where a new one starts, splits over processes, and resumes exactly (in a new process)."""

import json
import subprocess
import sys

import numpy as np
import pytest

from longctx.data import lanes_for_process, make_lanes, merge_states, prepare_dataset
from longctx.errors import UserError
from tests.conftest import REPO, subprocess_env
from tests.data_fixtures import synthetic_config

B, SEG = 3, 40


@pytest.fixture(scope="module")
def ds(data_dir):
    return prepare_dataset(synthetic_config(data_dir))


def _take(lanes, k):
    return [next(lanes) for _ in range(k)]


def test_shapes_and_dtypes(ds):
    batch = next(make_lanes(ds, "train", B, SEG))
    assert batch["inputs"].shape == batch["targets"].shape == (B, SEG)
    assert batch["inputs"].dtype == batch["targets"].dtype == np.int32
    assert batch["mask"].dtype == np.float32 and batch["reset"].dtype == bool
    assert batch["reset"].all()


@pytest.mark.parametrize("mode,seg_len", [("segments", SEG), ("sequences", 256)])
def test_lanes_replay_whole_conversations_with_resets(ds, mode, seg_len):
    lanes = make_lanes(ds, "train", B, seg_len, mode=mode, seed=3)
    batches = _take(lanes, 120 if mode == "segments" else 30)
    pad = ds.special_ids["pad"]
    convs = ds.conversations("train")
    for row in range(B):
        streams, current = [], None
        for batch in batches:
            mask = batch["mask"][row].astype(bool)
            n = int(mask.sum())
            assert mask[:n].all() and not mask[n:].any()  # data first, then padding
            assert (batch["inputs"][row][n:] == pad).all()
            if batch["reset"][row]:
                current = {"inputs": [], "targets": []}
                streams.append(current)
            assert current is not None, "a lane started without a reset"
            current["inputs"].extend(batch["inputs"][row][:n])
            current["targets"].extend(batch["targets"][row][:n])
            if n < seg_len:  # the conversation ended inside this segment
                current = None
        assert len(streams) >= 2
        for k, stream in enumerate(streams[:-1]):  # the last one may still be running
            ids = convs[lanes.conversation_index(row, k)].ids
            np.testing.assert_array_equal(stream["inputs"], ids[:-1])
            np.testing.assert_array_equal(stream["targets"], ids[1:])
            assert stream["targets"][-1] == ds.special_ids["eos"]


def test_epochs_reshuffle_and_cover_the_split(ds):
    lanes = make_lanes(ds, "train", B, SEG, seed=0)
    n = len(ds.source("train"))
    per_epoch = [sorted(lanes.conversation_index(lane, k) for lane in range(B)
                        for k in range(100) if (lane + k * B) // n == epoch) for epoch in (0, 1)]
    assert per_epoch[0] == per_epoch[1] == list(range(n))
    first = [lanes.conversation_index(0, k) for k in range(3)]
    assert first != [make_lanes(ds, "train", B, SEG, seed=1).conversation_index(0, k)
                     for k in range(3)]


def test_process_lanes_equal_the_global_rows(ds):
    full = _take(make_lanes(ds, "train", 4, SEG, seed=2), 30)
    ids = lanes_for_process(4, 1, 2)
    assert ids == [2, 3]
    part = _take(make_lanes(ds, "train", 4, SEG, seed=2, lane_ids=ids), 30)
    for f, p in zip(full, part, strict=True):
        for key in f:
            np.testing.assert_array_equal(f[key][2:], p[key])


def test_merged_process_states_restore_any_layout(ds):
    parts = [make_lanes(ds, "train", 4, SEG, seed=2, lane_ids=lanes_for_process(4, i, 2))
             for i in range(2)]
    for part in parts:
        _take(part, 9)
    whole = make_lanes(ds, "train", 4, SEG, seed=2)
    whole.set_state(merge_states([p.get_state() for p in parts]))
    reference = make_lanes(ds, "train", 4, SEG, seed=2)
    _take(reference, 9)
    for got, want in zip(_take(whole, 4), _take(reference, 4), strict=True):
        for key in want:
            np.testing.assert_array_equal(got[key], want[key])


def test_no_loop_reads_each_conversation_once(ds):
    lanes = make_lanes(ds, "validation", 4, 512, loop=False)
    batches = list(lanes)
    tokens = sum(int(b["mask"].sum()) for b in batches)
    assert tokens == sum(len(c.ids) - 1 for c in ds.conversations("validation"))
    assert sum(int(b["reset"].sum()) for b in batches) == len(ds.source("validation"))


_RESUME = """
import json, sys
import numpy as np
from longctx.config import DataConfig
from longctx.data import make_lanes, prepare_dataset
cfg, state, out = json.loads(sys.argv[1]), json.loads(sys.argv[2]), sys.argv[3]
ds = prepare_dataset(DataConfig(**cfg))
lanes = make_lanes(ds, "train", 3, 40, seed=7, lane_ids=[0, 2])
lanes.set_state(state)
batches = [next(lanes) for _ in range(5)]
np.savez(out, **{f"{k}{i}": b[k] for i, b in enumerate(batches) for k in b})
"""


def test_state_resumes_exactly_in_a_new_process(ds, data_dir, tmp_path):
    lanes = make_lanes(ds, "train", 3, 40, seed=7, lane_ids=[0, 2])
    _take(lanes, 23)
    state = json.loads(json.dumps(lanes.get_state()))
    expected = _take(lanes, 5)
    cfg = json.dumps(vars(synthetic_config(data_dir)))
    out = tmp_path / "next.npz"
    subprocess.run([sys.executable, "-c", _RESUME, cfg, json.dumps(state), str(out)],
                   cwd=REPO, env=subprocess_env(), check=True, timeout=120)
    got = np.load(out)
    for i, batch in enumerate(expected):
        for key, value in batch.items():
            np.testing.assert_array_equal(got[f"{key}{i}"], value)


def test_state_from_other_batching_is_refused(ds):
    state = make_lanes(ds, "train", 3, 40).get_state()
    with pytest.raises(UserError, match="seg_len"):
        make_lanes(ds, "train", 3, 64).set_state(state)
    with pytest.raises(UserError, match="no position for lanes"):
        make_lanes(ds, "train", 3, 40, lane_ids=[1]).set_state({**state, "lanes": {"0": [0, 0]}})
    with pytest.raises(UserError, match="mode"):
        make_lanes(ds, "train", 3, 40, mode="windows")


def test_a_damaged_lanes_state_is_one_line(ds):
    state = make_lanes(ds, "train", 4, 16).get_state()
    for bad in ("x", [0, -5], [0], [True, 0], None):
        with pytest.raises(UserError, match=r"^lanes state: lane 2's position .* is not two "
                                            r"integers >= 0"):
            merge_states([{**state, "lanes": {**state["lanes"], "2": bad}}])
    past_end = merge_states([{**state, "lanes": {**state["lanes"], "2": [0, 10**6]}}])
    with pytest.raises(UserError, match="lane 2 is at offset 1000000, past the end"):
        make_lanes(ds, "train", 4, 16).set_state(past_end)
