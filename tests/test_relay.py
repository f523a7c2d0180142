"""The relay at its seam: a pipe in, a fake printer out, no processes."""

from __future__ import annotations

import fcntl
import os
import random
from collections.abc import Iterator

import pytest

from rankrun.output.relay import MAX_LINE, READ_BYTES, TAIL_BYTES, WINDOW, Relay, Tail
from rankrun.run.rank import pipe_bytes


class FakePrinter:
    def __init__(self) -> None:
        self.writes: list[tuple[int, bytes]] = []

    def label(self, label: str, rank: int, stream: int) -> bytes:
        return label.encode() + b" "

    def stamp(self) -> bytes:
        return b""

    def write(self, stream: int, *data: bytes | memoryview) -> None:
        self.writes.append((stream, b"".join(data)))

    def text(self) -> bytes:
        return b"".join(data for _, data in self.writes)


@pytest.fixture
def pipe() -> Iterator[tuple[int, int]]:
    read_fd, write_fd = os.pipe()
    yield read_fd, write_fd
    for fd in (read_fd, write_fd):
        try:
            os.close(fd)
        except OSError:
            pass


def _relay(read_fd: int, printer: FakePrinter, tail: Tail | None = None) -> Relay:
    return Relay(read_fd, printer, 1, rank=3, label="[rank3]:", console=True,  # type: ignore[arg-type]
                 labelled=True, file_fd=None, tail=tail)  # fmt: skip


def test_a_half_line_waits_for_its_end_and_the_last_is_flushed(pipe: tuple[int, int]) -> None:
    printer = FakePrinter()
    relay = _relay(pipe[0], printer)
    os.write(pipe[1], b"hel")
    relay.drain()
    assert printer.writes == []
    os.write(pipe[1], b"lo\nwor")
    relay.drain()
    assert printer.writes == [(1, b"[rank3]: hello\n")]
    os.close(pipe[1])
    assert relay.drain() is False  # EOF flushes the unterminated line
    assert printer.text() == b"[rank3]: hello\n[rank3]: wor\n"


def test_a_long_line_goes_out_in_labelled_pieces(pipe: tuple[int, int]) -> None:
    printer = FakePrinter()
    relay = _relay(pipe[0], printer)
    for _ in range(5):
        os.write(pipe[1], b"x" * (MAX_LINE // 2))
        relay.drain()
    lines = printer.text().split(b"\n")[:-1]
    assert [len(line) for line in lines] == [len(b"[rank3]: ") + MAX_LINE] * 2
    os.close(pipe[1])
    relay.drain()
    assert printer.text().endswith(b"\n[rank3]: " + b"x" * (MAX_LINE // 2) + b"\n")


def test_torchs_label_is_kept_once_and_other_labels_are_kept(pipe: tuple[int, int]) -> None:
    printer = FakePrinter()
    relay = _relay(pipe[0], printer)
    os.write(pipe[1], b"[rank3]: a\n[rank4]: b\nc [rank3]: d\n")
    relay.drain()
    assert printer.text() == b"[rank3]: a\n[rank3]: [rank4]: b\n[rank3]: c [rank3]: d\n"


def test_the_tail_keeps_the_last_bytes_only(pipe: tuple[int, int]) -> None:
    tail = Tail()
    relay = _relay(pipe[0], FakePrinter(), tail)
    data = bytes(i % 251 for i in range(5 * TAIL_BYTES)).replace(b"\n", b".")
    for i in range(0, len(data), 4096):
        os.write(pipe[1], data[i : i + 4096])
        relay.drain()
    assert len(tail._buf) <= 2 * TAIL_BYTES
    assert tail.text() == data[-TAIL_BYTES:].decode(errors="replace")


def test_one_read_relays_all_that_a_full_widened_pipe_holds(pipe: tuple[int, int]) -> None:
    # Each read of a full pipe wakes its writer: one read must take all of it, labelled alike
    # whether a line lies within one of the relay's windows or across two.
    if not hasattr(fcntl, "F_SETPIPE_SZ"):
        pytest.skip("pipes are widened on Linux only")
    assert fcntl.fcntl(pipe[1], fcntl.F_SETPIPE_SZ, READ_BYTES) == READ_BYTES
    rng = random.Random(3)
    lines, size = [], 0
    while size < READ_BYTES - 300:
        start = rng.choice([b"", b"[rank3]: ", b"[rank4]: "])
        line = start + b"%d %s" % (len(lines), b"x" * rng.randrange(256))
        lines.append(line)
        size += len(line) + 1
    data = b"\n".join(lines) + b"\n"
    assert len(data) > 8 * WINDOW
    printer = FakePrinter()
    relay = _relay(pipe[0], printer)
    os.write(pipe[1], data)
    relay.drain()  # the first reads grow the relays' windows
    printer.writes.clear()
    os.write(pipe[1], data)
    assert relay.read()
    expected = [b"[rank3]: " + line.removeprefix(b"[rank3]: ") for line in lines]
    assert printer.text().split(b"\n")[:-1] == expected


def test_the_pipes_of_a_large_gang_keep_to_their_share() -> None:
    assert pipe_bytes(2) == READ_BYTES
    for ranks in (1, 8, 9, 64, 1000):
        assert 64 << 10 <= pipe_bytes(ranks) <= READ_BYTES
        assert 2 * ranks * pipe_bytes(ranks) <= 4 << 20 or pipe_bytes(ranks) == 64 << 10
