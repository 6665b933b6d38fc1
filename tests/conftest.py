"""Shared test setup: offline, quiet, persistent JAX compilation cache."""

import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import jax  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
jax.config.update("jax_compilation_cache_dir", str(REPO / ".jax_cache"))
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)

FIXTURES = Path(__file__).resolve().parent / "fixtures"
