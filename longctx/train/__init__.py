"""longctx.train."""
