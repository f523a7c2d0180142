"""The exceptions that rankrun words itself: one line that names the problem and the fix."""


class RankrunError(Exception):
    """A problem reported as one line, never a traceback; the command exits with code 2."""


class UsageError(RankrunError):
    """Bad input, found before anything is spawned. The message names the problem and the fix."""
