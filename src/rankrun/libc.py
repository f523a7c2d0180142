"""The two libc calls rankrun makes through ctypes (Linux; elsewhere they do nothing)."""

from __future__ import annotations

import sys
from typing import Any

_PR_SET_CHILD_SUBREAPER = 36
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3


def _libc() -> Any:
    if not sys.platform.startswith("linux"):
        return None
    import ctypes  # only here: it costs milliseconds of start-up

    return ctypes.CDLL(None, use_errno=True)


def set_subreaper(on: bool) -> bool:
    """Make this process adopt orphaned descendants.

    Without it, a rank's helper that outlives the rank goes to init, which may not reap it
    (a container's PID 1 often does not), and its group would look alive as a zombie.
    """
    libc = _libc()
    return libc is not None and libc.prctl(_PR_SET_CHILD_SUBREAPER, int(on), 0, 0, 0) == 0


def keep_freed_memory(limit: int = 1 << 20) -> None:
    """Let glibc keep up to ``limit`` bytes of freed heap for reuse, process-wide.

    Relaying a 64 KiB chunk allocates buffers of 64 to 140 KiB. With glibc's 128 KiB trim and
    mmap thresholds, each went back to the kernel at once and was faulted in anew for the
    next chunk: 3600 brk calls and about a third of the relay's time on the bench workload.
    """
    libc = _libc()
    mallopt = getattr(libc, "mallopt", None)
    if mallopt is not None:
        mallopt(_M_TRIM_THRESHOLD, limit)
        mallopt(_M_MMAP_THRESHOLD, limit)
