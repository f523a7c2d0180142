"""Reaps the launcher's own children, and never a child its caller started.

The launcher's children are its ranks and, as a subreaper, the orphans it adopts. A
``waitpid(-1)`` would also take the exit status of a process the caller of ``launch()``
started before it, so the children present at the start are left alone: each reaped child
is first looked at without being reaped (``WNOWAIT``).
"""

from __future__ import annotations

import os
import time

from rankrun.run.watch import Exited

_PEEK = os.WEXITED | os.WNOHANG | os.WNOWAIT


class Reaper:
    def __init__(self) -> None:
        self._foreign = frozenset(children())
        """The caller's children: there before the launcher started any."""

    def reap(self) -> list[Exited]:
        """Every child of the launcher's that has ended, reaped."""
        exits: list[Exited] = []
        while True:
            try:
                peek = os.waitid(os.P_ALL, 0, _PEEK)
            except ChildProcessError:
                return exits
            if peek is None:
                return exits
            if peek.si_pid in self._foreign:
                break  # it stays unreaped, and would hide the launcher's own from the peek
            ended = _reap(peek.si_pid)
            if ended is not None:
                exits.append(ended)
        ours = (_reap(pid) for pid in children() if pid not in self._foreign)
        return exits + [e for e in ours if e is not None]

    def adopted(self) -> list[int]:
        """The launcher's children now: once the ranks are gone, the orphans it adopted."""
        return [pid for pid in children() if pid not in self._foreign]


def _reap(pid: int) -> Exited | None:
    try:
        result = os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG)
    except ChildProcessError:
        return None
    if result is None:
        return None
    if result.si_code == os.CLD_EXITED:
        return Exited(result.si_pid, result.si_status, None, time.time())
    return Exited(result.si_pid, None, result.si_status, time.time())


def children() -> list[int]:
    """This process's children, from /proc; empty where /proc does not list them."""
    found: list[int] = []
    try:
        tasks = os.listdir("/proc/self/task")
    except OSError:
        return found
    for task in tasks:
        try:
            with open(f"/proc/self/task/{task}/children") as f:
                found.extend(int(p) for p in f.read().split())
        except OSError:
            pass
    return found
