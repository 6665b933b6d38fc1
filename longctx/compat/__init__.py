"""longctx.compat."""
