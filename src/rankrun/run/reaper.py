"""Reaps the launcher's own children, and never a child its caller started.

The launcher's children are its ranks and, as a subreaper, the orphans it adopts. A
``waitpid(-1)`` would also take the exit status of a process the caller of ``launch()``
started before it, so the children present at the start are left alone: each reaped child
is first looked at without being reaped (``WNOWAIT``).
"""

from __future__ import annotations

import os
import signal
import time

from rankrun.inspect.cgroup import memory_cgroup
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
            ended = _reap(peek.si_pid, peek)
            if ended is not None:
                exits.append(ended)
        ours = (_reap(pid) for pid in children() if pid not in self._foreign)
        return exits + [e for e in ours if e is not None]

    def adopted(self) -> list[int]:
        """The launcher's children now: once the ranks are gone, the orphans it adopted."""
        return [pid for pid in children() if pid not in self._foreign]


def _reap(pid: int, peek: os.waitid_result | None = None) -> Exited | None:
    """Reap ``pid`` if it has ended. After a SIGKILL, its cgroup is read first, while the
    zombie still names it (v2 only). Its rusage gives its peak memory, at no cost."""
    try:
        peek = peek or os.waitid(os.P_PID, pid, _PEEK)
        if peek is None:
            return None
        killed = peek.si_code == os.CLD_KILLED and peek.si_status == signal.SIGKILL
        cgroup = memory_cgroup(pid) if killed else None
        reaped, status, usage = os.wait4(pid, os.WNOHANG)
    except ChildProcessError:
        return None
    if not reaped:
        return None
    peak_rss = usage.ru_maxrss << 10  # KiB on Linux
    if os.WIFEXITED(status):
        return Exited(pid, os.WEXITSTATUS(status), None, time.time(), peak_rss)
    return Exited(pid, None, os.WTERMSIG(status), time.time(), peak_rss, cgroup)


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
