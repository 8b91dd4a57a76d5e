"""Errors that are the user's to fix (bad flags, files, specs): CLIs print them as one line, exit 2."""


class UserError(ValueError):
    """Bad input: reported as a single line without a traceback."""
