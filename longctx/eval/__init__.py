"""longctx.eval."""
