"""The one libc call rankrun makes, through ``_ctypes`` (Linux; elsewhere it does nothing).

``_ctypes`` is the C module under ``ctypes``: calling prctl through it takes 0.9 ms, where
importing ``ctypes`` takes 3 ms of every launch, for types rankrun never uses.
"""

from __future__ import annotations

import sys

_PR_SET_CHILD_SUBREAPER = 36
_RTLD_NOW = 2


def set_subreaper(on: bool) -> bool:
    """Make this process adopt orphaned descendants.

    Without it, a rank's helper that outlives the rank goes to init, which may not reap it
    (a container's PID 1 often does not), and its group would look alive as a zombie.
    """
    if not sys.platform.startswith("linux"):
        return False
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
        return False
    prctl = Function(address)
    return bool(prctl(_PR_SET_CHILD_SUBREAPER, int(on), 0, 0, 0) == 0)
