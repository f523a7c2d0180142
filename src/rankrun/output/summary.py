"""``--summary-json``: the facts of the report, for programs."""

from __future__ import annotations

import json
from typing import Any

from rankrun.output.outcome import Attempt, JobOutcome, NodeRecord, RankResult, signal_name
from rankrun.output.report import error_lines


def summary(job: JobOutcome, run_id: str) -> dict[str, Any]:
    """One schema for a job on one node or many; each rank row names its node and host."""
    last = job.attempts[-1]
    cause = None
    if last.cause is not None:
        cause = {**rank_row(last.cause, job), "error": "\n".join(error_lines(last.cause))}
    return {
        "run_id": run_id,
        "host": job.host,
        "exit_code": job.exit_code,
        "root_cause": cause,
        "attempts": [_attempt(a, job) for a in job.attempts],
        "nodes": [_node(n) for n in job.nodes],
    }


def write_summary(path: str, job: JobOutcome, run_id: str) -> None:
    with open(path, "w") as f:
        json.dump(summary(job, run_id), f, indent=2)
        f.write("\n")


def _node(node: NodeRecord) -> dict[str, Any]:
    return {"node_rank": node.node_rank, "host": node.hostname, "pid": node.pid,
            "exit_code": node.exit_code}  # fmt: skip


def _attempt(attempt: Attempt, job: JobOutcome) -> dict[str, Any]:
    interrupted = attempt.interrupted_by
    return {
        "number": attempt.number,
        "exit_code": attempt.exit_code,
        "cause_rank": attempt.cause.rank if attempt.cause else None,
        "interrupted_by": signal_name(interrupted) if interrupted else None,
        "ranks": [rank_row(r, job) for r in attempt.ranks],
    }


def rank_row(r: RankResult, job: JobOutcome) -> dict[str, Any]:
    state = "failed" if r.failed else "terminated" if r.terminated else "exited"
    return {
        "rank": r.rank,
        "local_rank": r.local_rank,
        "node_rank": r.node_rank,
        "host": job.hostname(r.node_rank),
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
