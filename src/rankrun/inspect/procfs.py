"""One read of ``/proc/<pid>/stat``: the facts the diagnostics need of a process."""

from __future__ import annotations

import os

from rankrun.base.values import NamedTuple


class ProcStat(NamedTuple):
    state: str
    ppid: int
    pgrp: int
    ticks: int
    """User and system CPU time, in clock ticks."""
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
    return ProcStat(v[0].decode(), int(v[1]), int(v[2]), int(v[11]) + int(v[12]), int(v[21]))


def all_processes() -> dict[int, ProcStat]:
    """Every process in /proc, by pid."""
    table: dict[int, ProcStat] = {}
    for name in os.listdir("/proc"):
        if name.isdigit() and (stat := read_stat(int(name))) is not None:
            table[int(name)] = stat
    return table


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
