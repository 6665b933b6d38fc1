"""longctx.data.builders."""
