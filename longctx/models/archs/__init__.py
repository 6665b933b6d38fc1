"""Memory mechanisms as plug-ins: one module per architecture behind one interface.

    arch = get(cfg.model)          # the registered Arch of model.arch (ConfigError if none)
    names()                        # every registered name: 'xl', 'window', 'vanilla', ...
    studied()                      # those the comparison studies train by default
    register(MyArch())             # add a mechanism (see docs/architecture.md)
    check_run(cfg)                 # config.validate + the architecture's own rules

The interface is `base.Arch`; the built-ins are `xl.py`, `window.py`, `vanilla.py` and
`rmt.py`.
"""

from longctx.models.archs.base import Arch, CallShape, ScoringPlan, SegmentDecodeState
from longctx.models.archs.registry import (
    BASELINE,
    MEMORY_REFERENCE,
    check_run,
    get,
    names,
    register,
    resolved_steps,
    span,
    studied,
    tokens_per_step,
    unregister,
)

__all__ = ["BASELINE", "MEMORY_REFERENCE", "Arch", "CallShape", "ScoringPlan",
           "SegmentDecodeState", "check_run", "get", "names", "register", "resolved_steps",
           "span", "studied", "tokens_per_step", "unregister"]
