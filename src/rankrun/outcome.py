"""What happened: each rank's end, each attempt's root cause, and the exit code.

The value types of rankrun are NamedTuples: dataclasses would add 20 ms to every launch.
"""

from __future__ import annotations

from typing import NamedTuple


class RankResult(NamedTuple):
    rank: int
    local_rank: int
    pid: int
    started_at: float
    ended_at: float
    exit_code: int | None
    """The rank's exit status, or None when a signal ended it."""
    signal: int | None
    terminated: bool
    """The launcher signalled the rank's group before the rank ended."""
    error: str | None = None
    """The launcher's own word on the rank, such as why it could not start."""
    stderr_tail: str = ""
    """The end of the rank's stderr, where rankrun saw it (not when passed straight through)."""
    error_file: str | None = None
    """The rank's TORCHELASTIC_ERROR_FILE, which torch's ``@record`` writes on an exception."""

    @property
    def failed(self) -> bool:
        return not self.terminated and (self.exit_code != 0 or self.signal is not None)

    @property
    def code(self) -> int:
        """The exit code a shell would show: the status, or 128+N for signal N."""
        if self.signal is not None:
            return 128 + self.signal
        return self.exit_code or 0

    @property
    def duration(self) -> float:
        return self.ended_at - self.started_at


class Attempt(NamedTuple):
    number: int
    """0 for the first attempt, then 1, 2, ... as TORCHELASTIC_RESTART_COUNT counts them."""
    ranks: tuple[RankResult, ...]
    cause: RankResult | None
    """The earliest failure, the root cause; None when no rank failed on its own."""
    interrupted_by: int | None = None
    """The signal that made the launcher end this attempt, if one did."""

    @property
    def exit_code(self) -> int:
        if self.cause is not None:
            return self.cause.code
        if self.interrupted_by is not None:
            return 128 + self.interrupted_by
        return 0


class Outcome(NamedTuple):
    attempts: tuple[Attempt, ...]

    @property
    def ranks(self) -> tuple[RankResult, ...]:
        return self.attempts[-1].ranks

    @property
    def exit_code(self) -> int:
        return self.attempts[-1].exit_code

    @property
    def ok(self) -> bool:
        return self.exit_code == 0
