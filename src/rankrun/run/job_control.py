"""Ctrl-Z and fg: the launcher stops if, and only if, the later of SIGTSTP and SIGCONT was SIGTSTP.

The kernel knows which came later: a SIGCONT discards a pending SIGTSTP, and a SIGTSTP a
pending SIGCONT. Signal handlers can't tell: when both arrive at once the kernel runs the
later one's handler first, and a SIGTSTP the launcher sends itself to stop discards a SIGCONT
sent just before it that no handler has run for yet. So on Linux SIGTSTP stays blocked while
the ranks run, a signalfd reads as ready while one is pending, and the launcher stops by
unblocking it: the kernel stops it only if no SIGCONT came since.

A SIGTSTP can still reach the handler: while a child is started (it must not inherit the
block), on a thread of the caller's that does not block it, or where there is no signalfd.
Then the launcher stops itself with a SIGTSTP of its own, sent to its own thread, unless the
handler saw a SIGCONT after it; both windows above stay open on that path. Threads rankrun
starts (a node agent's link and store threads) block SIGTSTP from their first instruction.
"""

from __future__ import annotations

import _thread
import os
import signal
from collections.abc import Callable

from rankrun.run.libc import open_signalfd

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing costs milliseconds of every launch
    from typing import TypeVar

    T = TypeVar("T")

_TSTP = {signal.SIGTSTP}


def start_threads(start: Callable[[], T]) -> T:
    """Call ``start`` with SIGTSTP blocked, so that the threads it starts keep it blocked and
    a SIGTSTP is always this thread's to take."""
    old = signal.pthread_sigmask(signal.SIG_BLOCK, _TSTP)
    try:
        return start()
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


class JobControl:
    def __init__(self) -> None:
        self.fd: int | None = None
        """A signalfd, ready while a SIGTSTP is pending; None until ``hold()`` succeeds."""
        self._handled = False
        """A SIGTSTP reached the handler, and no SIGCONT after it."""

    def hold(self) -> None:
        """From now on, keep SIGTSTP pending. Where there is no signalfd, or the caller keeps
        SIGTSTP blocked already, do nothing."""
        if signal.SIGTSTP in signal.pthread_sigmask(signal.SIG_BLOCK, ()):
            return
        self.fd = open_signalfd(signal.SIGTSTP)
        if self.fd is not None:
            signal.pthread_sigmask(signal.SIG_BLOCK, _TSTP)

    def close(self) -> None:
        """Let SIGTSTP through again: one still pending stops the launcher now."""
        if self.fd is not None:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, _TSTP)
            os.close(self.fd)
            self.fd = None

    def released(self) -> Released:
        """A ``with`` block that starts children: they inherit the signal mask."""
        return Released(self)

    def _retake(self) -> None:
        if self.fd is not None:
            signal.pthread_sigmask(signal.SIG_BLOCK, _TSTP)

    def handled(self, signums: bytes) -> None:
        """The signals the handler ran for, in the order it ran."""
        for signum in signums:
            if signum == signal.SIGTSTP:
                self._handled = True
            elif signum == signal.SIGCONT:
                self._handled = False

    def pending(self) -> bool:
        """Whether the job is to stop: no SIGCONT came after the last SIGTSTP."""
        return self._handled or self.fd is not None and signal.SIGTSTP in signal.sigpending()

    def stop(self, read_handled: Callable[[], bytes]) -> None:
        """Stop this process until SIGCONT, unless a SIGCONT has come since the SIGTSTP.

        ``read_handled`` returns the signals handled since the last call. In an orphaned
        process group (no shell's job control over it) the kernel discards the stop, and the
        launcher runs on.
        """
        mask = signal.pthread_sigmask(signal.SIG_BLOCK, _TSTP)
        handler = signal.signal(signal.SIGTSTP, signal.SIG_DFL)
        try:
            if self._handled:
                self._handled = False
                # Pending on this thread, which blocks it: a SIGCONT from now on drops it.
                signal.pthread_kill(_thread.get_ident(), signal.SIGTSTP)
                if signal.SIGCONT in read_handled():
                    signal.signal(signal.SIGTSTP, signal.SIG_IGN)  # drops the pending stop
        finally:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, _TSTP)  # stops here, until SIGCONT
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)
            signal.signal(signal.SIGTSTP, handler)


class Released:
    """While entered, SIGTSTP is not blocked, so that a child started now has it unblocked."""

    def __init__(self, job: JobControl) -> None:
        self._job = job

    def __enter__(self) -> None:
        if self._job.fd is not None:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, _TSTP)

    def __exit__(self, *exc: object) -> None:
        self._job._retake()
