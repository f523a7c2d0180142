"""One selector for everything the gang waits on: signals, SIGCHLD included, and output.

Signals reach the selector through ``signal.set_wakeup_fd``, so a child's exit is seen the
moment it happens (its SIGCHLD), never through polling or the EOF of an output pipe.
"""

from __future__ import annotations

import os
import selectors
import signal
from collections.abc import Callable
from types import FrameType, TracebackType

from rankrun.base.values import NamedTuple
from rankrun.output.outcome import Halt
from rankrun.run.job_control import JobControl

TYPE_CHECKING = False
if TYPE_CHECKING:
    from rankrun.inspect.cgroup import MemoryCgroup
    from rankrun.output.outcome import OomVerdict

TERMINATING = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT)
FORWARDED = (signal.SIGUSR1, signal.SIGUSR2)
JOB_CONTROL = (signal.SIGTSTP, signal.SIGCONT)
_HANDLED = (*TERMINATING, *FORWARDED, *JOB_CONTROL, signal.SIGCHLD)


class Exited(NamedTuple):
    pid: int
    exit_code: int | None
    signal: int | None
    at: float
    peak_rss: int | None = None
    """Its peak resident memory, in bytes, from its rusage."""
    cgroup: MemoryCgroup | None = None
    """After a SIGKILL, its memory cgroup, read before the reap (for a zombie, v2 only)."""
    oom: OomVerdict | None = None
    """After a SIGKILL that rankrun did not send, whether the kernel's OOM killer sent it."""


class Signalled(NamedTuple):
    signum: int


class Halted(NamedTuple):
    """Another node has halted the job: this node's ranks must go too."""

    reason: str
    exit_code: int
    signum: int | None = None
    """The signal that interrupted the job there, which a scheduler sends this node too."""


class Asked(NamedTuple):
    """The job asks this node a question: ``what`` is "stacks", its ranks' stacks."""

    number: int
    what: str
    reason: str


class Verdict(NamedTuple):
    """Node 0's word on the whole job, for its output; and the halt it decided, if any."""

    lines: tuple[str, ...]
    halt: Halt | None = None


Event = Exited | Signalled | Halted | Asked | Verdict


def _wake(signum: int, frame: FrameType | None) -> None:
    """The C-level handler has already written ``signum`` to the wakeup fd."""


class Interrupted(BaseException):
    """A terminating signal arrived where the launcher can only stop what it is doing."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


_unraised = bytearray()
"""Terminating signals whose Interrupted may not have been raised: Python swallows an exception
raised in a weakref callback (one runs in every import), and the command then went on."""


def interrupt(signum: int, frame: FrameType | None) -> None:
    """Raise Interrupted, and keep the signal until it is caught or a ``Watch`` takes it."""
    _unraised.append(signum)
    raise Interrupted(signum)


def raise_unraised() -> None:
    """Raise the Interrupted that Python swallowed, if it did."""
    if _unraised:
        raise Interrupted(_unraised[0])


def forget_interrupt() -> None:
    """An Interrupted was caught: the signals it stands for need nobody else."""
    _unraised.clear()


class Watch:
    """Installs the launcher's signal handlers for the duration of a ``with`` block."""

    def __init__(self) -> None:
        self._selector = selectors.DefaultSelector()
        self._wakeup_r, self._wakeup_w = os.pipe()
        for fd in (self._wakeup_r, self._wakeup_w):
            os.set_blocking(fd, False)
        self._old_handlers: dict[int, object] = {}
        self._old_wakeup = -1
        self._pending = bytearray()
        """Signal numbers read from the wakeup fd but not yet handed out."""
        self.job = JobControl()

    def __enter__(self) -> Watch:
        self._old_wakeup = signal.set_wakeup_fd(self._wakeup_w, warn_on_full_buffer=False)
        for signum in _HANDLED:
            self._old_handlers[signum] = signal.signal(signum, _wake)
        self._selector.register(self._wakeup_r, selectors.EVENT_READ)
        self._pending += _unraised  # the gang hears of them as of any other signal
        _unraised.clear()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        for signum, handler in self._old_handlers.items():
            signal.signal(signum, handler)  # type: ignore[arg-type]
        self.job.close()
        signal.set_wakeup_fd(self._old_wakeup)
        self._selector.close()
        os.close(self._wakeup_r)
        os.close(self._wakeup_w)

    def add_reader(self, fd: int, callback: Callable[[], None]) -> None:
        self._selector.register(fd, selectors.EVENT_READ, callback)

    def remove_reader(self, fd: int) -> None:
        if fd in self._selector.get_map():
            self._selector.unregister(fd)

    def hold_stops(self) -> None:
        """Keep SIGTSTP pending, to be read here and let through by ``pause()``; see job_control."""
        self.job.hold()

    def suspend_pending(self) -> bool:
        """Whether a Ctrl-Z is still to be obeyed: no SIGCONT has come after the last SIGTSTP."""
        return self.job.pending()

    def pause(self) -> None:
        """Stop this process until SIGCONT, as Ctrl-Z would, unless a SIGCONT came already."""
        self.job.stop(self._read_signals)

    def wait(self, timeout: float | None) -> list[Signalled]:
        """Block until something happens or ``timeout`` passes; reader callbacks run here.

        Returns the signals that arrived, in order, SIGCHLD at most once; a pending SIGTSTP
        comes last, once, and again only after it was obeyed or a SIGCONT dropped it.
        """
        self._watch_stops()
        if self._pending:
            timeout = 0
        stop = False
        for key, _ in self._selector.select(timeout):
            if key.fd == self.job.fd:
                self._selector.unregister(key.fd)
                stop = True
            elif key.fd != self._wakeup_r:
                key.data()
        self._read_signals()
        signums, self._pending = bytes(self._pending), bytearray()
        self.job.handled(signums)
        chld = signal.SIGCHLD in signums
        events = [Signalled(s) for s in signums if s != signal.SIGCHLD]
        if stop:
            events.append(Signalled(signal.SIGTSTP))
        return [Signalled(signal.SIGCHLD)] + events if chld else events

    def terminating(self) -> int | None:
        """The first terminating signal pending, if any; it stays pending for ``wait``."""
        self._read_signals()
        return next((s for s in self._pending if s in TERMINATING), None)

    def _watch_stops(self) -> None:
        """Select on the signalfd, unless the SIGTSTP it last reported is still pending."""
        fd = self.job.fd
        if fd is None or fd in self._selector.get_map() or signal.SIGTSTP in signal.sigpending():
            return
        self._selector.register(fd, selectors.EVENT_READ)

    def _read_signals(self) -> bytes:
        """Move what the wakeup fd holds to the pending signals; return what was read."""
        read = bytearray()
        while True:
            try:
                chunk = os.read(self._wakeup_r, 512)
            except BlockingIOError:
                break
            if not chunk:
                break
            read += chunk
        self._pending += read
        return bytes(read)

    def raise_on_terminating(self) -> None:
        """From now on a terminating signal raises Interrupted, to break a blocked write."""
        for signum in TERMINATING:
            signal.signal(signum, interrupt)
