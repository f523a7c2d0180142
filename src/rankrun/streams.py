"""Where each rank's stdout and stderr go: the console, a log file, or both.

A stream is named by its file descriptor number, as torchrun's -r/-t masks count them:
1 is stdout, 2 is stderr.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from rankrun.errors import UsageError
from rankrun.values import NamedTuple

STDOUT = 1
STDERR = 2
STREAMS = (STDOUT, STDERR)


class StreamSpec(NamedTuple):
    """torchrun's value syntax for -r/-t: ``3`` for every local rank, or ``0:1,1:2``."""

    default: int = 0
    per_rank: Mapping[int, int] = {}

    def mask(self, local_rank: int) -> int:
        return self.per_rank.get(local_rank, self.default)

    @property
    def used(self) -> bool:
        """Whether any local rank has a stream named."""
        return bool(self.default or any(self.per_rank.values()))


def parse_stream_spec(value: str, flag: str) -> StreamSpec:
    try:
        if ":" not in value:
            return StreamSpec(_mask(int(value)))
        pairs = (item.split(":") for item in value.split(","))
        return StreamSpec(0, {int(rank): _mask(int(mask)) for rank, mask in pairs})
    except ValueError:
        raise UsageError(
            f"{flag} {value!r}: give 0-3 (1 stdout, 2 stderr, 3 both) or pairs such as 0:1,1:2"
        ) from None


def _mask(value: int) -> int:
    if not 0 <= value <= 3:
        raise ValueError(value)
    return value


def parse_ranks_filter(value: str) -> frozenset[int]:
    try:
        return frozenset(int(v) for v in value.split(","))
    except ValueError:
        raise UsageError(
            f"--local-ranks-filter {value!r}: give local ranks separated by commas, such as 0,3"
        ) from None


class OutputOptions(NamedTuple):
    prefix: bool = True
    local_ranks_filter: frozenset[int] | None = None
    timestamps: bool = False
    log_dir: str | None = None
    redirects: StreamSpec = StreamSpec()
    tee: StreamSpec = StreamSpec()


class Route(NamedTuple):
    """One stream of one rank."""

    console: bool
    labelled: bool
    stamped: bool
    file: str | None

    @property
    def inherited(self) -> bool:
        """Straight to the launcher's own stream: zero cost, nothing relayed."""
        return self.console and not (self.labelled or self.stamped) and self.file is None


def rank_routes(
    options: OutputOptions,
    local_rank: int,
    world_size: int,
    files: Mapping[int, str] | None,
) -> tuple[Route, Route]:
    """The routes of a rank's stdout and stderr; ``files`` are its log files, if any."""
    shown = options.local_ranks_filter is None or local_rank in options.local_ranks_filter
    labelled = options.prefix and world_size > 1
    redirected = options.redirects.mask(local_rank)
    if options.redirects.used or options.tee.used:
        filed = redirected | options.tee.mask(local_rank)
    else:
        filed = 3 if files else 0
    out, err = (
        Route(
            console=shown and not redirected & stream,
            labelled=labelled,
            stamped=options.timestamps,
            file=files[stream] if files and filed & stream else None,
        )
        for stream in STREAMS
    )
    return out, err


def check_writable_dir(path: str, flag: str) -> None:
    """Fail before anything runs if ``path`` cannot be created or written."""
    existing = os.path.abspath(path)
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing) or not os.access(existing, os.W_OK | os.X_OK):
        raise UsageError(f"{flag} {path}: {existing} is not a writable directory")
