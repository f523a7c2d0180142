"""The one libc call rankrun makes through ctypes (Linux; elsewhere it does nothing)."""

from __future__ import annotations

import sys

_PR_SET_CHILD_SUBREAPER = 36


def set_subreaper(on: bool) -> bool:
    """Make this process adopt orphaned descendants.

    Without it, a rank's helper that outlives the rank goes to init, which may not reap it
    (a container's PID 1 often does not), and its group would look alive as a zombie.
    """
    if not sys.platform.startswith("linux"):
        return False
    import ctypes  # only here: it costs milliseconds of start-up

    libc = ctypes.CDLL(None, use_errno=True)
    return bool(libc.prctl(_PR_SET_CHILD_SUBREAPER, int(on), 0, 0, 0) == 0)
