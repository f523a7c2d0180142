"""Where each rank's stdout and stderr go: the console, a log file, or both.

The layout of ``--log-dir DIR`` is::

    DIR/<run-id>/events.log                         the launcher's own messages
    DIR/<run-id>/attempt_<k>/rank_<r>/stdout.log    rank r's stdout, byte for byte
    DIR/<run-id>/attempt_<k>/rank_<r>/stderr.log
    DIR/<run-id>/attempt_<k>/rank_<r>/error.json    TORCHELASTIC_ERROR_FILE, for torch's @record
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import NamedTuple

from rankrun.errors import UsageError


class StreamSpec(NamedTuple):
    """torchrun's value syntax for -r/-t: ``3`` for every local rank, or ``0:1,1:2``."""

    default: int = 0
    per_rank: Mapping[int, int] = {}

    def mask(self, local_rank: int) -> int:
        return self.per_rank.get(local_rank, self.default)

    def __bool__(self) -> bool:
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
    options: OutputOptions, local_rank: int, world_size: int, rank_dir: str | None
) -> tuple[Route, Route]:
    shown = options.local_ranks_filter is None or local_rank in options.local_ranks_filter
    labelled = options.prefix and world_size > 1
    redirected = options.redirects.mask(local_rank)
    if options.redirects or options.tee:
        filed = redirected | options.tee.mask(local_rank)
    else:
        filed = 3 if rank_dir else 0
    routes = []
    for bit, name in ((1, "stdout"), (2, "stderr")):
        file = os.path.join(rank_dir, f"{name}.log") if rank_dir and filed & bit else None
        console = shown and not redirected & bit
        routes.append(Route(console, labelled, options.timestamps, file))
    return routes[0], routes[1]


def check_writable_dir(path: str, flag: str) -> None:
    """Fail before anything runs if ``path`` cannot be created or written."""
    existing = os.path.abspath(path)
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing) or not os.access(existing, os.W_OK | os.X_OK):
        raise UsageError(f"{flag} {path}: {existing} is not a writable directory")
