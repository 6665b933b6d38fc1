"""The analytic FLOPs formula against XLA's cost analysis of the compiled forward and step."""

import jax
import jax.numpy as jnp
import pytest

from longctx.config import ModelConfig
from longctx.eval.flops import call_shape, flops_per_token
from longctx.models import build_model, init_memory


def _unrolled_map(f, xs):
    """lax.map as a Python loop: XLA's cost analysis counts a while loop's body once, so
    the banded window attention is unrolled for counting (same maths, every block seen)."""
    n = jax.tree_util.tree_leaves(xs)[0].shape[0]
    outs = [f(jax.tree_util.tree_map(lambda a, i=i: a[i], xs)) for i in range(n)]
    return jax.tree_util.tree_map(lambda *o: jnp.stack(o), *outs)


def _xla_flops_per_token(cfg: ModelConfig, training: bool) -> float:
    model = build_model(cfg)
    t = call_shape(cfg)[0]
    x = jnp.zeros((1, t), jnp.int32)
    mem, reset = init_memory(cfg, 1), jnp.zeros(1, bool)
    params = jax.eval_shape(model.init, {"params": jax.random.PRNGKey(0)}, x, mem, reset)["params"]

    def forward(p, x, mem):
        return model.apply({"params": p}, x, mem, reset)[0]

    def loss(p, x, mem):
        return -jnp.mean(jax.nn.log_softmax(forward(p, x, mem))[..., 0])

    fn = jax.grad(loss) if training else forward
    cost = jax.jit(fn).lower(params, x, mem).compile().cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost
    return cost["flops"] / t


@pytest.mark.parametrize(("arch", "training"), [
    ("xl", False), ("xl", True), ("window", False), ("window", True), ("vanilla", False),
    ("vanilla", True), ("rmt", False), ("rmt", True)])
def test_formula_matches_xla(arch, training, monkeypatch):
    monkeypatch.setattr(jax.lax, "map", _unrolled_map)
    # element-wise work is left out of the formula: a few per cent at d_head 32
    cfg = ModelConfig(arch=arch, n_token=256, n_layer=1, n_head=2, d_model=64, d_head=32,
                      d_inner=128).replace(xl=dict(tgt_len=16, mem_len=48),
                                           window=dict(window=24, seq_len=64),
                                           vanilla=dict(ctx_len=40))
    ours = flops_per_token(cfg, training)
    xla = _xla_flops_per_token(cfg, training)
    assert ours == pytest.approx(xla, rel=0.06), (arch, training, ours, xla)


def test_formula_scales_with_span():
    base = ModelConfig(arch="xl", n_token=512).replace(xl=dict(mem_len=64, tgt_len=64))
    longer = ModelConfig(arch="xl", n_token=512).replace(xl=dict(mem_len=256, tgt_len=64))
    assert flops_per_token(longer, False) > flops_per_token(base, False)
    assert flops_per_token(base, True) == pytest.approx(3 * flops_per_token(base, False))


def test_training_flops_count_the_rematerialised_forward():
    """A step that rematerialises (K > 1 segments through a scan, or model.remat) runs the
    forward a second time in the backward pass: 4x the forward instead of 3x."""
    from longctx.config import ModelConfig
    from longctx.eval.flops import flops_per_token

    plain = ModelConfig(arch="xl", n_token=64)
    forward = flops_per_token(plain, False)
    assert flops_per_token(plain, True) == 3 * forward
    for cfg in (plain.replace(xl=dict(bptt_segments=4)), plain.replace(remat=True),
                plain.replace(arch="rmt", rmt=dict(bptt_segments=2))):
        assert flops_per_token(cfg, True) == 4 * flops_per_token(cfg, False)
