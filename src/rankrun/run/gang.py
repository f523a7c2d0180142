"""The gang: one attempt's decisions. Start every rank, watch them, end them together.

Every decision is made here, and the world is touched only through a ``Host``. The module
is long for one idea: the decisions of start, teardown, Ctrl-Z and the stall watchdog share
one loop's state, and splitting them would spread that state across files.
"""

from __future__ import annotations

import signal

from rankrun.base.values import NamedTuple
from rankrun.output.outcome import Attempt, Ending, Halt, RankResult, signal_name
from rankrun.output.printer import Printer
from rankrun.plan.plan import WORKER_SOCKET_VAR, Plan, RankSpec
from rankrun.run.rank import LauncherError, SpawnError
from rankrun.run.watch import (
    FORWARDED,
    TERMINATING,
    Asked,
    Event,
    Exited,
    Halted,
    Signalled,
    Verdict,
)

# Members of a group other than its leader are not our children until the leader dies, and
# without a subreaper never are; while only such members are left, look again this often.
_GROUP_RECHECK_S = 0.1
# After SIGKILL the kernel needs a moment; past it, give up waiting.
_KILL_WAIT_S = 2.0
# The same terminating signal again this soon is the same request: Slurm sends SIGTERM twice,
# milliseconds apart, at a time limit and on scancel, and the ranks must keep their grace.
_SAME_SIGNAL_S = 0.25
# --on-stall stop: the exit code timeout(1) gives a command that ran out of time.
STALL_EXIT_CODE = 124


class NoStacks(Exception):
    """No stack can be read at all (py-spy is missing); the message says why, with the fix."""


class Stacks(NamedTuple):
    verdict: tuple[str, ...]
    """The ranks grouped by where they are, the odd ones out first; who is behind on the
    collective sequence, where the flight recorder says."""
    lines: tuple[str, ...]
    """Every rank's full stack, each line labelled ``[rankN]: ``; empty when saved."""
    saved: str | None
    """The file that holds the full stacks, when they went to the log directory."""
    node: NodeStacks | None = None
    """What they were read from: each rank's digest and last collective, for node 0."""


TYPE_CHECKING = False
if TYPE_CHECKING:  # typing costs milliseconds of every launch; the protocol is for mypy
    from typing import Protocol

    from rankrun.inspect.node_stacks import NodeStacks

    class Host(Protocol):
        """What the gang needs of the machine; ``rankrun.run.host.Host`` is the real one."""

        def now(self) -> float: ...
        def wall_clock(self) -> float: ...
        def spawn(self, spec: RankSpec) -> int: ...
        def drain(self, pid: int) -> None: ...
        def release(self, pid: int) -> None: ...
        def result(self, pid: int, ending: Ending) -> RankResult: ...
        def signal_group(self, pgid: int, signum: int) -> bool: ...
        def group_exists(self, pgid: int) -> bool: ...
        def group_gone(self, pgid: int) -> None: ...
        def wait(self, timeout: float | None) -> list[Event]: ...
        def suspend_pending(self) -> bool: ...
        def pause(self) -> None: ...
        def stacks(self, ranks: list[tuple[int, int, str | None]], save_to: str | None) -> Stacks:
            """The stacks of ranks given as (rank, pid, worker server socket), the full ones
            written to ``save_to`` if given and it can be; raises NoStacks."""

        def stuck(self, pid: int) -> str | None:
            """Where a rank that outlived SIGKILL is stuck (its state and wait channel)."""

        @property
        def last_output(self) -> float: ...

    class Coordinator(Protocol):
        """The node agent, told of what ends an attempt here, to end it on every node."""

        def failed(self, result: RankResult) -> None: ...
        def interrupted(self, signum: int) -> None: ...
        def halted(self, halt: Halt) -> None: ...
        def answer(self, number: int, stacks: NodeStacks | None) -> None: ...


class _Member:
    """The gang's changing record of one rank."""

    __slots__ = ("spec", "pid", "ending", "group_alive")

    def __init__(self, spec: RankSpec, pid: int, ending: Ending | None) -> None:
        self.spec, self.pid, self.ending = spec, pid, ending
        """pid 0: the rank never started."""
        self.group_alive = pid != 0


class Gang:
    def __init__(
        self,
        plan: Plan,
        number: int,
        host: Host,
        printer: Printer,
        coordinator: Coordinator | None = None,
    ) -> None:
        self.plan, self.number, self.host, self.printer = plan, number, host, printer
        """``number``: the attempt's, 0 for the first, as TORCHELASTIC_RESTART_COUNT counts."""
        self.coordinator = coordinator
        self.halted: Halt | None = None
        self.stall_seen: float | None = None
        self.stack_reads = 0
        """The output time of the quiet period last reported as a stall."""
        self.last_signal = (0, 0.0)
        """The last terminating signal and when it came, to tell a repeat from a second one."""
        self.members: list[_Member] = []
        self.live: dict[int, _Member] = {}
        """Members not yet seen to exit, by pid."""
        self.cause: _Member | None = None
        self.interrupted_by: int | None = None
        self.job_signal: int | None = None
        """The signal that ended the job on another node, until this node gets its own copy."""
        self.launcher_error: str | None = None
        self.deadline: float | None = None
        """When the teardown's grace ends (or, once killed, when to stop waiting)."""
        self.killed = False

    def supervise(self) -> Attempt:
        try:
            self._start_all()
            while True:
                self._check_groups()
                if self._done():
                    return self._attempt()
                self._handle(self.host.wait(self._timeout()))
        finally:
            for member in self.members:
                if member.pid:
                    self.host.release(member.pid)

    def _start_all(self) -> None:
        for spec in self.plan.ranks(self.number):
            try:
                member = _Member(spec, self.host.spawn(spec), None)
            except SpawnError as e:
                self.members.append(_Member(spec, 0, e.ending))
                self._fail(self.members[-1])
                return
            except LauncherError as e:
                self.launcher_error = str(e)
                self.printer.event(self.launcher_error)
                self._teardown(signal.SIGTERM)
                return
            self.members.append(member)
            self.live[member.pid] = member

    def _handle(self, events: list[Event]) -> None:
        exited = [self._exited(e) for e in events if isinstance(e, Exited) and e.pid in self.live]
        failure = next((m for m in exited if m.ending and m.ending.failed), None)
        if failure is not None and self.deadline is None:
            self._fail(failure)
        elif self.deadline is not None:
            # What a dead leader leaves in its group may ignore the signal forwarded to it
            # (background jobs of a shell ignore SIGINT): ask it to stop the standard way.
            for member in exited:
                self._signal_group(member, signal.SIGTERM)
        for e in events:
            if isinstance(e, Signalled):
                self._on_signal(e.signum)
        for e in events:
            if isinstance(e, Asked):
                self._answer(e)
            elif isinstance(e, Verdict):
                self._heed(e)
        for e in events:
            if isinstance(e, Halted) and self.deadline is None:
                self.halted = Halt(e.reason, e.exit_code)
                self.job_signal = e.signum
                self.printer.event(e.reason)
                self._teardown(signal.SIGTERM)
        if self._past_deadline() and not self.killed:
            self._say_where_they_are()
            self._kill()
        self._check_stall()

    def _exited(self, e: Exited) -> _Member:
        member = self.live.pop(e.pid)
        terminated = self.deadline is not None
        member.ending = Ending(e.exit_code, e.signal, e.at, terminated=terminated, oom=e.oom)
        self.host.drain(member.pid)
        return member

    def _fail(self, member: _Member) -> None:
        self.cause = member
        assert member.ending is not None
        self.printer.event(f"rank {member.spec.rank} {member.ending.words()}")
        self._teardown(signal.SIGTERM)
        if self.coordinator is not None:
            self.coordinator.failed(self._result(member))

    def _on_signal(self, signum: int) -> None:
        name = signal_name(signum)
        if signum in TERMINATING:
            last, self.last_signal = self.last_signal, (signum, self.host.now())
            if last[0] == signum and self.host.now() - last[1] < _SAME_SIGNAL_S:
                return
        if signum in FORWARDED:
            count = self._signal_groups(signum)
            self.printer.event(f"forwarded {name} to {count} rank group(s)")
        elif signum in TERMINATING and self.deadline is None:
            self.interrupted_by = signum
            self.printer.event(f"got {name}")
            self._teardown(signum)
            if self.coordinator is not None:
                self.coordinator.interrupted(signum)
        elif signum == self.job_signal and not self.killed:
            self.job_signal = None  # Slurm and Kubernetes signal every node: the next one kills
            self.interrupted_by = signum
            self.printer.event(f"got {name} here too; the teardown goes on")
        elif signum in TERMINATING and not self.killed:
            again = " again" if self.interrupted_by is not None else " during the teardown"
            self.interrupted_by = self.interrupted_by or signum
            self.printer.event(f"got {name}{again}")
            self._kill()
        elif signum == signal.SIGTSTP:
            self._pause()
        elif signum == signal.SIGCONT:
            self._signal_groups(signal.SIGCONT)

    def _pause(self) -> None:
        """Ctrl-Z: stop every rank's group, then the launcher; the shell's fg sends SIGCONT.

        The ranks never see the terminal's SIGTSTP (each runs in a session of its own), and
        the kernel discards SIGTSTP sent to their orphaned groups, so they get SIGSTOP. A
        SIGCONT that came after the SIGTSTP, however close, cancels it.
        """
        if not self.host.suspend_pending():
            return
        count = self._signal_groups(signal.SIGSTOP)
        self.printer.event(f"paused {count} rank group(s); fg resumes them")
        self.host.pause()

    def _teardown(self, signum: int) -> None:
        grace = self.plan.shutdown_timeout
        self.deadline = self.host.now() + grace
        count = self._signal_groups(signum)
        if count:
            twice = " twice" if self.job_signal == signal.SIGINT else ""
            self.printer.event(
                f"sent {signal_name(signum)} to {count} rank group(s); "
                f"SIGKILL in {grace:g} s (Ctrl-C{twice} to kill now)"
            )

    def _check_stall(self) -> None:
        """--stall-timeout: no output for that long is reported, once per quiet period."""
        limit, quiet_since = self.plan.stall_timeout, self.host.last_output
        if not limit or self.deadline is not None or self.stall_seen == quiet_since:
            return
        if self.host.now() - quiet_since < limit:
            return
        self.stall_seen = quiet_since
        ranks = self._live_ranks()
        self.printer.event(f"stalled: no rank wrote a line for {limit:g} s ({len(ranks)} ranks)")
        self._show_stacks(ranks)
        if self.plan.on_stall == "stop":
            self.halted = Halt(f"stalled: no rank wrote a line for {limit:g} s", STALL_EXIT_CODE)
            self._teardown(signal.SIGTERM)
            if self.coordinator is not None:
                self.coordinator.halted(self.halted)

    def _answer(self, asked: Asked) -> None:
        """Node 0 asks for this node's stacks (a stall of the whole job): here, they go to
        the log or the console as at a stall of one node; to node 0, digested."""
        ranks = self._live_ranks() if self.deadline is None else []
        stacks = None
        if ranks:
            self.printer.event(f"reading every rank's stack for node 0's verdict ({asked.reason})")
            stacks = self._show_stacks(ranks, verdict=False)
        if self.coordinator is not None:
            self.coordinator.answer(asked.number, stacks.node if stacks is not None else None)

    def _heed(self, verdict: Verdict) -> None:
        """Node 0's verdict on the whole job; under --on-stall stop, the job ends."""
        for line in verdict.lines:
            self.printer.event(line)
        if verdict.halt is not None and self.deadline is None:
            self.halted = verdict.halt
            self._teardown(signal.SIGTERM)
            if self.coordinator is not None:
                self.coordinator.halted(self.halted)

    def _say_where_they_are(self) -> None:
        """Before SIGKILL: where each rank that ignored the teardown was."""
        ranks = self._live_ranks()
        if not ranks:
            return
        names = ", ".join(str(rank) for rank, _, _ in ranks)
        grace = self.plan.shutdown_timeout
        self.printer.event(f"rank(s) {names} did not stop within {grace:g} s; they were at:")
        self._show_stacks(ranks)

    def _show_stacks(
        self, ranks: list[tuple[int, int, str | None]], verdict: bool = True
    ) -> Stacks | None:
        """Under the event that asked for them: the ranks grouped by where they are (unless
        node 0 will say it for the job), then their full stacks, in the log directory when
        there is one, or else labelled by rank alone, as ``rankrun stacks`` prints them."""
        self.stack_reads += 1
        layout, save_to = self.plan.layout, None
        if layout is not None:
            save_to = layout.stacks_file(self.number, self.stack_reads)
        try:
            stacks = self.host.stacks(ranks, save_to)
        except NoStacks as e:
            self.printer.event(f"no stacks: {e}")
            return None
        for line in stacks.verdict if verdict else ():
            self.printer.event(f"  {line}")
        if stacks.saved is not None:
            self.printer.event(f"every rank's stack is in {stacks.saved}")
        for line in stacks.lines:
            self.printer.labelled(line)
        return stacks

    def _live_ranks(self) -> list[tuple[int, int, str | None]]:
        return [(m.spec.rank, m.pid, m.spec.env.get(WORKER_SOCKET_VAR))
                for m in self.members if m.pid and m.ending is None]  # fmt: skip

    def _kill(self) -> None:
        count = self._signal_groups(signal.SIGKILL)
        if count and not self.killed:
            self.printer.event(f"sent SIGKILL to {count} rank group(s)")
        self.killed = True
        self.deadline = self.host.now() + _KILL_WAIT_S

    def _signal_groups(self, signum: int) -> int:
        return sum(self._signal_group(member, signum) for member in self.members)

    def _signal_group(self, member: _Member, signum: int) -> bool:
        if not member.group_alive:
            return False
        if self.host.signal_group(member.pid, signum):
            return True
        self._group_gone(member)
        return False

    def _group_gone(self, member: _Member) -> None:
        member.group_alive = False
        self.host.group_gone(member.pid)

    def _check_groups(self) -> None:
        """Once every rank has exited, see which groups still hold processes, and end them."""
        if self.live:
            return
        for member in self.members:
            if member.group_alive and not self.host.group_exists(member.pid):
                self._group_gone(member)
        leftovers = [str(m.spec.rank) for m in self.members if m.group_alive]
        if leftovers and self.deadline is None:
            self.printer.event(f"rank(s) {', '.join(leftovers)} left processes behind")
            self._teardown(signal.SIGTERM)

    def _done(self) -> bool:
        waiting = self.live or any(m.group_alive for m in self.members)
        return not waiting or (self.killed and self._past_deadline())

    def _past_deadline(self) -> bool:
        return self.deadline is not None and self.host.now() >= self.deadline

    def _timeout(self) -> float | None:
        timeout = None
        if self.deadline is not None:
            timeout = max(0.0, self.deadline - self.host.now())
        elif self.plan.stall_timeout:
            due = self.host.last_output + self.plan.stall_timeout - self.host.now()
            timeout = max(0.0, due) if self.stall_seen != self.host.last_output else None
        if not self.live:
            timeout = min(timeout if timeout is not None else _GROUP_RECHECK_S, _GROUP_RECHECK_S)
        return timeout

    def _attempt(self) -> Attempt:
        for member in self.members:
            if member.pid:
                self.host.drain(member.pid)
            if member.pid and member.ending is None:
                self._give_up(member)
        results = tuple(self._result(m) for m in self.members)
        cause = results[self.members.index(self.cause)] if self.cause is not None else None
        return Attempt(
            self.number, results, cause, self.interrupted_by, self.launcher_error, self.halted
        )

    def _give_up(self, member: _Member) -> None:
        """Still there after SIGKILL and the wait that follows it: stuck in the kernel (an
        uninterruptible wait, a frozen cgroup), where waiting longer may never end."""
        stuck = self.host.stuck(member.pid)
        member.ending = Ending(None, None, self.host.wall_clock(), terminated=True, stuck=stuck)
        if stuck is not None:
            rank, pid = member.spec.rank, member.pid
            self.printer.event(f"rank {rank} (pid {pid}) {member.ending.words()}")

    def _result(self, member: _Member) -> RankResult:
        ending = member.ending
        if ending is None:  # its group outlived SIGKILL; the attempt's end names the rank
            ending = Ending(None, None, self.host.wall_clock(), terminated=True)
        if not member.pid:
            spec = member.spec
            return RankResult(spec.rank, spec.local_rank, None, ending.at, ending,
                              node_rank=spec.node_rank)  # fmt: skip
        return self.host.result(member.pid, ending)
