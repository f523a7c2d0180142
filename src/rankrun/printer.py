"""The one writer to the console: the launcher's own messages, under a label of their own."""

from __future__ import annotations

import os


class Printer:
    def __init__(self, err_fd: int = 2, label: str = "rankrun") -> None:
        self._err_fd = err_fd
        self._label = label

    def event(self, message: str) -> None:
        _write_all(self._err_fd, f"{self._label}: {message}\n".encode())


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]
