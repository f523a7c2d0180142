"""What the user reads last: the root cause of a failed run, in a few lines."""

from __future__ import annotations

import signal

from rankrun.outcome import Attempt, Outcome, RankResult

SIGNAL_MEANINGS = {
    signal.SIGKILL: "often the kernel's OOM killer",
    signal.SIGSEGV: "a crash in native code",
    signal.SIGBUS: "a bad memory access, often a full /dev/shm",
    signal.SIGABRT: "an abort, often a failed check in native code",
    signal.SIGFPE: "an arithmetic fault in native code",
    signal.SIGILL: "an illegal instruction: a binary built for another CPU",
    signal.SIGTERM: "asked to stop by someone other than rankrun",
    signal.SIGINT: "interrupted",
    signal.SIGHUP: "its terminal went away",
    signal.SIGPIPE: "it wrote to a closed pipe",
}


def signal_text(signum: int) -> str:
    name = signal.Signals(signum).name
    meaning = SIGNAL_MEANINGS.get(signal.Signals(signum))
    return f"{name} ({meaning})" if meaning else name


def how_it_ended(result: RankResult) -> str:
    if result.error:
        return result.error
    if result.signal is not None:
        return f"was killed by {signal_text(result.signal)}"
    return f"exited with code {result.exit_code}"


def root_cause_line(result: RankResult, host: str) -> str:
    return (
        f"root cause: rank {result.rank} (local rank {result.local_rank}, host {host}, "
        f"pid {result.pid}) {how_it_ended(result)} after {result.duration:.2f} s"
    )


def attempt_line(attempt: Attempt) -> str:
    if attempt.cause is not None:
        cause = attempt.cause
        what = f"rank {cause.rank} {how_it_ended(cause)}"
    elif attempt.interrupted_by is not None:
        what = f"rankrun got {signal.Signals(attempt.interrupted_by).name}"
    else:
        what = "every rank exited 0"
    return f"attempt {attempt.index}: {what}"


def format_report(outcome: Outcome, host: str) -> list[str]:
    """The lines that close a run; none when every rank exited 0 on the first attempt."""
    last = outcome.attempts[-1]
    lines: list[str] = []
    if len(outcome.attempts) > 1:
        lines.extend(attempt_line(a) for a in outcome.attempts)
    if last.cause is not None:
        lines.append(root_cause_line(last.cause, host))
    elif last.interrupted_by is not None:
        lines.append(f"stopped: {attempt_line(last).split(': ', 1)[1]}")
    if lines:
        lines.append(f"exit code {outcome.exit_code}")
    return lines
