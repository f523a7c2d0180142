"""Free-port choice and busy-port checks for single-node runs.

They use ``_socket``, the C module under ``socket``: ``socket`` itself builds enums of every
constant at import, a cost every launch would pay for two calls that need none of them.
"""

from __future__ import annotations

import _socket


def free_port() -> int:
    """A port that is free now. Another process may take it before the ranks bind it."""
    s = _socket.socket(_socket.AF_INET, _socket.SOCK_STREAM)
    try:
        s.bind(("", 0))
        port: int = s.getsockname()[1]
        return port
    finally:
        s.close()


def port_in_use(port: int) -> bool:
    """Whether something listens on ``port``, over IPv4 or IPv6; TIME_WAIT counts as free.

    torch's TCPStore binds with SO_REUSEADDR, so TIME_WAIT does not stop it either.
    """
    return _bind_fails(_socket.AF_INET, "0.0.0.0", port) or _bind_fails(
        _socket.AF_INET6, "::", port
    )


def _bind_fails(family: int, address: str, port: int) -> bool:
    try:
        s = _socket.socket(family, _socket.SOCK_STREAM)
    except OSError:
        return False  # no IPv6 here: nothing can hold the port over it
    try:
        s.setsockopt(_socket.SOL_SOCKET, _socket.SO_REUSEADDR, 1)
        if family == _socket.AF_INET6:
            s.setsockopt(_socket.IPPROTO_IPV6, _socket.IPV6_V6ONLY, 1)
        s.bind((address, port))
    except OSError:
        return True
    finally:
        s.close()
    return False
