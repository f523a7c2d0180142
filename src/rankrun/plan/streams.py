"""Where each rank's stdout and stderr go: the console, a log file, or both.

A stream is named by its file descriptor number, as torchrun's -r/-t masks count them:
1 is stdout, 2 is stderr.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from rankrun.base.errors import UsageError
from rankrun.base.values import NamedTuple
from rankrun.plan.checks import check_utf8, check_writable_dir
from rankrun.plan.layout import default_log_dir
from rankrun.plan.options import Options

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


def parse_stream_spec(value: str, flag: str, nproc: int) -> StreamSpec:
    try:
        if ":" not in value:
            return StreamSpec(_mask(int(value)))
        pairs = (item.split(":") for item in value.split(","))
        spec = StreamSpec(0, {int(rank): _mask(int(mask)) for rank, mask in pairs})
    except ValueError:
        raise UsageError(
            f"{flag} {value!r}: give 0-3 (1 stdout, 2 stderr, 3 both) or pairs such as 0:1,1:2"
        ) from None
    _check_local_ranks(spec.per_rank, flag, value, nproc)
    return spec


def _mask(value: int) -> int:
    if not 0 <= value <= 3:
        raise ValueError(value)
    return value


def parse_ranks_filter(value: str, nproc: int) -> frozenset[int]:
    try:
        ranks = frozenset(int(v) for v in value.split(","))
    except ValueError:
        raise UsageError(
            f"--local-ranks-filter {value!r}: give local ranks separated by commas, such as 0,3"
        ) from None
    _check_local_ranks(ranks, "--local-ranks-filter", value, nproc)
    return ranks


def _check_local_ranks(ranks: Iterable[int], flag: str, value: str, nproc: int) -> None:
    outside = sorted(r for r in ranks if not 0 <= r < nproc)
    if outside:
        raise UsageError(
            f"{flag} {value}: local rank {outside[0]} does not exist with {nproc} rank(s) "
            f"on this node; use 0 to {nproc - 1}"
        )


class OutputOptions(NamedTuple):
    prefix: bool = True
    local_ranks_filter: frozenset[int] | None = None
    timestamps: bool = False
    log_dir: str | None = None
    redirects: StreamSpec = StreamSpec()
    tee: StreamSpec = StreamSpec()
    label_template: str | None = None
    watched: bool = False

    def label(self, *, rank: int, local_rank: int, role_name: str) -> str:
        """A rank's label: torch's ``[rankN]:``, or the template's."""
        if self.label_template is None:
            return f"[rank{rank}]:"
        from string import Template

        values = {"rank": rank, "local_rank": local_rank, "role_name": role_name}
        return Template(self.label_template).safe_substitute(values)


def output_options(o: Options, nproc: int, env: Mapping[str, str]) -> OutputOptions:
    """Check the output settings against ``nproc`` local ranks, and gather them."""
    redirects = parse_stream_spec(o.redirects, "--redirects", nproc)
    tee = parse_stream_spec(o.tee, "--tee", nproc)
    log_dir = o.log_dir
    if log_dir is None and (redirects.used or tee.used):
        log_dir = default_log_dir(env)
    if log_dir is not None:
        check_utf8(log_dir, "--log-dir")
        check_writable_dir(log_dir, "--log-dir")
    ranks_filter = None
    if o.local_ranks_filter is not None:
        ranks_filter = parse_ranks_filter(o.local_ranks_filter, nproc)
    template = o.log_line_prefix_template or env.get("TORCHELASTIC_LOG_LINE_PREFIX_TEMPLATE")
    watched = bool(o.stall_timeout)
    return OutputOptions(
        o.prefix, ranks_filter, o.timestamps, log_dir, redirects, tee, template, watched
    )


class Route(NamedTuple):
    """One stream of one rank."""

    console: bool
    labelled: bool
    stamped: bool
    file: str | None
    watched: bool = False
    """The stall watchdog must see the stream's output, so it passes through rankrun."""

    @property
    def inherited(self) -> bool:
        """Straight to the launcher's own stream: zero cost, nothing relayed."""
        relayed = self.labelled or self.stamped or self.watched
        return self.console and not relayed and self.file is None


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
    consoled = ~redirected | options.tee.mask(local_rank)  # as torchrun: -t beats -r
    if options.redirects.used or options.tee.used:
        filed = redirected | options.tee.mask(local_rank)
    else:
        filed = 3 if files else 0
    out, err = (
        Route(
            console=shown and bool(consoled & stream),
            labelled=labelled,
            stamped=options.timestamps,
            file=files[stream] if files and filed & stream else None,
            watched=options.watched,
        )
        for stream in STREAMS
    )
    return out, err
