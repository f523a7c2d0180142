"""The one libc call rankrun makes, through ``_ctypes`` (Linux; elsewhere it does nothing).

``_ctypes`` is the C module under ``ctypes``: calling prctl through it takes 0.9 ms, where
importing ``ctypes`` takes 3 ms of every launch, for types rankrun never uses.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable

_PR_SET_CHILD_SUBREAPER = 36
_RTLD_NOW = 2


def set_subreaper(on: bool) -> bool:
    """Make this process adopt orphaned descendants.

    Without it, a rank's helper that outlives the rank goes to init, which may not reap it
    (a container's PID 1 often does not), and its group would look alive as a zombie.
    """
    prctl = load_prctl()
    return prctl is not None and prctl(_PR_SET_CHILD_SUBREAPER, int(on), 0, 0, 0) == 0


@functools.cache
def load_prctl() -> Callable[..., int] | None:
    """libc's prctl; None off Linux. Loading it takes 0.5 ms: call this while a child runs."""
    if not sys.platform.startswith("linux"):
        return None
    import _ctypes

    class Int(_ctypes._SimpleCData):  # type: ignore[type-arg]
        _type_ = "i"

    class Function(_ctypes.CFuncPtr):
        _flags_ = _ctypes.FUNCFLAG_CDECL
        _restype_ = Int

    try:
        libc = _ctypes.dlopen(None, _RTLD_NOW)  # type: ignore[arg-type]
        address = _ctypes.dlsym(libc, "prctl")
    except OSError:
        return None
    return Function(address)
