"""User-facing errors: one line saying what is wrong, where, and how to fix it."""


class UserError(Exception):
    """Bad input from the user (a file, a flag, a saved state); the CLI prints it and exits 2."""
