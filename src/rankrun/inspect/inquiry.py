"""``rankrun stacks`` and ``rankrun status``: a look into a running job from another terminal.

Both find the run in the registry of live runs by its id or its launcher's pid, or take the
only one running. A rank is trusted to be the registered one only while it is still the
launcher's child: a pid of a rank that has ended may already name another process.

``status`` samples each rank's CPU time twice, ``CPU_SAMPLE_S`` apart, so that CPU% says
what the rank does now (a rank spinning in a collective, or idle in one), not its average
since it started. CPU% and RSS are summed over the rank's process group: its DataLoader
workers, or the Python that a shell-script rank started.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from collections.abc import Callable, Sequence

from rankrun.base.errors import UsageError
from rankrun.inspect.lookup import find_run
from rankrun.inspect.procfs import ProcStat, all_processes, read_stat
from rankrun.inspect.registry import RankEntry, RunEntry, seconds_since_output

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import NoReturn

    from rankrun.inspect.stacks import StackDump

CPU_SAMPLE_S = 0.5
DUMP_TIMEOUT_S = 10.0
WAIT_S = 30.0  # for the nodes' answers: a beat (up to 2 s), then py-spy's DUMP_TIMEOUT_S
_STATES = {
    "R": "running",
    "S": "sleeping",
    "D": "uninterruptible",
    "T": "stopped",
    "t": "traced",
    "Z": "zombie",
    "X": "dead",
    "I": "idle",
}


WholeJob = Callable[[str, RunEntry, bool, float], int]
"""``rankrun stacks`` or ``status`` on node 0 of a multi-node job: (command, node 0's entry,
--native, seconds to wait for the nodes' answers) -> exit code. It needs the job's store,
so it lives above this package, and the command passes it in."""


def main(argv: Sequence[str], whole_job: WholeJob | None = None) -> int:
    """``rankrun stacks ...`` or ``rankrun status ...``, named by ``argv[0]``; raises
    UsageError for a bad command line, and RankrunError where the run or its stacks can't be
    had."""
    command = argv[0]
    args = _parser(command).parse_args(argv[1:])
    wait = getattr(args, "wait", 0.0)
    if not 0 < wait <= 3600 and command == "stacks":
        raise UsageError(f"--wait {wait:g}: give seconds from 0 to 3600, such as 30")
    run = find_run(args.run)
    try:
        if run.nnodes > 1 and run.node_rank == 0 and whole_job is not None:
            code = whole_job(command, run, getattr(args, "native", False), wait)
        else:
            if run.nnodes > 1:
                print(_elsewhere(run, command))
            code = stacks(run, native=args.native) if command == "stacks" else status(run)
        sys.stdout.flush()
    except BrokenPipeError:  # rankrun status | head: the reader has what it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 128 + signal.SIGPIPE
    return code


def _elsewhere(run: RunEntry, command: str) -> str:
    """On a node other than 0: where the whole job can be seen."""
    host = run.job_store.rpartition(":")[0].strip("[]") or "?"
    return (
        f"node {run.node_rank} of job {run.run_id}'s {run.nnodes} nodes: node 0 (host {host}) "
        f"has the whole job (rankrun {command} {run.run_id} there); this node's ranks:"
    )


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see {self.prog} --help)")


def _parser(command: str) -> argparse.ArgumentParser:
    what = {
        "stacks": "Print the Python stack of every thread of every rank of a running job, "
        "while the job runs on: py-spy pauses each rank only for the read (needs py-spy).",
        "status": "Print one line per rank of a running job: its pid, state, CPU%, memory, "
        "seconds since its last output, and the attempt.",
    }[command]
    p = _Parser(prog=f"rankrun {command}", description=what)
    p.add_argument(
        "run",
        nargs="?",
        help="a run id, or the pid of its launcher or of a rank (default: the only running job)",
    )
    if command == "stacks":
        p.add_argument("--native", action="store_true", help="add C/C++ frames")
        p.add_argument(
            "--wait",
            type=float,
            default=WAIT_S,
            metavar="SECONDS",
            help="on node 0 of a multi-node job: how long to wait for the other nodes' stacks "
            f"(default {WAIT_S:g})",
        )
    return p


# --- stacks ------------------------------------------------------------------------------------


def stacks(run: RunEntry, *, native: bool = False) -> int:
    """Print every rank's stacks; 1 when none could be read."""
    from rankrun.inspect.stacks import StackDump, dump, format_dumps

    live = [(f"rank{r.rank}", r.pid) for r in run.ranks if _is_rank(r.pid, run.pid)]
    by_label: dict[str, list[StackDump]] = {}
    for d in dump(live, DUMP_TIMEOUT_S, native=native):
        by_label.setdefault(d.label, []).append(d)
    ordered: list[StackDump] = []
    for r in run.ranks:
        label = f"rank{r.rank}"
        gone = StackDump(label, r.pid, "", f"rank {r.rank} (pid {r.pid}) has ended")
        ordered.extend(by_label.get(label) or [gone])
    if any(d.error is None for d in ordered):
        sys.stdout.write(format_dumps(ordered))
        return 0
    same = _same_error(ordered)
    if same is None:
        sys.stdout.write(format_dumps(ordered))
    else:
        print(f"rankrun: error: {same}", file=sys.stderr)
    return 1


def _same_error(dumps: Sequence[StackDump]) -> str | None:
    """The one error every rank met (the same but for the pid), or None."""
    kinds = {(d.error or "").replace(str(d.pid), "#") for d in dumps}
    if len(kinds) != 1:
        return None
    first, others = dumps[0].error, len(dumps) - 1
    if not others:
        return first
    what = "the other rank" if others == 1 else f"the other {others} ranks"
    return f"{first} (and the same for {what})"


# --- status ------------------------------------------------------------------------------------


def status(run: RunEntry) -> int:
    """Print the run and one line per rank."""
    before, start = all_processes(), time.monotonic()
    time.sleep(CPU_SAMPLE_S)
    after, elapsed = all_processes(), time.monotonic() - start
    now = time.time()
    up = now - run.started_at
    print(
        f"run {run.run_id}: launcher pid {run.pid} on {run.host}, node {run.node_rank}, "
        f"up {up:.0f} s: {run.command}"
    )
    rows = [["RANK", "LOCAL", "PID", "STATE", "CPU%", "RSS", "PROCS", "LAST OUTPUT", "ATTEMPT"]]
    for rank in run.ranks:
        rows.append(_row(run, rank, before, after, elapsed, now))
    print_table(rows)
    return 0


def print_table(rows: Sequence[Sequence[str]]) -> None:
    """Rows of cells in columns as wide as their widest cell."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())


def _row(
    run: RunEntry,
    rank: RankEntry,
    before: dict[int, ProcStat],
    after: dict[int, ProcStat],
    elapsed: float,
    now: float,
) -> list[str]:
    ids = [str(rank.rank), str(rank.local_rank), str(rank.pid)]
    leader = after.get(rank.pid)
    if leader is None or leader.ppid != run.pid:
        return [*ids, "ended", "-", "-", "-", "-", str(run.attempt)]
    group = [p for p, proc in after.items() if proc.pgrp == rank.pid]
    ticks = sum(after[p].ticks - before[p].ticks for p in group if p in before)
    cpu = 100.0 * ticks / os.sysconf("SC_CLK_TCK") / elapsed
    rss = sum(after[p].rss_pages for p in group) * os.sysconf("SC_PAGE_SIZE")
    since = seconds_since_output(rank, now)
    return [
        *ids,
        _STATES.get(leader.state, leader.state),
        f"{cpu:.1f}",
        _size(rss),
        str(len(group)),
        "-" if since is None else f"{since:.1f} s ago",
        str(run.attempt),
    ]


def _size(n: int) -> str:
    if n >= 1 << 30:
        return f"{n / (1 << 30):.1f} GiB"
    return f"{n / (1 << 20):.1f} MiB"


def _is_rank(pid: int, launcher: int) -> bool:
    proc = read_stat(pid)
    return proc is not None and proc.ppid == launcher and proc.state not in ("Z", "X")
