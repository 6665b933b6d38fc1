"""The smallest config: a few seconds of CPU. Used by the tests and as a template."""

from longctx.config import Config


def get_config() -> Config:
    cfg = Config(name="smoke")
    cfg.model = cfg.model.replace(  # the model section is frozen: set it whole
        arch="xl",
        n_layer=2, n_head=2, d_model=32, d_head=16, d_inner=64,
        dropout=0.1, dropatt=0.0,
        matmul_precision="highest",  # the tests compare numbers: full float32 on any backend
        # each architecture's own section
        xl=dict(tgt_len=16, mem_len=32), window=dict(window=32, seq_len=64),
        vanilla=dict(ctx_len=32), rmt=dict(seg_len=16),
    )
    d = cfg.data
    d.name, d.span, d.num_train, d.num_validation, d.vocab_size = "synthetic", 32, 40, 10, 512
    cfg.train.batch_size = 4
    cfg.train.num_steps = 12
    cfg.train.log_every = 2
    cfg.train.host_sync_every = 4
    cfg.optim.warmup_steps = 2
    cfg.checkpoint.every_steps = 4
    cfg.checkpoint.keep = 3
    cfg.eval.speed_tokens = 64  # the speed check's streams: enough to time, not to wait on
    return cfg
