"""longctx.data."""
