"""The kernel's own word on its OOM kills, from /dev/kmsg where it can be read (root, or
``kernel.dmesg_restrict=0``), read on the failure path only and within a time budget.

The OOM killer logs ``oom-kill:...,oom_memcg=/a,task_memcg=/a/b,task=python,pid=123,...``
(rate-limited) before it signals its victim, and ``Killed process 123 (python) ...,
anon-rss:...kB, file-rss:...kB, shmem-rss:...kB`` (always) just after.
"""

from __future__ import annotations

import os
import re
import time

from rankrun.base.values import NamedTuple

_KMSG = "/dev/kmsg"
_PID_INIT_NS = 0xEFFFFFFC  # the inode of the initial pid namespace, which the log's pids are in
_KILLED = re.compile(
    r"Killed process (\d+) \(.*?anon-rss:(\d+)kB, file-rss:(\d+)kB, shmem-rss:(\d+)kB"
)


class LoggedKill(NamedTuple):
    pid: int
    rss: int | None = None
    """Bytes resident when it was killed."""
    memcg: str | None = None
    """The memory cgroup whose limit was hit (``/`` when the machine ran out)."""


def oom_kills(since: float, budget: float = 0.25) -> dict[int, LoggedKill] | None:
    """The OOM kills logged since ``since`` (``time.monotonic()`` seconds), by pid; None when
    the log can't be read, nor read to its end within ``budget`` seconds, or when its pids
    are not this process's (a pid namespace)."""
    if not _in_initial_pid_namespace():
        return None
    try:
        fd = os.open(_KMSG, os.O_RDONLY | os.O_NONBLOCK)
    except OSError:
        return None
    try:
        return _scan(fd, int(since * 1e6), time.monotonic() + budget)
    finally:
        os.close(fd)


def _scan(fd: int, since_us: int, deadline: float) -> dict[int, LoggedKill] | None:
    kills: dict[int, LoggedKill] = {}
    while time.monotonic() < deadline:
        try:
            record = os.read(fd, 8192)
        except BlockingIOError:
            return kills  # the end of the log
        except BrokenPipeError:
            continue  # that record was overwritten while we read: the next one follows
        except OSError:
            return None
        header, _, message = record.decode(errors="replace").partition(";")
        fields = header.split(",")
        if len(fields) < 3 or not fields[2].isdigit() or int(fields[2]) < since_us:
            continue
        _note(kills, message)
    return None


def _note(kills: dict[int, LoggedKill], message: str) -> None:
    if (killed := _KILLED.search(message)) is not None:
        pid = int(killed[1])
        rss = sum(int(kb) for kb in killed.groups()[1:]) << 10
        kills[pid] = kills.get(pid, LoggedKill(pid))._replace(rss=rss)
    elif "oom-kill:" in message:
        pairs = message.partition("oom-kill:")[2].strip().split(",")
        fields = dict(pair.partition("=")[::2] for pair in pairs)
        if fields.get("pid", "").isdigit():
            pid = int(fields["pid"])
            memcg = "/" if "global_oom" in fields else fields.get("oom_memcg")
            kills[pid] = kills.get(pid, LoggedKill(pid))._replace(memcg=memcg)


def _in_initial_pid_namespace() -> bool:
    try:
        return os.stat("/proc/self/ns/pid").st_ino == _PID_INIT_NS
    except OSError:
        return False
