"""A process's memory cgroup as the kernel's OOM killer counts it: which cgroup, how many OOM
kills it has seen, and the limit that applies to it.

cgroup v2 (the ``0::/path`` line of /proc/<pid>/cgroup) counts ``oom_kill`` in memory.events;
v1 (a ``memory`` line) in memory.oom_control. Both count the cgroup's descendants too, and
count every OOM kill, the machine-wide ones included. A v1/v2 hybrid mounts v2 at
/sys/fs/cgroup/unified, usually without the memory controller, so the v1 line wins.

The launcher reads its own cgroup's count as it starts (two small reads, nothing if there
is no memory cgroup): its ranks start in that cgroup.
"""

from __future__ import annotations

import os

from rankrun.base.values import NamedTuple

ROOT = "/sys/fs/cgroup"
_V2_ROOTS = (ROOT, f"{ROOT}/unified")
_V1_ROOT = f"{ROOT}/memory"
_UNLIMITED = 1 << 62  # v1 writes "no limit" as the largest page-aligned 64-bit number


class MemoryCgroup(NamedTuple):
    path: str
    """As /proc names it: ``/slurm/uid_0/job_12``."""
    v2: bool

    @property
    def directory(self) -> str:
        return _directory(self.path, self.v2)

    def oom_kills(self) -> int | None:
        """The OOM kills in this cgroup and below so far; None if the count can't be read."""
        events = "memory.events" if self.v2 else "memory.oom_control"
        return _count(f"{self.directory}/{events}", "oom_kill")

    def limit(self) -> tuple[int, str] | None:
        """The smallest memory limit on this cgroup or above it, and the cgroup that sets it;
        None when nothing limits it."""
        found = None
        path = self.path
        while True:
            limit = _limit(_directory(path, self.v2), self.v2)
            if limit is not None and (found is None or limit < found[0]):
                found = (limit, path)
            if path == "/":
                return found
            path = os.path.dirname(path)


def memory_cgroup(pid: int | str = "self") -> MemoryCgroup | None:
    """The process's memory cgroup, or None where it has none that can be read.

    An exiting process's v1 cgroups read as ``/``: for a zombie, only v2 names its own.
    """
    try:
        with open(f"/proc/{pid}/cgroup") as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    unified = None
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if "memory" in controllers.split(","):
            return MemoryCgroup(path, False) if os.path.isdir(_V1_ROOT) else None
        if not controllers:
            unified = path
    if unified is None or not os.path.isfile(f"{_directory(unified, True)}/memory.events"):
        return None
    return MemoryCgroup(unified, True)


def _directory(path: str, v2: bool) -> str:
    if not v2:
        return _V1_ROOT + path.rstrip("/")
    for root in _V2_ROOTS:
        if os.path.isfile(f"{root}/cgroup.controllers") and "memory" in _read(
            f"{root}/cgroup.controllers"
        ):
            return root + path.rstrip("/")
    return ROOT + path.rstrip("/")


def _limit(directory: str, v2: bool) -> int | None:
    text = _read(f"{directory}/{'memory.max' if v2 else 'memory.limit_in_bytes'}").strip()
    if not text.isdigit() or int(text) >= _UNLIMITED:
        return None  # "max", unreadable, or v1's "unlimited"
    return int(text)


def _count(file: str, key: str) -> int | None:
    for line in _read(file).splitlines():
        name, _, value = line.partition(" ")
        if name == key and value.strip().isdigit():
            return int(value)
    return None


def _read(file: str) -> str:
    try:
        with open(file) as f:
            return f.read()
    except OSError:
        return ""
