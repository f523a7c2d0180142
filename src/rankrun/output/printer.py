"""The one writer to the console: ranks' labelled lines and the launcher's own messages,
which also go to the events log when there is one.

Colour is decided once per stream: only on a TTY, and never when NO_COLOR is set.
"""

from __future__ import annotations

import os
import select
import time
from collections.abc import Mapping

from rankrun.plan.streams import STDERR, STDOUT

TYPE_CHECKING = False
if TYPE_CHECKING:
    from rankrun.output.events_log import EventsLog

_COLOURS = (36, 33, 32, 35, 34, 31, 96, 93, 92, 95, 94, 91)
_RESET = b"\x1b[0m"


class Printer:
    def __init__(
        self,
        *,
        out_fd: int = 1,
        err_fd: int = 2,
        timestamps: bool = False,
        env: Mapping[str, str] | None = None,
    ) -> None:
        env = os.environ if env is None else env
        self._fds = {STDOUT: out_fd, STDERR: err_fd}
        self._gone: set[int] = set()
        self.timestamps = timestamps
        colour = "NO_COLOR" not in env
        self._colour = {s: colour and os.isatty(fd) for s, fd in self._fds.items()}
        self._events: EventsLog | None = None

    def label(self, label: str, rank: int, stream: int) -> bytes:
        """The prefix of rank ``rank``'s lines on ``stream`` (1 stdout, 2 stderr)."""
        text = label.encode()
        if self._colour[stream]:
            colour = b"\x1b[%dm" % _COLOURS[rank % len(_COLOURS)]
            text = colour + text + _RESET
        return text + b" "

    def stamp(self) -> bytes:
        if not self.timestamps:
            return b""
        now = time.time()
        return time.strftime("%H:%M:%S", time.localtime(now)).encode() + b".%03d " % (
            int(now * 1000) % 1000
        )

    def write(self, stream: int, *data: bytes | bytearray | memoryview) -> None:
        """Write to stdout (1) or stderr (2); a stream whose reader has gone is dropped.

        A closed pipe (``rankrun ... | head``) or a hung-up terminal must not end the run.
        """
        if stream in self._gone:
            return
        try:
            write_all(self._fds[stream], *data)
        except OSError:
            self._gone.add(stream)

    def event(self, message: str) -> None:
        self._own(f"rankrun: {message}", message)

    def labelled(self, line: str) -> None:
        """A line of rankrun's own that carries a label already (a rank's stack under the
        event that asked for it): written as it is, and logged with the events."""
        self._own(line, line)

    def _own(self, line: str, logged: str) -> None:
        self.write(STDERR, self.stamp() + f"{line}\n".encode())
        if self._events is not None and not self._events.write(logged):
            self._events = None  # a full disk must not end the run: the console has it

    def events_to(self, path: str) -> None:
        """From now on, also append rankrun's own messages to ``path``, timestamped."""
        from rankrun.output.events_log import EventsLog

        self._events = EventsLog(path)

    def close(self) -> None:
        if self._events is not None:
            self._events.close()


def write_all(fd: int, *data: bytes | bytearray | memoryview) -> None:
    """Write every byte of ``data``, in order, waiting on a full non-blocking fd rather than
    failing; the parts go in one ``writev`` where they fit."""
    views = [memoryview(part) for part in data if part]
    while views:
        try:
            written = os.writev(fd, views)
        except BlockingIOError:
            select.select([], [fd], [])
            continue
        while views and written >= len(views[0]):
            written -= len(views.pop(0))
        if views:
            views[0] = views[0][written:]
