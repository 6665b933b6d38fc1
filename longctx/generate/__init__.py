"""longctx.generate."""
