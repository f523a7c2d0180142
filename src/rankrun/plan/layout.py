"""Where a run's files go, in one place::

<log dir>/<run id>/events.log                         the launcher's own messages
<log dir>/<run id>/attempt_<k>/rank_<r>/stdout.log    rank r's stdout, byte for byte
<log dir>/<run id>/attempt_<k>/rank_<r>/stderr.log
<log dir>/<run id>/attempt_<k>/rank_<r>/error.json    TORCHELASTIC_ERROR_FILE, for @record
<log dir>/<run id>/attempt_<k>/stacks_<n>.txt         every rank's stack, the n-th time read
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from rankrun.base.values import NamedTuple

STREAM_FILES = {1: "stdout.log", 2: "stderr.log"}


def default_log_dir(env: Mapping[str, str]) -> str:
    """Where -r and -t write without --log-dir: ``$TMPDIR/rankrun-logs``."""
    return os.path.join(env.get("TMPDIR") or "/tmp", "rankrun-logs")


class Layout(NamedTuple):
    root: str
    """``<log dir>/<run id>``."""

    @property
    def events(self) -> str:
        return os.path.join(self.root, "events.log")

    def rank_dir(self, attempt: int, rank: int) -> str:
        return os.path.join(self.root, f"attempt_{attempt}", f"rank_{rank}")

    def stream_file(self, attempt: int, rank: int, stream: int) -> str:
        return os.path.join(self.rank_dir(attempt, rank), STREAM_FILES[stream])

    def error_file(self, attempt: int, rank: int) -> str:
        return os.path.join(self.rank_dir(attempt, rank), "error.json")

    def stacks_file(self, attempt: int, number: int) -> str:
        return os.path.join(self.root, f"attempt_{attempt}", f"stacks_{number}.txt")
