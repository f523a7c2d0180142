"""A small process that ends the ranks' process groups if the launcher dies.

It is forked before the first rank, in a session of its own, and holds the read end of a
pipe whose only writer is the launcher. The launcher names the groups it has spawned on
the pipe before it next waits (every 16 spawns in a large gang), and again once each is
gone. When the launcher dies in any way, SIGKILL included, the pipe reaches EOF, and the
guardian sends SIGTERM to each group still named and to the group of every process that
carries the run's token in its environment (what left the groups with ``setsid``, and a
rank spawned in the moment before its group was named), then SIGKILL to what is left after
the grace period. Naming groups one write per spawn woke the guardian each time, which a busy
machine felt in a large gang's start (``bench/launch_parts.py``).

The guardian is forked twice, so that it is not the launcher's child: the launcher never
waits for it to exit (a wait every run would pay), and a library caller is left no
child to reap. The launcher learns of its death through a second pipe, its lifeline,
whose only writer is the guardian.

It names itself ``rankrun-guard`` (its comm, which ``ps -e``, ``top`` and ``pgrep`` show),
so that it does not pass for a rankrun still running: its argv stays the launcher's. After
a clean end it exits within milliseconds; after the launcher's death it stays about
``_LOOK_AT_LEAST_S``, or while the ranks take to exit on SIGTERM, at most the grace period.
"""

from __future__ import annotations

import os
import signal
import time

from rankrun.plan.plan import TOKEN_VAR

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable

_LOOK_AGAIN_S = 0.25  # reading every process's environment costs; the groups go first
_MOST_UNSENT = 16
_LOOK_AT_LEAST_S = 1.0
_UNTIL_SET_UP = {signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT}
NAME = b"rankrun-guard"


class Guardian:
    def __init__(self, grace: float, token: str) -> None:
        groups_r, groups_w = os.pipe()
        lifeline_r, lifeline_w = os.pipe()
        # Until the guardian has its own handlers, a Ctrl-C to the process group must not
        # raise in a copy of the launcher (a multi-node agent forks it before its own).
        mask = signal.pthread_sigmask(signal.SIG_BLOCK, _UNTIL_SET_UP)
        middle = os.fork()
        if middle == 0:
            try:
                os.close(groups_w)
                os.close(lifeline_r)
                pid = os.fork()
                if pid == 0:
                    _become_guardian(groups_r, lifeline_w, grace, token, mask)
                else:
                    os.write(lifeline_w, b"%d\n" % pid)
            finally:
                os._exit(0)
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        os.close(groups_r)
        os.close(lifeline_w)
        self._middle = middle
        self.pid = 0
        self.lifeline = lifeline_r
        """Readable, at EOF, once the guardian has died."""
        self._fd = groups_w
        self._named = self._released = b""
        self._closed = False

    def adopted(self) -> None:
        """Wait until init has adopted the guardian: its first fork has exited.

        Before this, the launcher must not become a subreaper, or it would adopt the guardian.
        """
        os.waitpid(self._middle, 0)
        self._middle = 0
        said = os.read(self.lifeline, 32)
        self.pid = int(said) if said.strip() else -1  # -1: its first fork died before saying

    def guard(self, pgid: int) -> None:
        """Name a rank's group with the next ``flush``: from then on it must not outlive the
        launcher. Until then the run's token, in the rank's environment, finds it."""
        self._named += b"+%d\n" % pgid
        if self._named.count(b"\n") == _MOST_UNSENT:
            self.flush()

    def release(self, pgid: int) -> None:
        """Forget a group that is gone, with the next groups named: a group named a moment
        too long is only signalled in vain, and each message wakes the guardian."""
        self._released += b"-%d\n" % pgid

    def flush(self) -> None:
        """Send the groups named since the last flush; the launcher calls this before it waits."""
        if self._named:
            self._send(self._released + self._named)
            self._named = self._released = b""

    def _send(self, message: bytes) -> None:
        try:
            os.write(self._fd, message)
        except BrokenPipeError:
            pass  # the guardian died; the gang has said so, and the run goes on without it

    def close(self) -> None:
        """Stop guarding; groups still named are ended, as the launcher had not. Once only:
        a guardian forked before its ``Host`` is closed by whichever ends first."""
        if self._closed:
            return
        self._closed = True
        if self._middle:
            os.waitpid(self._middle, 0)  # never adopted: reap its first fork
            self._middle = 0
        self._send(b"=\n")
        os.close(self._fd)
        os.close(self.lifeline)


def _become_guardian(
    read_fd: int, lifeline: int, grace: float, token: str, mask: Iterable[int]
) -> None:
    _name_self(NAME)
    os.setsid()
    for signum in (signal.SIGINT, signal.SIGHUP, signal.SIGQUIT):
        signal.signal(signum, signal.SIG_IGN)
    for signum in (signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2, signal.SIGCHLD):
        signal.signal(signum, signal.SIG_DFL)
    signal.set_wakeup_fd(-1)
    signal.pthread_sigmask(signal.SIG_SETMASK, mask)
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
    groups, goodbye = _read_groups(read_fd)
    _end_run(groups, None if goodbye else token, grace)


def _name_self(name: bytes) -> None:
    """Set this process's comm, as ``prctl(PR_SET_NAME)`` does, in 15 µs where loading
    ``_ctypes`` to call prctl takes a millisecond of the start. Only where /proc allows it."""
    try:
        fd = os.open("/proc/self/comm", os.O_WRONLY)
    except OSError:
        return
    try:
        os.write(fd, name)
    except OSError:
        pass
    finally:
        os.close(fd)


def _above_stdio(fd: int) -> int:
    """A pipe may land on fd 0-2 when the launcher was started with them closed."""
    if fd > 2:
        return fd
    import fcntl

    return fcntl.fcntl(fd, fcntl.F_DUPFD, 3)


def _read_groups(fd: int) -> tuple[set[int], bool]:
    """The groups still named when the pipe closed, and whether the launcher said goodbye."""
    groups: set[int] = set()
    pending = b""
    while chunk := os.read(fd, 4096):
        *lines, pending = (pending + chunk).split(b"\n")
        for line in lines:
            if line == b"=":
                return groups, True
            (groups.add if line[:1] == b"+" else groups.discard)(int(line[1:]))
    return groups, False


def _end_run(groups: set[int], token: str | None, grace: float) -> None:
    """SIGTERM each group, and the group of each process of the run found outside them;
    SIGKILL after ``grace``.

    The processes outside the named groups (a rank's ``setsid`` daemon, a rank whose group
    was not named yet) are found by ``token`` in their environment, which every process of
    the run inherits; their whole groups are ended, so that what they started with a cleared
    environment goes with them. They are looked for again while the run ends, and once more
    before SIGKILL: a rank's SIGTERM handler may start one. With a token, the looking goes on
    for ``_LOOK_AT_LEAST_S`` even when nothing is left: a rank the launcher was starting as
    it died shows the token only once it has exec'd.
    """
    _signal(groups, signal.SIGTERM)
    started = time.monotonic()
    deadline = started + grace
    settled = started + (min(grace, _LOOK_AT_LEAST_S) if token else 0.0)
    next_look = started
    while time.monotonic() < deadline:
        if token and time.monotonic() >= next_look:
            found = _marked_groups(token) - groups
            _signal(found, signal.SIGTERM)
            groups |= found
            next_look = time.monotonic() + _LOOK_AGAIN_S
        if not groups and time.monotonic() >= settled:
            break
        time.sleep(0.02)
        groups = _still_alive(groups)
    if token:
        groups |= _marked_groups(token)
    _signal(groups, signal.SIGKILL)


def _still_alive(groups: set[int]) -> set[int]:
    """Those of ``groups`` with a live member; zombies do not count.

    After the launcher's death its orphans go to a PID 1 that may never reap them, and a
    zombie would answer ``kill(0)`` as if it lived. Only without /proc is ``kill(0)`` asked.
    """
    from rankrun.inspect.procfs import all_processes  # in the guardian, after the death

    if not os.path.isdir("/proc/self"):
        return {g for g in groups if _group_exists(g)}
    return groups & {stat.pgrp for stat in all_processes().values() if stat.live}


def _signal(groups: set[int], signum: int) -> None:
    for pgid in groups:
        try:
            os.killpg(pgid, signum)
        except ProcessLookupError:
            pass


def _group_exists(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def _marked_groups(token: str) -> set[int]:
    """The groups of the live processes whose environment carries ``token``."""
    from rankrun.inspect.procfs import carrying

    return {stat.pgrp for stat in carrying(TOKEN_VAR, token).values()}
