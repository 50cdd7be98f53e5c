"""Errors a user can cause. The CLI prints these as one line (no traceback) and exits with status 2."""


class UserError(Exception):
    """A mistake in what the user asked for: a missing file, an unknown symbol, a mismatched checkpoint."""
