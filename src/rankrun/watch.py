"""One selector for everything the gang waits on: child exits, signals and output.

Signals, SIGCHLD included, reach the selector through ``signal.set_wakeup_fd``; a SIGCHLD
makes the watch reap every child that has ended, so an exit is seen the moment it happens
and never through polling or the EOF of an output pipe.
"""

from __future__ import annotations

import os
import selectors
import signal
import time
from collections.abc import Callable
from types import FrameType, TracebackType

from rankrun.values import NamedTuple

TERMINATING = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT)
FORWARDED = (signal.SIGUSR1, signal.SIGUSR2)
JOB_CONTROL = (signal.SIGTSTP, signal.SIGCONT)
_HANDLED = (*TERMINATING, *FORWARDED, *JOB_CONTROL, signal.SIGCHLD)


class Exited(NamedTuple):
    pid: int
    exit_code: int | None
    signal: int | None
    at: float


class Signalled(NamedTuple):
    signum: int


Event = Exited | Signalled


def _wake(signum: int, frame: FrameType | None) -> None:
    """The C-level handler has already written ``signum`` to the wakeup fd."""


class Watch:
    """Installs the launcher's signal handlers for the duration of a ``with`` block."""

    def __init__(self) -> None:
        self._selector = selectors.DefaultSelector()
        self._wakeup_r, self._wakeup_w = os.pipe()
        for fd in (self._wakeup_r, self._wakeup_w):
            os.set_blocking(fd, False)
        self._old_handlers: dict[int, object] = {}
        self._old_wakeup = -1

    def __enter__(self) -> Watch:
        self._old_wakeup = signal.set_wakeup_fd(self._wakeup_w, warn_on_full_buffer=False)
        for signum in _HANDLED:
            self._old_handlers[signum] = signal.signal(signum, _wake)
        self._selector.register(self._wakeup_r, selectors.EVENT_READ)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        for signum, handler in self._old_handlers.items():
            signal.signal(signum, handler)  # type: ignore[arg-type]
        signal.set_wakeup_fd(self._old_wakeup)
        self._selector.close()
        os.close(self._wakeup_r)
        os.close(self._wakeup_w)

    def add_reader(self, fd: int, callback: Callable[[], None]) -> None:
        self._selector.register(fd, selectors.EVENT_READ, callback)

    def remove_reader(self, fd: int) -> None:
        if fd in self._selector.get_map():
            self._selector.unregister(fd)

    def pause(self) -> None:
        """Stop this process until SIGCONT, as Ctrl-Z would."""
        os.kill(os.getpid(), signal.SIGSTOP)

    def wait(self, timeout: float | None) -> list[Event]:
        """Block until something happens or ``timeout`` passes; reader callbacks run here."""
        events: list[Event] = []
        for key, _ in self._selector.select(timeout):
            if key.fd == self._wakeup_r:
                events.extend(self._drain_signals())
            else:
                key.data()
        return events

    def _drain_signals(self) -> list[Event]:
        signums = bytearray()
        while True:
            try:
                chunk = os.read(self._wakeup_r, 512)
            except BlockingIOError:
                break
            if not chunk:
                break
            signums += chunk
        events: list[Event] = []
        if signal.SIGCHLD in signums:
            events.extend(reap())
        events.extend(Signalled(s) for s in signums if s != signal.SIGCHLD)
        return events


def reap() -> list[Exited]:
    """Reap every ended child of this process, ranks and adopted orphans alike."""
    exits = []
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            break
        if pid == 0:
            break
        now = time.time()
        if os.WIFSIGNALED(status):
            exits.append(Exited(pid, None, os.WTERMSIG(status), now))
        else:
            exits.append(Exited(pid, os.WEXITSTATUS(status), None, now))
    return exits
