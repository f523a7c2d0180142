"""What happened: how each rank ended, each attempt's root cause, and the exit code.

The value types of rankrun are NamedTuples: importing dataclasses would cost every launch.
"""

from __future__ import annotations

import signal as _signal

from rankrun.base.values import NamedTuple

SIGNAL_MEANINGS = {
    _signal.SIGKILL: "often the kernel's OOM killer",
    _signal.SIGSEGV: "a crash in native code",
    _signal.SIGBUS: "a bad memory access, often a full /dev/shm",
    _signal.SIGABRT: "an abort, often a failed check in native code",
    _signal.SIGFPE: "an arithmetic fault in native code",
    _signal.SIGILL: "an illegal instruction: a binary built for another CPU",
    _signal.SIGTERM: "asked to stop by someone other than rankrun",
    _signal.SIGINT: "interrupted",
    _signal.SIGHUP: "its terminal went away",
    _signal.SIGPIPE: "it wrote to a closed pipe",
}


def signal_name(signum: int) -> str:
    return _signal.Signals(signum).name


def signal_text(signum: int) -> str:
    meaning = SIGNAL_MEANINGS.get(_signal.Signals(signum))
    return f"{signal_name(signum)} ({meaning})" if meaning else signal_name(signum)


def size_text(size: int) -> str:
    """Bytes as people read memory: ``7.9 GiB``, ``512.0 MiB``."""
    if size >= 1 << 30:
        return f"{size / (1 << 30):.1f} GiB"
    return f"{size / (1 << 20):.1f} MiB"


class OomVerdict(NamedTuple):
    """Whether the kernel's OOM killer sent a rank's SIGKILL, and what the kernel said of it."""

    oom_killed: bool
    cgroup: str | None = None
    """The memory cgroup whose limit was hit (or the rank's), as /proc names it; ``/`` when
    the whole machine ran out."""
    limit: int | None = None
    """That cgroup's memory limit, in bytes."""
    peak_rss: int | None = None
    """The rank's peak resident memory, in bytes."""

    def words(self) -> str:
        if not self.oom_killed:
            return "was killed by SIGKILL, not by the kernel's OOM killer"
        where = []
        if self.cgroup == "/" and self.limit is None:
            where.append("the machine ran out of memory")
        elif self.limit is not None:
            where.append(f"memory limit {size_text(self.limit)} of cgroup {self.cgroup}")
        elif self.cgroup is not None:
            where.append(f"cgroup {self.cgroup}")
        if self.peak_rss is not None:
            where.append(f"rank's peak RSS {size_text(self.peak_rss)}")
        detail = f" ({'; '.join(where)})" if where else ""
        return f"was killed by the kernel's OOM killer{detail}"


class Ending(NamedTuple):
    """How one rank ended, decided once, where its exit is seen."""

    exit_code: int | None
    """The exit status, or None when a signal ended it or it never ended."""
    signal: int | None
    at: float
    """Unix time of the exit, as the launcher saw it."""
    terminated: bool = False
    """The launcher signalled the rank's group before the rank ended."""
    error: str | None = None
    """The launcher's own word, such as why the rank could not start."""
    oom: OomVerdict | None = None
    """For a SIGKILL that rankrun did not send, whether the OOM killer sent it; None when
    no one can tell."""
    stuck: str | None = None
    """For a rank that outlived SIGKILL, where it is stuck: ``state D, in nfs_wait_on_request``."""

    @property
    def failed(self) -> bool:
        """A failure: non-zero or a signal, and not while the launcher was ending it."""
        return not self.terminated and (self.exit_code != 0 or self.signal is not None)

    @property
    def code(self) -> int:
        """The exit code a shell would show: the status, or 128+N for signal N."""
        if self.signal is not None:
            return 128 + self.signal
        return self.exit_code or 0

    def words(self) -> str:
        """How it ended, in words: the launcher's error, the signal and meaning, or the code."""
        if self.error:
            return self.error
        if self.signal is not None:
            if self.oom is not None and self.signal == _signal.SIGKILL:
                return self.oom.words()
            return f"was killed by {signal_text(self.signal)}"
        if self.stuck is not None:
            return f"is stuck in the kernel ({self.stuck}) and could not be ended"
        if self.exit_code is None:
            return "did not end, even after SIGKILL"
        return f"exited with code {self.exit_code}"


class RankResult(NamedTuple):
    rank: int
    local_rank: int
    pid: int | None
    """None when the rank never started."""
    started_at: float
    ending: Ending
    stderr_tail: str = ""
    """The end of the rank's stderr, where rankrun saw it (not when passed straight through)."""
    error_file: str | None = None
    """The rank's TORCHELASTIC_ERROR_FILE, which torch's ``@record`` writes on an exception."""
    gpu: str | None = None
    """The GPU its local rank names, ``cuda:N (PCI bus id)``, on a node with GPUs."""
    node_rank: int = 0

    @property
    def exit_code(self) -> int | None:
        return self.ending.exit_code

    @property
    def signal(self) -> int | None:
        return self.ending.signal

    @property
    def ended_at(self) -> float:
        return self.ending.at

    @property
    def terminated(self) -> bool:
        return self.ending.terminated

    @property
    def failed(self) -> bool:
        return self.ending.failed

    @property
    def code(self) -> int:
        return self.ending.code

    @property
    def duration(self) -> float:
        return self.ending.at - self.started_at


class Halt(NamedTuple):
    """An attempt ended by a decision, not by a rank here: a stall under ``--on-stall stop``,
    or another node's failure, lost node or interrupt. Why, and the job's exit code."""

    reason: str
    exit_code: int


class Attempt(NamedTuple):
    number: int
    """0 for the first attempt, then 1, 2, ... as TORCHELASTIC_RESTART_COUNT counts them."""
    ranks: tuple[RankResult, ...]
    cause: RankResult | None
    """The earliest failure, the root cause; None when no rank failed on its own."""
    interrupted_by: int | None = None
    """The signal that made the launcher end this attempt, if one came before it ended."""
    launcher_error: str | None = None
    """Why the launcher itself could not start a rank, if it could not."""
    halted: Halt | None = None
    """The decision that ended the attempt, if no rank here failed first."""

    @property
    def exit_code(self) -> int:
        """128+N for the launcher's signal N; else the root cause's; 1 if rankrun failed."""
        if self.interrupted_by is not None:
            return 128 + self.interrupted_by
        if self.cause is not None:
            return self.cause.code
        if self.halted is not None:
            return self.halted.exit_code
        return 1 if self.launcher_error else 0


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


class NodeRecord(NamedTuple):
    """One node of a job, as its report names it."""

    node_rank: int
    hostname: str
    pid: int
    """Its launcher's, or its agent's."""
    exit_code: int | None
    """None when it published no result: lost, or too late."""


class JobOutcome(NamedTuple):
    """A whole job, as it is reported: every node, and every attempt with the ranks of every
    node that reported, its ``cause`` the job's root cause. One node is the case of one
    record; node 0 of a multi-node job builds it from the store's facts."""

    nodes: tuple[NodeRecord, ...]
    attempts: tuple[Attempt, ...]
    exit_code: int
    """This node's: node 0's for the whole job."""

    @classmethod
    def of_node(cls, outcome: Outcome, hostname: str, pid: int, node_rank: int = 0) -> JobOutcome:
        node = NodeRecord(node_rank, hostname, pid, outcome.exit_code)
        return cls((node,), outcome.attempts, outcome.exit_code)

    @property
    def ranks(self) -> tuple[RankResult, ...]:
        return self.attempts[-1].ranks

    def hostname(self, node_rank: int) -> str:
        return next((n.hostname for n in self.nodes if n.node_rank == node_rank), "?")

    @property
    def host(self) -> str:
        """The reporting node's host."""
        return self.nodes[0].hostname


def finished_line(job: JobOutcome) -> str:
    """How long the ranks ran, from the first start to the last end: ``4 ranks exited 0 in
    13.9 s``; across nodes, the longest node's, each timed by its own clock."""
    spans = []
    for node in job.nodes:
        ran = [r for r in job.ranks if r.pid is not None and r.node_rank == node.node_rank]
        if ran:
            spans.append(max(r.ended_at for r in ran) - min(r.started_at for r in ran))
    on = f" on {len(job.nodes)} nodes" if len(job.nodes) > 1 else ""
    return f"{len(job.ranks)} ranks{on} exited 0 in {max(spans, default=0.0):.1f} s"
