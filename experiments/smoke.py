"""The smallest config: a few seconds of CPU. Used by the tests and as a template."""

from longctx.config import Config


def get_config() -> Config:
    cfg = Config(name="smoke")
    m = cfg.model
    m.arch = "xl"
    m.n_layer, m.n_head, m.d_model, m.d_head, m.d_inner = 2, 2, 32, 16, 64
    m.tgt_len, m.mem_len, m.window, m.ctx_len, m.seq_len = 16, 32, 32, 32, 64
    m.dropout, m.dropatt = 0.1, 0.0
    m.matmul_precision = "highest"  # the tests compare numbers: full float32 on any backend
    d = cfg.data
    d.name, d.span, d.num_train, d.num_validation, d.vocab_size = "synthetic", 32, 40, 10, 512
    cfg.train.batch_size = 4
    cfg.train.num_steps = 12
    cfg.train.log_every = 2
    cfg.train.host_sync_every = 4
    cfg.optim.warmup_steps = 2
    cfg.checkpoint.every_steps = 4
    cfg.checkpoint.keep = 3
    return cfg
