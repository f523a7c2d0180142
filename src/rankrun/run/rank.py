"""One rank: its process, its stdio (inherited, a file, or a pipe to a relay), its result."""

from __future__ import annotations

import errno
import fcntl
import os
import subprocess
import time

from rankrun.output.outcome import Ending, RankResult
from rankrun.output.printer import Printer
from rankrun.output.relay import READ_BYTES, TAIL_BYTES, Relay, Tail
from rankrun.plan.plan import RankSpec
from rankrun.plan.streams import STDERR, STDOUT, Route

_FILE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
_PIPE_BYTES = 64 << 10  # Linux's default
# Past pipe-user-pages-soft (64 MiB by default), an unprivileged user's new pipes get 8 KiB
# each, the ranks' own included: all the relays' pipes together keep to a sixteenth of it, so that
# a user's other jobs and pipes on the node keep theirs.
_ALL_PIPES_BYTES = 4 << 20
_F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", None)  # Linux only


def pipe_bytes(ranks: int) -> int:
    """The size of each pipe to a relay: what one read takes, less in a large gang."""
    size = READ_BYTES
    while size > _PIPE_BYTES and 2 * ranks * size > _ALL_PIPES_BYTES:
        size //= 2
    return size


class SpawnError(Exception):
    """The rank's program could not be started; ``ending`` says how that reads."""

    def __init__(self, ending: Ending) -> None:
        super().__init__(ending.error)
        self.ending = ending


class LauncherError(Exception):
    """The launcher could not start a rank for a cause of its own: a limit, a log file."""


class Rank:
    """A started rank. Its relays are read by the caller's loop until they end."""

    def __init__(self, spec: RankSpec, printer: Printer, pipe_bytes: int) -> None:
        self.spec = spec
        self.pid = 0
        self.started_at = time.time()
        self.relays: list[Relay] = []
        self._printer, self._pipe_bytes = printer, pipe_bytes
        self._tail: Tail | None = None
        self._child_ends: list[int] = []

    def start(self) -> None:
        """Open the rank's files and pipes and start it.

        Raises SpawnError when the rank's program can't run (missing, not executable), and
        LauncherError when the launcher can't start it (a log file, a pipe, a process limit).
        """
        spec = self.spec
        try:
            stdout, stderr = self._open_stdio()
            try:
                proc = subprocess.Popen(
                    spec.argv, env=spec.env, stdout=stdout, stderr=stderr, start_new_session=True
                )
            except OSError as e:
                if e.filename is None:  # not the exec: a fork or a pipe failed
                    raise LauncherError(f"could not start rank {spec.rank}: {e.strerror}") from None
                code = 127 if e.errno == errno.ENOENT else 126
                error = f"could not start {spec.argv[0]}: {e.strerror}"
                raise SpawnError(Ending(code, None, time.time(), error=error)) from None
        except BaseException:
            self.close()
            raise
        finally:
            self._close_child_ends()
        # The launcher reaps its children itself. Popen must never wait for this one, or it
        # could reap the rank before the launcher sees its exit status.
        proc.returncode = 0
        self.pid = proc.pid

    def _open_stdio(self) -> tuple[int | None, int | None]:
        spec = self.spec
        try:
            if spec.error_file is not None:
                os.makedirs(os.path.dirname(spec.error_file), exist_ok=True)
            return self._open(STDOUT, spec.stdout), self._open(STDERR, spec.stderr)
        except OSError as e:
            where = f" {e.filename}" if e.filename else ""
            raise LauncherError(
                f"could not open the pipes or files of rank {spec.rank}{where}: {e.strerror}"
            ) from None

    def _open(self, stream: int, route: Route) -> int | None:
        if route.inherited:
            return None
        file_fd = os.open(route.file, _FILE_FLAGS, 0o644) if route.file else None
        if file_fd is not None and not route.console:
            self._child_ends.append(file_fd)  # no relay: the rank writes its log itself
            return file_fd
        if file_fd is None and not route.console and stream == STDOUT:
            return subprocess.DEVNULL
        read_fd, write_fd = os.pipe()
        self._child_ends.append(write_fd)
        self._widen(write_fd)
        tail = self._tail = Tail() if stream == STDERR else None
        relay = Relay(
            read_fd,
            self._printer,
            stream,
            rank=self.spec.rank,
            label=self.spec.label,
            console=route.console,
            labelled=route.labelled,
            file_fd=file_fd,
            tail=tail,
        )
        self.relays.append(relay)
        return write_fd

    def _widen(self, pipe_fd: int) -> None:
        """Let the rank write more before it waits for the relay, and the relay read it at once:
        fewer wakeups for both. Where the kernel refuses, the pipe keeps its size."""
        if self._pipe_bytes > _PIPE_BYTES and _F_SETPIPE_SZ is not None:
            try:
                fcntl.fcntl(pipe_fd, _F_SETPIPE_SZ, self._pipe_bytes)
            except OSError:
                pass

    def _close_child_ends(self) -> None:
        """The rank holds these now; closed here, a relay sees EOF when the rank's side closes."""
        for fd in self._child_ends:
            os.close(fd)
        self._child_ends = []

    def drain(self) -> list[Relay]:
        """Relay what the ended rank left in its pipes; return the relays that ended."""
        ended = []
        for relay in self.relays:
            if not relay.open:
                continue
            if relay.drain():
                relay.flush()  # a helper still holds the pipe: print the unterminated line
            else:
                ended.append(relay)
        return ended

    def close(self) -> None:
        self._close_child_ends()
        for relay in self.relays:
            relay.close()

    def result(self, ending: Ending) -> RankResult:
        return RankResult(
            rank=self.spec.rank,
            local_rank=self.spec.local_rank,
            pid=self.pid or None,
            started_at=self.started_at,
            ending=ending,
            stderr_tail=self.stderr_tail(),
            error_file=self.spec.error_file,
            gpu=self.spec.gpu,
            node_rank=self.spec.node_rank,
        )

    def stderr_tail(self) -> str:
        """The end of the rank's stderr, from the relay or from its log file."""
        if self._tail is not None:
            return self._tail.text()
        if self.spec.stderr.file is None:
            return ""
        try:
            with open(self.spec.stderr.file, "rb") as f:
                f.seek(max(0, os.fstat(f.fileno()).st_size - TAIL_BYTES))
                return f.read().decode(errors="replace")
        except OSError:
            return ""
