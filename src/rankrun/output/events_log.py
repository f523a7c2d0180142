"""``events.log`` in the log directory: rankrun's own messages, each with its time."""

from __future__ import annotations

import os
import time


class EventsLog:
    def __init__(self, path: str) -> None:
        self.path = path
        self._fd: int | None = None
        """Opened at the first message, so that a run that says nothing makes no file."""

    def write(self, message: str) -> bool:
        """Append ``message``; False once the file can't be written."""
        try:
            if self._fd is None:
                os.makedirs(os.path.dirname(self.path), exist_ok=True)
                flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND
                self._fd = os.open(self.path, flags, 0o644)
            stamp = time.strftime("%Y-%m-%dT%H:%M:%S")
            data = f"{stamp} {message}\n".encode()
            while data:  # a regular file: no waiting, only a short write to finish
                data = data[os.write(self._fd, data) :]
        except OSError:
            return False
        return True

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
