"""Free-port choice and busy-port checks for single-node runs."""

from __future__ import annotations

import socket


def free_port() -> int:
    """A port that is free now. Another process may take it before the ranks bind it."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("", 0))
        port: int = s.getsockname()[1]
        return port


def port_in_use(port: int) -> bool:
    """Whether something listens on ``port``; a port left in TIME_WAIT counts as free.

    torch's TCPStore binds with SO_REUSEADDR, so TIME_WAIT does not stop it either.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("", port))
        except OSError:
            return True
        return False
