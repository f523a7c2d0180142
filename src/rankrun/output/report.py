"""What the user reads last: the root cause of a failed run, with its error."""

from __future__ import annotations

import re

from rankrun.output.outcome import Attempt, JobOutcome, NodeRecord, RankResult, signal_name
from rankrun.output.rank_ranges import fold

_TAIL_LINES = 20
_MAX_TRACEBACK_LINES = 40
_TORCH_LABEL = re.compile(r"^\[rank\d+\]: ?")
# A Python traceback, or faulthandler's stacks after a crash in native code.
_ERROR_STARTS = ("Traceback (most recent", "Fatal Python error: ")


def format_report(job: JobOutcome) -> list[str]:
    """The lines that close a run, on one node or node 0 of many; none when every rank of
    every node exited 0 on the first attempt."""
    last = job.attempts[-1]
    lines: list[str] = []
    if len(job.attempts) > 1:
        lines.extend(attempt_line(a) for a in job.attempts)
    if last.cause is not None:
        lines.append(root_cause_line(last.cause, job))
        lines.extend(f"  {line}" for line in error_lines(last.cause))
        cuda = cuda_error_line(last.cause)
        if cuda is not None:
            lines.append(cuda)
        lines.append(others_line(last))
        if last.interrupted_by is not None:
            lines.append(
                f"interrupted: rankrun got {signal_name(last.interrupted_by)} during the "
                f"teardown of rank {last.cause.rank}'s failure"
            )
    elif last.halted is not None:
        lines.append(f"stopped: {last.halted.reason}")
        lines.append(others_line(last))
    elif last.launcher_error is not None:
        lines.append(f"rankrun failed: {last.launcher_error}")
        lines.append(others_line(last))
    elif last.interrupted_by is not None:
        lines.append(f"stopped: rankrun got {signal_name(last.interrupted_by)}")
        lines.append(others_line(last))
    if len(job.nodes) > 1 and (lines or any(n.exit_code for n in job.nodes)):
        lines.extend(node_line(n, last) for n in job.nodes)
    if lines:
        lines.extend(stuck_lines(last))
        lines.append(f"exit code {job.exit_code}")
    return lines


def root_cause_line(result: RankResult, job: JobOutcome) -> str:
    node = f", node {result.node_rank}" if len(job.nodes) > 1 else ""
    pid = f", pid {result.pid}" if result.pid is not None else ""
    gpu = f", GPU {result.gpu}" if result.gpu else ""
    return (
        f"root cause: rank {result.rank} (local rank {result.local_rank}{node}, "
        f"host {job.hostname(result.node_rank)}{pid}{gpu}) "
        f"{result.ending.words()} after {result.duration:.2f} s"
    )


def node_line(node: NodeRecord, attempt: Attempt) -> str:
    """``node 1 (h1, pid 7): failed: 3; terminated (SIGTERM): 2``."""
    who = f"node {node.node_rank} ({node.hostname}, pid {node.pid})"
    if node.exit_code is None:
        return f"{who}: no result: lost, or it did not finish in time"
    groups: dict[str, list[RankResult]] = {}
    for r in attempt.ranks:
        if r.node_rank == node.node_rank:
            groups.setdefault(_state(r), []).append(r)
    return f"{who}: " + "; ".join(f"{what}: {_ranks(rs)}" for what, rs in groups.items())


def _state(r: RankResult) -> str:
    if r.failed:
        return "failed"
    if r.terminated:
        return f"terminated ({signal_name(r.signal)})" if r.signal is not None else "terminated"
    return "exited"


def cuda_error_line(result: RankResult) -> str | None:
    """Says so when the rank died of a CUDA error, as torch words one."""
    tail = result.stderr_tail
    if "CUDA error" not in tail and "CUDA out of memory" not in tail:
        return None
    on = f" on {result.gpu}" if result.gpu else ""
    return f"  (a CUDA error{on}: look at that GPU, or rerun with CUDA_LAUNCH_BLOCKING=1)"


def attempt_line(attempt: Attempt) -> str:
    if attempt.cause is not None:
        what = f"rank {attempt.cause.rank} {attempt.cause.ending.words()}"
    elif attempt.halted is not None:
        what = attempt.halted.reason
    elif attempt.launcher_error is not None:
        what = attempt.launcher_error
    elif attempt.interrupted_by is not None:
        what = f"rankrun got {signal_name(attempt.interrupted_by)}"
    else:
        what = "every rank exited 0"
    return f"attempt {attempt.number}: {what}"


def others_line(attempt: Attempt) -> str:
    """What every other rank did: failed on its own, ended by rankrun (and how), or finished."""
    groups: dict[str, list[RankResult]] = {}
    for r in attempt.ranks:
        if r is not attempt.cause:
            groups.setdefault(_what_it_did(r), []).append(r)
    order = sorted(groups, key=lambda what: (what != "failed afterwards", what == "finished"))
    parts = [f"{what}: {_ranks(groups[what])}" for what in order]
    return "others: " + ("; ".join(parts) if parts else "none")


def _what_it_did(r: RankResult) -> str:
    if r.failed:
        return "failed afterwards"
    if not r.terminated:
        return "finished"
    if r.signal is not None:
        return f"terminated ({signal_name(r.signal)})"
    if r.exit_code is None:
        return "stuck in the kernel" if r.ending.stuck else "did not end, even after SIGKILL"
    return f"exited with code {r.exit_code} during the teardown"


def stuck_lines(attempt: Attempt) -> list[str]:
    """Each rank that outlived SIGKILL, with where it is stuck."""
    return [
        f"rank {r.rank} (pid {r.pid}) {r.ending.words()}" for r in attempt.ranks if r.ending.stuck
    ]


def _ranks(results: list[RankResult]) -> str:
    """Rank numbers with runs of three or more folded: ``0-5, 7, 8, 10-511``."""
    return fold((r.rank for r in results), separator=", ", shortest=3, limit=None)


def error_lines(result: RankResult) -> list[str]:
    """The rank's error: its last traceback or fatal error's stacks, else its error.json
    message, else its stderr's end."""
    lines = [_TORCH_LABEL.sub("", line) for line in result.stderr_tail.splitlines()]
    starts = [i for i, line in enumerate(lines) if line.startswith(_ERROR_STARTS)]
    if starts:
        return _shorten(lines[starts[-1] :])
    from_file = _error_file_lines(result.error_file)
    return from_file or lines[-_TAIL_LINES:]


def _shorten(lines: list[str]) -> list[str]:
    if len(lines) <= _MAX_TRACEBACK_LINES:
        return lines
    keep = _MAX_TRACEBACK_LINES - 3
    return [*lines[:2], f"... {len(lines) - keep - 2} lines ...", *lines[-keep:]]


def _error_file_lines(path: str | None) -> list[str]:
    """torch's ``@record`` writes {"message": {"message": ..., "extraInfo": {...}}}."""
    if path is None:
        return []
    import json

    try:
        with open(path) as f:
            message = json.load(f).get("message")
    except (OSError, ValueError, AttributeError):
        return []
    if isinstance(message, str):
        return message.splitlines()
    if not isinstance(message, dict):
        return []
    stack = (message.get("extraInfo") or {}).get("py_callstack")
    text = stack if isinstance(stack, str) and stack else str(message.get("message", ""))
    return _shorten(text.splitlines())
