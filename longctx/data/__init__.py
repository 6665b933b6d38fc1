"""longctx.data: dialogue datasets (synthetic memory benchmark, MSC, QMSum), their
tokenizer, and lane-stable batches.

The contract the rest of longctx codes against::

    from longctx.data import prepare_dataset, make_lanes

    ds = prepare_dataset(data_cfg)   # builds once under data_cfg.data_dir, then opens it
    ds.tokenizer                     # transformers.PreTrainedTokenizerFast (offline)
    ds.tokenizer_dir                 # its save_pretrained folder (copy it into run dirs)
    ds.vocab_size                    # int, specials included
    ds.special_ids                   # {'pad','bos','eos','eot','session','spk0'..'spk7'} -> id
    ds.source(split)                 # random-access records ('train' / 'validation')
    ds.conversations(split)          # list[TokenizedConversation], the dataset's order
    ds.texts(split)                  # list[Conversation] (text, session headers, probes)
    ds.slot_values(slot)             # all values of a synthetic slot; () for real corpora
    ds.encode_value(value)           # a value's tokens exactly as inside a stream

    lanes = make_lanes(ds, split, batch_size, seg_len, mode='segments' | 'sequences',
                       lane_ids=None, seed=0, loop=True)
    batch = next(lanes)   # inputs/targets [b, seg_len] int32, mask [b, seg_len] float32,
                          # reset [b] bool (the row starts a new conversation)
    state = lanes.get_state(); lanes.set_state(state)   # exact resume, any process
    merge_states([state_of_process_0, ...])   # every lane in one state: any process layout
    lanes_for_process(batch_size, process_index, process_count)   # a process's lane ids

Stream layout, span semantics and distances: `render.py`; batching rules: `lanes.py`;
the synthetic benchmark: `synthetic_dialogues.py`.
"""

from importlib import import_module

# name -> the module defining it. Imported on first use (PEP 562), so that importing one
# light submodule (e.g. `longctx.data.lanes` from training's device code) does not pull in
# TensorFlow Datasets and the tokenizer libraries.
_EXPORTS = {
    "BUCKET_NAMES": "buckets", "distance_bucket": "buckets",
    "Conversation": "conversation", "Probe": "conversation", "Turn": "conversation",
    "DialogueDataset": "dataset", "dataset_dir": "dataset", "prepare_dataset": "dataset",
    "Lanes": "lanes", "lanes_for_process": "lanes", "make_lanes": "lanes",
    "merge_states": "lanes",
    "ProbeSpan": "render", "TokenizedConversation": "render", "TurnSpan": "render",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'longctx.data' has no attribute {name!r}")
    value = getattr(import_module(f"longctx.data.{_EXPORTS[name]}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
