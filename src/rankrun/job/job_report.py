"""The report of a multi-node job: node 0 prints it for every node, from the store's facts.

The root cause is the failure the store recorded first, never the earliest by a host's
clock, which may disagree with the others.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from rankrun.job.control import AttemptEnd, EndKind, FailureFact, NodeInfo, NodeResult
from rankrun.output.outcome import Ending, Outcome

_STATES = ("failed", "terminated", "exited")


def job_report(
    outcome: Outcome,
    end: AttemptEnd | None,
    root: FailureFact | None,
    results: Mapping[int, NodeResult],
    nodes: Mapping[int, NodeInfo],
) -> list[str]:
    """The closing lines on node 0; none when every rank of every node exited 0."""
    lines: list[str] = []
    if root is not None:
        lines.append(root_cause_line(root))
        lines.extend(f"  {line}" for line in root.error_text.splitlines())
    elif end is not None and end.kind != EndKind.DONE:
        lines.append(f"stopped: {end.reason}")
    if lines or any(r.exit_code for r in results.values()):
        lines.extend(node_line(n, results.get(r)) for r, n in sorted(nodes.items()))
        lines.append(f"exit code {outcome.exit_code}")
    return lines


def finished_job_line(results: Mapping[int, NodeResult]) -> str:
    """``8 ranks on 2 nodes exited 0 in 13.9 s``: the longest node's first start to last end,
    each node timed by its own clock."""
    spans = [
        max(row["ended_at"] for row in r.ranks) - min(row["started_at"] for row in r.ranks)
        for r in results.values()
        if r.ranks
    ]
    ranks = sum(len(r.ranks) for r in results.values())
    return f"{ranks} ranks on {len(results)} nodes exited 0 in {max(spans, default=0.0):.1f} s"


def root_cause_line(root: FailureFact) -> str:
    ending = Ending(root.exit_code, root.signal, 0.0)
    return (
        f"root cause: rank {root.rank} (local rank {root.local_rank}, node {root.node_rank}, "
        f"host {root.hostname}, pid {root.pid}) {ending.words()} after {root.duration:.2f} s"
    )


def node_line(node: NodeInfo, result: NodeResult | None) -> str:
    who = f"node {node.node_rank} ({node.hostname}, pid {node.pid})"
    if result is None:
        return f"{who}: no result: lost, or it did not finish in time"
    groups: dict[str, list[int]] = {}
    for row in result.ranks:
        what = row["state"]
        if what == "terminated" and row.get("signal"):
            what = f"terminated ({row['signal']})"
        groups.setdefault(what, []).append(row["rank"])
    parts = [f"{what}: {', '.join(map(str, ranks))}" for what, ranks in groups.items()]
    return f"{who}: " + "; ".join(parts)


def other_node_line(end: AttemptEnd, node0: NodeInfo, exit_code: int) -> str:
    return (
        f"the job ended: {end.reason}; node 0 ({node0.hostname}) has the report; "
        f"exit code {exit_code}"
    )


def write_job_summary(
    path: str,
    run_id: str,
    outcome: Outcome,
    root: FailureFact | None,
    results: Mapping[int, NodeResult],
) -> None:
    summary: dict[str, Any] = {
        "run_id": run_id,
        "exit_code": outcome.exit_code,
        "root_cause": _with_host(root._asdict()) if root is not None else None,
        "nodes": [_with_host(r._asdict()) for _, r in sorted(results.items())],
    }
    with open(path, "w") as f:
        json.dump(summary, f, indent=2)
        f.write("\n")


def _with_host(row: dict[str, Any]) -> dict[str, Any]:
    """A record as the summary spells it: ``host``, as in the single-node summary."""
    return {("host" if k == "hostname" else k): v for k, v in row.items()}
