"""The libc calls rankrun makes, through ``_ctypes`` (Linux; elsewhere they do nothing).

``_ctypes`` is the C module under ``ctypes``: calling prctl through it costs a fraction of
importing ``ctypes``, which builds types rankrun never uses.
"""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable

_PR_SET_CHILD_SUBREAPER = 36
_RTLD_NOW = 2
_SFD_FLAGS = os.O_NONBLOCK | os.O_CLOEXEC  # SFD_NONBLOCK | SFD_CLOEXEC
_LONG_BYTES = 8 if sys.maxsize > 2**32 else 4


def set_subreaper(on: bool) -> bool:
    """Make this process adopt orphaned descendants.

    Without it, a rank's helper that outlives the rank goes to init, which may not reap it
    (a container's PID 1 often does not), and its group would look alive as a zombie.
    """
    prctl = load_prctl()
    return prctl is not None and prctl(_PR_SET_CHILD_SUBREAPER, int(on), 0, 0, 0) == 0


def open_signalfd(signum: int) -> int | None:
    """A descriptor that reads as ready while ``signum`` is pending; None off Linux."""
    signalfd = _function("signalfd")
    if signalfd is None:
        return None
    word = (1 << (signum - 1)).to_bytes(_LONG_BYTES, sys.byteorder)
    fd: int = signalfd(-1, word + bytes(128 - _LONG_BYTES), _SFD_FLAGS)  # a glibc sigset_t
    return fd if fd >= 0 else None


def load_prctl() -> Callable[..., int] | None:
    """libc's prctl; None off Linux. Loading it takes a while: call this while a child runs."""
    return _function("prctl")


@functools.cache
def _function(name: str) -> Callable[..., int] | None:
    if not sys.platform.startswith("linux"):
        return None
    import _ctypes

    class Int(_ctypes._SimpleCData):  # type: ignore[type-arg]
        _type_ = "i"

    class Function(_ctypes.CFuncPtr):
        _flags_ = _ctypes.FUNCFLAG_CDECL
        _restype_ = Int

    try:
        address = _ctypes.dlsym(_libc(), name)
    except OSError:
        return None
    return Function(address)


@functools.cache
def _libc() -> int:
    import _ctypes

    return _ctypes.dlopen(None, _RTLD_NOW)  # type: ignore[arg-type]
