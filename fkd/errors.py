"""The one exception a user sees as a single line and exit code 2 (bad input, missing files...)."""


class FkdError(Exception):
    """A problem the user can fix: the message names the file and the fix. The CLI prints it, exits 2."""
