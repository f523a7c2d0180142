"""``--summary-json``: the facts of the report, for programs."""

from __future__ import annotations

import json
from typing import Any

from rankrun.output.outcome import Attempt, Outcome, RankResult, signal_name
from rankrun.output.report import error_lines


def summary(outcome: Outcome, hostname: str, run_id: str) -> dict[str, Any]:
    last = outcome.attempts[-1]
    cause = None
    if last.cause is not None:
        cause = {**rank_row(last.cause), "error": "\n".join(error_lines(last.cause))}
    return {
        "run_id": run_id,
        "host": hostname,
        "exit_code": outcome.exit_code,
        "root_cause": cause,
        "attempts": [_attempt(a) for a in outcome.attempts],
    }


def write_summary(path: str, outcome: Outcome, hostname: str, run_id: str) -> None:
    with open(path, "w") as f:
        json.dump(summary(outcome, hostname, run_id), f, indent=2)
        f.write("\n")


def _attempt(attempt: Attempt) -> dict[str, Any]:
    interrupted = attempt.interrupted_by
    return {
        "number": attempt.number,
        "exit_code": attempt.exit_code,
        "cause_rank": attempt.cause.rank if attempt.cause else None,
        "interrupted_by": signal_name(interrupted) if interrupted else None,
        "ranks": [rank_row(r) for r in attempt.ranks],
    }


def rank_row(r: RankResult) -> dict[str, Any]:
    state = "failed" if r.failed else "terminated" if r.terminated else "exited"
    return {
        "rank": r.rank,
        "local_rank": r.local_rank,
        "pid": r.pid,
        "started_at": r.started_at,
        "ended_at": r.ended_at,
        "exit_code": r.exit_code,
        "signal": signal_name(r.signal) if r.signal is not None else None,
        "state": state,
        "oom_killed": r.ending.oom.oom_killed if r.ending.oom is not None else None,
        "oom": _oom(r),
        "stuck": r.ending.stuck,
    }


def _oom(r: RankResult) -> dict[str, Any] | None:
    """What the kernel said of an OOM kill: ``words`` as the report puts it."""
    oom = r.ending.oom
    if oom is None or not oom.oom_killed:
        return None
    return {
        "cgroup": oom.cgroup,
        "memory_limit_bytes": oom.limit,
        "peak_rss_bytes": oom.peak_rss,
        "words": oom.words(),
    }
