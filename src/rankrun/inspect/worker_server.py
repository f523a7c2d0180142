"""A client of torch's worker server: the handlers a rank serves on its own Unix socket.

A script wrapped in ``torch.distributed.elastic.control_plane.worker_main`` serves, on the
socket ``TORCH_WORKER_SERVER_SOCKET`` names, ``POST /handler/<name>`` for ``ping``,
``dump_traceback`` (every thread's Python stack, as faulthandler writes it: no ptrace),
``fr_trace_json`` (the flight recorder), ``pyspy_dump`` and ``wait_counter_values``
(torch 2.13's ``c10d/control_plane/WorkerServer.cpp``, over cpp-httplib). A socket that is
not there means the rank does not serve. Standard library only: one request, HTTP/1.1 by
hand, bounded by one deadline.
"""

from __future__ import annotations

import socket
import time

from rankrun.base.errors import RankrunError

VAR = "TORCH_WORKER_SERVER_SOCKET"
MAX_PATH = 107
"""The longest path a Unix socket's address holds (sun_path, less its NUL), in bytes."""
_MAX_REPLY = 64 << 20


class NotServing(RankrunError):
    """The rank serves no worker server, or its server did not answer; the message says why."""


def ask(path: str, handler: str, timeout: float) -> bytes:
    """The body of ``handler``'s answer on the socket ``path``, within ``timeout`` seconds.

    Raises ``NotServing``: nothing listens there, the server failed, or time ran out.
    """
    deadline = time.monotonic() + timeout
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
        try:
            conn.settimeout(timeout)
            conn.connect(path)
            conn.sendall(
                f"POST /handler/{handler} HTTP/1.1\r\nHost: localhost\r\n"
                "Content-Length: 0\r\nConnection: close\r\n\r\n".encode()
            )
            return _reply(conn, deadline, f"{path}: {handler}")
        except (FileNotFoundError, ConnectionRefusedError):
            raise NotServing(f"nothing serves on {path}") from None
        except TimeoutError:
            raise NotServing(f"{handler} on {path} did not answer within {timeout:g} s") from None
        except OSError as e:
            raise NotServing(f"{handler} on {path}: {e.strerror or e}") from None


def _reply(conn: socket.socket, deadline: float, what: str) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data:
        data += _read(conn, deadline, what)
    head, body = data.split(b"\r\n\r\n", 1)
    lines = head.decode("latin-1").split("\r\n")
    status = lines[0].split(" ", 2)
    if len(status) < 2 or status[1] != "200":
        raise NotServing(f"{what}: the server answered {lines[0]!r}")
    fields = dict(line.lower().split(":", 1) for line in lines[1:] if ":" in line)
    length = int(fields.get("content-length", -1))
    if length < 0 or length > _MAX_REPLY:
        raise NotServing(f"{what}: an answer without a usable Content-Length")
    while len(body) < length:
        body += _read(conn, deadline, what)
    return body[:length]


def _read(conn: socket.socket, deadline: float, what: str) -> bytes:
    left = deadline - time.monotonic()
    if left <= 0:
        raise TimeoutError
    conn.settimeout(left)
    chunk = conn.recv(1 << 16)
    if not chunk:
        raise NotServing(f"{what}: the server closed the connection mid-answer")
    return chunk
