"""User-facing errors: one line saying what is wrong, where, and how to fix it."""

from __future__ import annotations


class UserError(Exception):
    """Bad input from the user (a file, a flag, a saved state); the CLI prints it and exits 2."""


class ConfigError(ValueError):
    """A bad configuration value; the message names the key and the problem (the CLI
    prints it and exits 2, as a UserError)."""

    def __init__(self, message: str, key: str | None = None) -> None:
        super().__init__(message)
        self.key = key  # the dotted key at fault, when there is one
