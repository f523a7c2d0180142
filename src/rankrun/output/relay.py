"""Relays one stream of one rank: whole lines, labelled, to the console; bytes to its log.

Memory stays bounded: a line longer than ``MAX_LINE`` goes out in labelled pieces, and a
slow console slows the ranks (their pipes fill) instead of growing a buffer here.
"""

from __future__ import annotations

import os

from rankrun.output.printer import Printer, write_all

# A 32 KiB chunk keeps every buffer of its relaying under glibc's 128 KiB mmap threshold, so
# freed buffers are reused from the heap instead of being mapped and unmapped per chunk.
CHUNK = 32 << 10
MAX_LINE = 1 << 16
TAIL_BYTES = 32 << 10


class Tail:
    """The last ``TAIL_BYTES`` of a stream, kept for the failure report."""

    def __init__(self) -> None:
        self._buf = bytearray()

    def add(self, data: bytes) -> None:
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
            chunk = os.read(self.fd, CHUNK)
        except BlockingIOError:
            return None
        if not chunk:
            self.flush()
            return False
        if self._file_fd is not None:
            write_all(self._file_fd, chunk)
        if self._tail is not None:
            self._tail.add(chunk)
        if self._console:
            self._to_console(chunk)
        return True

    def flush(self) -> None:
        """Print an unterminated last line, as a line of its own."""
        if self._pending:
            self._printer.write(self._stream, self._render(self._pending))
            self._pending = b""

    def _to_console(self, chunk: bytes) -> None:
        data = self._pending + chunk if self._pending else chunk
        end = data.rfind(b"\n")
        out = self._render(data[:end]) if end >= 0 else b""
        rest = data[end + 1 :]
        while len(rest) > MAX_LINE:
            out += self._render(rest[:MAX_LINE])
            rest = rest[MAX_LINE:]
        self._pending = rest
        if out:
            self._printer.write(self._stream, out)

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
