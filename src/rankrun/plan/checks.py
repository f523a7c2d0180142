"""Checks of a run's settings that read the machine: names, paths and limits.

Each raises UsageError with one line that names the problem and the fix.
"""

from __future__ import annotations

import math
import os
import stat

from rankrun.base.errors import UsageError
from rankrun.base.quoting import quote

MAX_SHUTDOWN_TIMEOUT = 86400.0
_RUN_ID_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-+:@=")


def check(condition: bool, message: str) -> None:
    if not condition:
        raise UsageError(message)


def check_seconds(value: float, flag: str, *, low: float, high: float) -> None:
    check(
        math.isfinite(value) and low <= value <= high,
        f"{flag} {value:g} is outside {low:g}..{high:g} seconds",
    )


def check_run_id(run_id: str) -> None:
    """A run id names a directory under the log dir, so it must be one plain name."""
    check(
        bool(run_id) and set(run_id) <= _RUN_ID_CHARS and run_id not in (".", ".."),
        f"--run-id {run_id!r}: use letters, digits and ._-+:@= only, such as exp-12",
    )


def check_utf8(value: str, flag: str) -> None:
    try:
        value.encode()
    except UnicodeEncodeError:
        raise UsageError(f"{flag} {value!r} is not valid UTF-8: rename it") from None


def check_writable_dir(path: str, flag: str) -> None:
    """Fail before anything runs if ``path`` cannot be created or written."""
    existing = os.path.abspath(path)
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing) or not os.access(existing, os.W_OK | os.X_OK):
        raise UsageError(f"{flag} {quote(path)}: {quote(existing)} is not a writable directory")


def check_new_file(path: str, flag: str) -> None:
    """``path`` can be written: not a directory, in a directory that exists and is writable."""
    shown, parent = quote(path), os.path.dirname(os.path.abspath(path))
    check(not os.path.isdir(path), f"{flag} {shown} is a directory: name a file in it")
    check(os.path.isdir(parent), f"{flag} {shown}: {quote(parent)} does not exist: create it first")
    check(os.access(parent, os.W_OK | os.X_OK), f"{flag} {shown}: {quote(parent)} is not writable")
    _check_name_length(path, parent, flag)


def _check_name_length(path: str, parent: str, flag: str) -> None:
    """A name too long for the file system would fail only when the file is written."""
    name = len(os.fsencode(os.path.basename(path)))
    try:
        most = os.pathconf(parent, "PC_NAME_MAX")
    except (OSError, ValueError):
        return  # the file system does not say
    check(
        name <= most,
        f"{flag}: the file name is {name} bytes long, and {quote(parent)} allows {most}: "
        "shorten it",
    )


def check_log_root(root: str) -> None:
    check(
        not os.path.exists(root) or stat.S_ISDIR(os.stat(root).st_mode),
        f"--run-id: {quote(root)} exists and is not a directory: choose another run id",
    )


FEW_FILES = 256
"""So few open files that any limit allows them: the limits are then not even read."""


def files_needed(ranks: int) -> int:
    """Each rank holds two pipes, and two more ends while it starts; and the launcher its own."""
    return 4 * ranks + 64


def check_limits(ranks: int) -> None:
    """The open-files and process limits must allow ``ranks`` ranks, before any starts."""
    needed = files_needed(ranks)
    if needed <= FEW_FILES:
        return
    import resource

    _, files = resource.getrlimit(resource.RLIMIT_NOFILE)
    check(
        files == resource.RLIM_INFINITY or needed <= files,
        f"--nproc-per-node {ranks} needs {needed} open files, and the hard limit is {files}: "
        "start fewer ranks, or raise the limit (ulimit -Hn)",
    )
    processes, _ = resource.getrlimit(resource.RLIMIT_NPROC)
    check(
        processes == resource.RLIM_INFINITY or ranks < processes,
        f"--nproc-per-node {ranks} is past the limit of {processes} processes: "
        "start fewer ranks, or raise the limit (ulimit -u)",
    )


def check_host(host: str, flag: str) -> None:
    """The host must have an address: torch would otherwise retry it for minutes."""
    check(bool(host), f"{flag} is empty: name a host, such as 127.0.0.1")
    if host in ("localhost", "127.0.0.1", "::1") or _is_address(host):
        return
    import _socket

    try:
        _socket.getaddrinfo(host, None)
    except OSError:
        raise UsageError(f"{flag} {host}: no such host: check the name") from None


def _is_address(host: str) -> bool:
    import _socket

    for family in (_socket.AF_INET, _socket.AF_INET6):
        try:
            _socket.inet_pton(family, host)
        except OSError:
            continue
        return True
    return False
