"""Relays one stream of one rank: whole lines, labelled, to the console; bytes to its log.

Memory stays bounded: a line longer than ``MAX_LINE`` goes out in labelled pieces, and a
slow console slows the ranks (their pipes fill) instead of growing a buffer here.

One read takes up to ``READ_BYTES``, what a widened pipe holds: each read of a full pipe
wakes its writer, and with 32 KiB reads waking and switching took 30% of the launcher.
The read lands in windows of ``WINDOW`` bytes, shared by every relay and kept, and each
window is labelled and written on its own, so that no buffer of the relaying passes
glibc's 128 KiB mmap threshold: a fresh 1 MiB buffer per read was mapped and unmapped
each time, 40,000 page faults for 80 MB. Lines are labelled in one ``bytes.replace`` per
window and written with the label before them in one ``writev``.
"""

from __future__ import annotations

import os

from rankrun.output.printer import Printer, write_all

WINDOW = 64 << 10
READ_BYTES = 1 << 20
MAX_LINE = 1 << 16
TAIL_BYTES = 32 << 10


class Tail:
    """The last ``TAIL_BYTES`` of a stream, kept for the failure report."""

    def __init__(self) -> None:
        self._buf = bytearray()

    def add(self, data: bytes | bytearray) -> None:
        self._buf += data
        if len(self._buf) > 2 * TAIL_BYTES:
            del self._buf[:-TAIL_BYTES]

    def text(self) -> str:
        return bytes(self._buf[-TAIL_BYTES:]).decode(errors="replace")


class Relay:
    def __init__(
        self,
        fd: int,
        printer: Printer,
        stream: int,
        *,
        rank: int,
        label: str,
        console: bool,
        labelled: bool,
        file_fd: int | None,
        tail: Tail | None,
    ) -> None:
        os.set_blocking(fd, False)
        self.fd = fd
        self._printer, self._stream = printer, stream
        self._console, self._file_fd, self._tail = console, file_fd, tail
        self._label = printer.label(label, rank, stream) if labelled else b""
        torch_label = b"[rank%d]: " % rank
        self._torch_label = torch_label if label.encode() + b" " == torch_label else None
        self._pending = b""

    @property
    def open(self) -> bool:
        return self.fd >= 0

    def read(self) -> bool:
        """Relay one chunk if one is ready; False once the stream has ended."""
        return self._read_once() is not False

    def drain(self) -> bool:
        """Relay all that is ready now; False once the stream has ended."""
        while (more := self._read_once()) is True:
            pass
        return more is None

    def _read_once(self) -> bool | None:
        """True: relayed a chunk; None: nothing ready; False: the stream ended."""
        try:
            windows = _read(self.fd)
        except BlockingIOError:
            return None
        if not windows:
            self.flush()
            return False
        if self._file_fd is not None:
            write_all(self._file_fd, *windows)
        for window in windows:
            if self._tail is not None:
                self._tail.add(window)
            if self._console:
                self._to_console(window)
        return True

    def flush(self) -> None:
        """Print an unterminated last line, as a line of its own."""
        if self._pending:
            self._printer.write(self._stream, self._render(self._pending))
            self._pending = b""

    def _to_console(self, chunk: bytes | bytearray) -> None:
        """Write the lines ``chunk`` ends, labelled without copying them again; keep the rest."""
        end = chunk.rfind(b"\n")
        if end < 0:
            self._hold(self._pending + chunk)
            return
        label = self._printer.stamp() + self._label
        if label:
            body = chunk.replace(b"\n", b"\n" + label)
            cut = len(body) - (len(chunk) - end - 1) - len(label)
        else:
            body, cut = chunk, end + 1
        lines = memoryview(body)[:cut]
        if torch_label := self._torch_label_in(chunk):
            joined = b"".join((label, self._pending, lines))
            self._printer.write(self._stream, joined.replace(label + torch_label, label))
        else:
            self._printer.write(self._stream, label, self._pending, lines)
        self._pending = b""
        self._hold(bytes(memoryview(chunk)[end + 1 :]))

    def _torch_label_in(self, chunk: bytes | bytearray) -> bytes | None:
        """This rank's torch label, if the pending line or ``chunk`` holds it. Searching for it
        costs four times the labelling itself, so a one-byte scan for ``[`` comes first."""
        torch_label, pending = self._torch_label, self._pending
        if not torch_label or not self._label or b"[" not in chunk and b"[" not in pending:
            return None
        if torch_label in chunk or torch_label in pending + chunk[: len(torch_label)]:
            return torch_label
        return None

    def _hold(self, rest: bytes) -> None:
        """Keep an unterminated line for the next chunk; a long one goes out in pieces now."""
        if len(rest) > MAX_LINE:
            label = self._printer.stamp() + self._label
            view = memoryview(rest)
            pieces: list[bytes | memoryview] = []
            while len(view) > MAX_LINE:
                pieces += (label, view[:MAX_LINE], b"\n")
                view = view[MAX_LINE:]
            self._printer.write(self._stream, *pieces)
            rest = bytes(view)
        self._pending = rest

    def _render(self, lines: bytes) -> bytes:
        """Label each line of ``lines`` (given without its final newline), and end it.

        A line that already carries this rank's torch label keeps just one label. Searching
        for that label costs four times the labelling itself, so a one-byte scan for its
        first character comes first.
        """
        label = self._printer.stamp() + self._label
        if not label:
            return lines + b"\n"
        out = b"".join((label, lines.replace(b"\n", b"\n" + label), b"\n"))
        torch_label = self._torch_label
        if torch_label and self._label and b"[" in lines and torch_label in lines:
            out = out.replace(label + torch_label, label)
        return out

    def close(self) -> None:
        if self.fd >= 0:
            self.flush()
            os.close(self.fd)
            self.fd = -1
        if self._file_fd is not None:
            os.close(self._file_fd)
            self._file_fd = None


_windows: list[bytearray] = []


def _read(fd: int) -> list[bytearray]:
    """Read what ``fd`` holds, up to READ_BYTES, into the shared windows; [] at its end.

    The windows hold the data until the next read, of any relay: keep copies, never them.
    One loop relays (``launch()`` runs on the main thread), so one set of windows serves all.
    They double while reads fill them all, so that ranks that write little cost little.
    """
    if not _windows:
        _windows.append(bytearray(WINDOW))
    full, part = divmod(os.readv(fd, _windows), WINDOW)
    read = _windows[:full] + [_windows[full][:part]] if part else _windows[:full]
    if full == len(_windows) < READ_BYTES // WINDOW:
        _windows.extend(bytearray(WINDOW) for _ in range(full))
    return read
