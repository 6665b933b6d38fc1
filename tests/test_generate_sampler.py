"""The sampler: greedy, temperature, top-k, top-p, and seeding."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from longctx.errors import UserError
from longctx.generate.sampler import SamplerSettings, filter_logits, sample_token, split_and_sample

PROBS = np.log(np.array([[0.05, 0.5, 0.15, 0.3]], np.float32))


@jax.jit
def _vmapped(logits, keys, knobs):
    return jax.vmap(lambda k: sample_token(logits, k, **knobs)[0])(keys)


def _draws(settings: SamplerSettings, n: int = 400) -> np.ndarray:
    """n draws from PROBS, one key each (one compiled function for every setting and n)."""
    keys = jax.random.split(jax.random.PRNGKey(0), n)
    return np.asarray(_vmapped(jnp.asarray(PROBS), keys, settings.knobs()))


def test_greedy_is_argmax_whatever_the_key():
    assert set(_draws(SamplerSettings(temperature=0.0))) == {1}


def test_temperature_one_follows_the_distribution():
    counts = np.bincount(_draws(SamplerSettings(temperature=1.0), n=4000), minlength=4) / 4000
    np.testing.assert_allclose(counts, [0.05, 0.5, 0.15, 0.3], atol=0.03)


def test_top_k_keeps_only_the_k_most_likely():
    assert set(_draws(SamplerSettings(temperature=1.0, top_k=2))) == {1, 3}
    assert set(_draws(SamplerSettings(temperature=5.0, top_k=1))) == {1}


def test_top_p_keeps_the_smallest_nucleus():
    # sorted mass: 0.5, 0.8, 0.95, 1.0 -> top_p 0.7 needs {1, 3}; 0.9 needs {1, 3, 2}
    assert set(_draws(SamplerSettings(temperature=1.0, top_p=0.7))) == {1, 3}
    assert set(_draws(SamplerSettings(temperature=1.0, top_p=0.9))) == {1, 3, 2}
    assert set(_draws(SamplerSettings(temperature=1.0, top_p=0.3))) == {1}


def test_filters_off_keep_everything_and_compose():
    out = filter_logits(jnp.asarray(PROBS), jnp.asarray(0), jnp.asarray(1.0))
    np.testing.assert_array_equal(out, PROBS)
    both = filter_logits(jnp.asarray(PROBS), jnp.asarray(3), jnp.asarray(0.7))
    assert np.isfinite(np.asarray(both)).tolist() == [[False, True, False, True]]


def test_same_key_same_tokens_and_key_advances():
    logits = jax.random.normal(jax.random.PRNGKey(1), (1, 50))
    knobs = SamplerSettings(temperature=1.0).knobs()
    key = jax.random.PRNGKey(7)
    sample = jax.jit(lambda *args: split_and_sample(*args))
    a, key_a = sample(logits, key, knobs)
    b, key_b = sample(logits, key, knobs)
    assert int(a[0]) == int(b[0]) and np.array_equal(key_a, key_b)
    assert not np.array_equal(key_a, key)
    seq = []
    for _ in range(20):
        t, key = sample(logits, key, knobs)
        seq.append(int(t[0]))
    assert len(set(seq)) > 1  # the key really moves on


def test_settings_change_without_recompiling():
    traces = []

    def counted(*args):  # runs only while jax traces (= compiles) it
        traces.append(1)
        return split_and_sample(*args)

    fn = jax.jit(counted)
    logits = jnp.zeros((1, 10))
    for s in (SamplerSettings(0.0), SamplerSettings(0.7, 5, 0.9), SamplerSettings(1.3, 0, 0.5)):
        fn(logits, jax.random.PRNGKey(0), s.knobs())
    assert len(traces) == 1


@pytest.mark.parametrize("bad", [dict(temperature=-1), dict(top_k=-2), dict(top_p=0.0),
                                 dict(top_p=1.5), dict(max_new_tokens=0)])
def test_bad_settings_name_the_flag(bad):
    with pytest.raises(UserError, match="--"):
        SamplerSettings(**bad)
