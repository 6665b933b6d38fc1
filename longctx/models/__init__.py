"""longctx.models."""
