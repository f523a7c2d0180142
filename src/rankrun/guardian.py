"""A small process that ends the ranks' process groups if the launcher dies.

It is forked before the first rank, in a session of its own, and holds the read end of a
pipe whose only writer is the launcher. The launcher names each rank's group on the pipe
as it spawns it and again once the group is gone. When the launcher dies in any way,
SIGKILL included, the pipe reaches EOF, and the guardian sends SIGTERM to each group
still named, then SIGKILL to what is left after the grace period.

The guardian is forked twice, so that it is not the launcher's child: the launcher never
waits for it to exit (that wait cost 3 ms of every run), and a library caller is left no
child to reap. The launcher learns of its death through a second pipe, its lifeline,
whose only writer is the guardian.
"""

from __future__ import annotations

import os
import signal
import time


class Guardian:
    def __init__(self, grace: float) -> None:
        groups_r, groups_w = os.pipe()
        lifeline_r, lifeline_w = os.pipe()
        middle = os.fork()
        if middle == 0:
            try:
                os.close(groups_w)
                os.close(lifeline_r)
                pid = os.fork()
                if pid == 0:
                    _become_guardian(groups_r, lifeline_w, grace)
                else:
                    os.write(lifeline_w, b"%d\n" % pid)
            finally:
                os._exit(0)
        os.close(groups_r)
        os.close(lifeline_w)
        os.waitpid(middle, 0)
        self.pid = int(os.read(lifeline_r, 32))
        self.lifeline = lifeline_r
        """Readable, at EOF, once the guardian has died."""
        self._fd = groups_w

    def guard(self, pgid: int) -> None:
        self._send(b"+%d\n" % pgid)

    def release(self, pgid: int) -> None:
        self._send(b"-%d\n" % pgid)

    def _send(self, message: bytes) -> None:
        try:
            os.write(self._fd, message)
        except BrokenPipeError:
            pass  # the guardian died; the gang has said so, and the run goes on without it

    def close(self) -> None:
        """Stop guarding; groups still named are ended as if the launcher had died."""
        os.close(self._fd)
        os.close(self.lifeline)


def _become_guardian(read_fd: int, lifeline: int, grace: float) -> None:
    os.setsid()
    for signum in (signal.SIGINT, signal.SIGHUP, signal.SIGQUIT):
        signal.signal(signum, signal.SIG_IGN)
    for signum in (signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2, signal.SIGCHLD):
        signal.signal(signum, signal.SIG_DFL)
    signal.set_wakeup_fd(-1)
    keep = [_above_stdio(fd) for fd in (read_fd, lifeline)]
    read_fd = keep[0]
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    low = 3
    for keep_fd in sorted(keep):
        os.closerange(low, keep_fd)
        low = keep_fd + 1
    os.closerange(low, 1 << 16)
    _end_groups(_read_groups(read_fd), grace)


def _above_stdio(fd: int) -> int:
    """A pipe may land on fd 0-2 when the launcher was started with them closed."""
    if fd > 2:
        return fd
    import fcntl

    return fcntl.fcntl(fd, fcntl.F_DUPFD, 3)


def _read_groups(fd: int) -> set[int]:
    groups: set[int] = set()
    pending = b""
    while chunk := os.read(fd, 4096):
        *lines, pending = (pending + chunk).split(b"\n")
        for line in lines:
            (groups.add if line[:1] == b"+" else groups.discard)(int(line[1:]))
    return groups


def _end_groups(groups: set[int], grace: float) -> None:
    """SIGTERM each group, then SIGKILL those still alive after ``grace`` seconds."""
    _signal_groups(groups, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while groups and time.monotonic() < deadline:
        time.sleep(0.02)
        groups = {g for g in groups if _group_alive(g)}
    _signal_groups(groups, signal.SIGKILL)


def _signal_groups(groups: set[int], signum: int) -> None:
    for pgid in groups:
        try:
            os.killpg(pgid, signum)
        except ProcessLookupError:
            pass


def _group_alive(pgid: int) -> bool:
    """Whether a process of the group still runs. Unreaped zombies do not count."""
    if not os.path.isdir("/proc/self"):
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return False
        return True
    return any(n.isdigit() and _stat_pgid_alive(n, pgid) for n in os.listdir("/proc"))


def _stat_pgid_alive(pid: str, pgid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return False
    fields = stat[stat.rfind(b")") + 2 :].split()
    return int(fields[2]) == pgid and fields[0] not in (b"Z", b"X")
