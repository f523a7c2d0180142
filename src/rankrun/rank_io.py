"""The stdio of one rank: inherited, written straight to a file, or piped to a relay."""

from __future__ import annotations

import os
import subprocess

from rankrun.plan import RankSpec
from rankrun.printer import Printer
from rankrun.relay import TAIL_BYTES, Relay, Tail
from rankrun.streams import Route

_FILE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_TRUNC


class RankIO:
    def __init__(self, spec: RankSpec, printer: Printer) -> None:
        self.relays: list[Relay] = []
        self.stdout: int | None = None
        self.stderr: int | None = None
        self._spec, self._printer = spec, printer
        self._tail: Tail | None = None
        self._child_ends: list[int] = []

    def open(self) -> None:
        """Create the files and pipes; on failure, close what was made, and raise."""
        spec = self._spec
        try:
            if spec.error_file is not None:
                os.makedirs(os.path.dirname(spec.error_file), exist_ok=True)
            self.stdout = self._open(0, spec.stdout)
            self.stderr = self._open(1, spec.stderr)
        except OSError:
            self.close()
            raise

    def _open(self, stream: int, route: Route) -> int | None:
        if route.inherited:
            return None
        file_fd = os.open(route.file, _FILE_FLAGS, 0o644) if route.file else None
        if file_fd is not None and not route.console:
            self._child_ends.append(file_fd)  # no relay: the rank writes its log itself
            return file_fd
        if file_fd is None and not route.console and stream == 0:
            return subprocess.DEVNULL
        read_fd, write_fd = os.pipe()
        self._child_ends.append(write_fd)
        tail = None
        if stream == 1:
            tail = self._tail = Tail()
        self.relays.append(
            Relay(
                read_fd,
                self._printer,
                stream,
                rank=self._spec.rank,
                console=route.console,
                labelled=route.labelled,
                file_fd=file_fd,
                tail=tail,
            )
        )
        return write_fd

    def spawned(self) -> None:
        """Close the child's ends here, so that a relay sees EOF when the rank's side closes."""
        for fd in self._child_ends:
            os.close(fd)
        self._child_ends = []

    def close(self) -> None:
        self.spawned()
        for relay in self.relays:
            relay.close()

    def stderr_tail(self) -> str:
        """The end of the rank's stderr, from the relay or from its log file."""
        if self._tail is not None:
            return self._tail.text()
        if self._spec.stderr.file is None:
            return ""
        try:
            with open(self._spec.stderr.file, "rb") as f:
                f.seek(max(0, os.fstat(f.fileno()).st_size - TAIL_BYTES))
                return f.read().decode(errors="replace")
        except OSError:
            return ""


def ensure_fd_capacity(ranks: int) -> None:
    """Raise the soft limit on open files if the ranks' pipes could pass it.

    Each rank holds two pipes, and two more ends while it starts; the common soft limit of
    1024 would stop a labelled run near 500 ranks. The ranks inherit the raised limit.
    """
    needed = 4 * ranks + 64
    if needed <= 256:
        return
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed:
        limit = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (limit, hard))
