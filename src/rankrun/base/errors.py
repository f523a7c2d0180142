"""The one exception type for a user's mistake."""


class UsageError(Exception):
    """Bad input: reported as one line with exit code 2, before anything is spawned.

    The message names the problem and the fix.
    """
