"""Errors that are the user's to fix: the CLI prints them as one line and exits 2."""


class UserError(ValueError):
    """Bad input from the user (a spec, an option, a path): the message names the problem and the fix."""
