"""Saved conversation state round-trips exactly, for every decode state and dtype."""


import jax
import numpy as np
import pytest

from longctx.config import ModelConfig
from longctx.errors import UserError
from longctx.generate import state as saved
from longctx.generate.state import Conversation, Turn
from longctx.models import window_decode_init, xl_decode_init


def _decode(arch: str, dtype: str):
    cfg = ModelConfig(arch=arch, n_token=50, n_layer=2, n_head=2, d_model=16, d_head=8,
                      dtype=dtype).replace(xl=dict(tgt_len=4, mem_len=8), window=dict(window=8))
    empty = (xl_decode_init if arch == "xl" else window_decode_init)(cfg, 1)
    keys = iter(jax.random.split(jax.random.PRNGKey(0), 8))
    full = jax.tree.map(lambda x: jax.random.normal(next(keys), x.shape).astype(x.dtype)
                        if x.ndim else x + 3, empty)
    return cfg, empty, full


@pytest.mark.parametrize("arch", ["xl", "window"])
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_save_load_round_trips_exactly(tmp_path, arch, dtype):
    cfg, empty, full = _decode(arch, dtype)
    conv = Conversation(decode=full, tokens=[1, 4, 13, 49], turns=[Turn("user", "héllo")],
                        rng=np.asarray([7, 9], np.uint32))
    meta = {"model": cfg.to_dict()}
    saved.save(conv, tmp_path, "a", meta)
    back = saved.load(tmp_path, "a", empty, meta, cfg.n_token)
    assert back.tokens == conv.tokens and back.turns == conv.turns
    np.testing.assert_array_equal(back.rng, conv.rng)
    for got, want in zip(jax.tree.leaves(back.decode), jax.tree.leaves(full), strict=True):
        assert got.dtype == want.dtype and got.shape == want.shape
        np.testing.assert_array_equal(np.asarray(got, np.float32), np.asarray(want, np.float32))
    # a state of another shape is refused, naming the array
    other = cfg.replace(xl=dict(mem_len=16), window=dict(window=16))
    template = (xl_decode_init if arch == "xl" else window_decode_init)(other, 1)
    with pytest.raises(UserError, match="array 'decode"):
        saved.load(tmp_path, "a", template, meta, cfg.n_token)
