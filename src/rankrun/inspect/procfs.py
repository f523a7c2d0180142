"""The reads of ``/proc`` that several parts of rankrun share: a process's stat, its name, the
processes that carry a variable in their environment.

``/proc/<pid>/stat`` is parsed here and nowhere else.
"""

from __future__ import annotations

import os

from rankrun.base.values import NamedTuple


class ProcStat(NamedTuple):
    state: str
    ppid: int
    pgrp: int
    ticks: int
    """User and system CPU time, in clock ticks."""
    start_time: int
    """When the process started, in clock ticks after boot: with the pid, it names a process."""
    rss_pages: int

    @property
    def live(self) -> bool:
        """Running, or at least not a zombie."""
        return self.state not in ("Z", "X")


def read_stat(pid: int) -> ProcStat | None:
    """The process's stat, or None once it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    # The fields after the command name, which may hold spaces: proc(5)'s 3rd on.
    v = stat[stat.rfind(b")") + 2 :].split()
    ticks = int(v[11]) + int(v[12])
    return ProcStat(v[0].decode(), int(v[1]), int(v[2]), ticks, int(v[19]), int(v[21]))


def all_processes() -> dict[int, ProcStat]:
    """Every process in /proc, by pid; empty where there is no /proc."""
    table: dict[int, ProcStat] = {}
    try:
        names = os.listdir("/proc")
    except OSError:
        return table
    for name in names:
        if name.isdigit() and (stat := read_stat(int(name))) is not None:
            table[int(name)] = stat
    return table


def start_time(pid: int) -> int | None:
    """Clock ticks after boot at which ``pid`` started; None if it is gone or a zombie.

    Without /proc (not Linux) it is 0 for a live process: only the pid can be checked.
    """
    stat = read_stat(pid)
    if stat is None and not os.path.isdir("/proc/self"):
        return _alive_without_proc(pid)
    return stat.start_time if stat is not None and stat.live else None


def _alive_without_proc(pid: int) -> int | None:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        pass
    return 0


def carrying(variable: str, value: str) -> dict[int, ProcStat]:
    """The live processes, other than this one, whose environment holds ``variable=value``.

    Every process of a run carries the run's token, and every process a test starts carries
    the test's tag: this finds what left its process group.
    """
    needle = f"{variable}={value}".encode()
    found = {}
    for pid, stat in all_processes().items():
        if pid == os.getpid() or not stat.live:
            continue
        try:
            with open(f"/proc/{pid}/environ", "rb") as f:
                if needle in f.read().split(b"\0"):
                    found[pid] = stat
        except OSError:
            pass
    return found


def kernel_wait(pid: int) -> str | None:
    """Where a live process waits in the kernel: ``state D, in nfs_wait_on_request``; None
    once it is gone or a zombie."""
    stat = read_stat(pid)
    if stat is None or not stat.live:
        return None
    try:
        with open(f"/proc/{pid}/wchan") as f:
            wchan = f.read().strip()
    except OSError:
        wchan = ""
    where = f", in {wchan}" if wchan not in ("", "0") else ""
    return f"state {stat.state}{where}"


def process_name(pid: int) -> str:
    """The executable's base name (``/proc/<pid>/exe``), else the kernel's ``comm``; "" if
    the process is gone."""
    try:
        exe = os.readlink(f"/proc/{pid}/exe")
    except OSError:
        exe = ""
    if exe:
        return os.path.basename(exe.removesuffix(" (deleted)"))
    try:
        with open(f"/proc/{pid}/comm", encoding="utf-8", errors="replace") as f:
            return f.read().strip()
    except OSError:
        return ""
