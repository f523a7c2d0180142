"""The gang: one loop spawns the ranks, watches them, and tears them down together."""

from __future__ import annotations

import errno
import functools
import os
import signal
import subprocess
import time

from rankrun.guardian import Guardian
from rankrun.libc import set_subreaper
from rankrun.outcome import Attempt, Outcome, RankResult
from rankrun.plan import Plan, RankSpec
from rankrun.printer import Printer
from rankrun.rank_io import RankIO, ensure_fd_capacity
from rankrun.relay import Relay
from rankrun.report import ending
from rankrun.watch import FORWARDED, TERMINATING, Event, Exited, Signalled, Watch

# Members of a group other than its leader are not our children until the leader dies, and
# without a subreaper never are; while only such members are left, look again this often.
_GROUP_RECHECK_S = 0.1
# After SIGKILL the kernel needs a moment; past it, give up waiting.
_KILL_WAIT_S = 2.0


def run(plan: Plan, printer: Printer) -> Outcome:
    """Run every attempt of ``plan`` and return what happened. Needs the main thread."""
    ensure_fd_capacity(plan.nproc_per_node)
    subreaper = set_subreaper(True)
    guardian = Guardian(plan.shutdown_timeout)
    try:
        with Watch() as watch:
            return _run_attempts(plan, printer, watch, guardian)
    finally:
        guardian.close()
        if subreaper:
            set_subreaper(False)


def _run_attempts(plan: Plan, printer: Printer, watch: Watch, guardian: Guardian) -> Outcome:
    attempts: list[Attempt] = []
    for index in range(plan.max_restarts + 1):
        if index:
            printer.event(f"restart {index} of {plan.max_restarts}")
        attempt = _AttemptRun(plan, index, printer, watch, guardian).run()
        attempts.append(attempt)
        if attempt.exit_code == 0 or attempt.interrupted_by is not None:
            break
    return Outcome(tuple(attempts))


class _Rank:
    """The loop's own, changing record of one rank."""

    __slots__ = ("spec", "pid", "started_at", "proc", "io", "exit", "terminated", "group_alive",
                 "error")  # fmt: skip

    def __init__(
        self,
        spec: RankSpec,
        pid: int,
        started_at: float,
        proc: subprocess.Popen[bytes] | None,
        io: RankIO,
    ) -> None:
        self.spec, self.pid, self.started_at, self.proc, self.io = spec, pid, started_at, proc, io
        self.exit: Exited | None = None
        self.terminated = False
        self.group_alive = proc is not None
        self.error: str | None = None

    @property
    def failed(self) -> bool:
        e = self.exit
        return e is not None and not self.terminated and (e.exit_code != 0 or e.signal is not None)


class _AttemptRun:
    def __init__(
        self, plan: Plan, index: int, printer: Printer, watch: Watch, guardian: Guardian
    ) -> None:
        self.plan, self.index = plan, index
        self.printer, self.watch, self.guardian = printer, watch, guardian
        self.ranks: list[_Rank] = []
        self.live: dict[int, _Rank] = {}
        """Ranks not yet seen to exit, by pid."""
        self.cause: _Rank | None = None
        self.interrupted_by: int | None = None
        self.deadline: float | None = None
        self.killed = False

    def run(self) -> Attempt:
        try:
            self._spawn_all()
            while not self._finished():
                self._handle(self.watch.wait(self._timeout()))
            for rank in self.ranks:
                self._drain(rank)
            return self._result()
        finally:
            for rank in self.ranks:
                for relay in rank.io.relays:
                    self._close_relay(relay)

    def _spawn_all(self) -> None:
        for spec in self.plan.ranks(self.index):
            rank = self._spawn(spec)
            self.ranks.append(rank)
            if rank.exit is None:
                self.live[rank.pid] = rank
            if rank.failed:
                self._fail(rank)
                return

    def _spawn(self, spec: RankSpec) -> _Rank:
        now = time.time()
        io = RankIO(spec, self.printer)
        try:
            io.open()
            proc = subprocess.Popen(
                spec.argv,
                env=spec.env,
                stdout=io.stdout,
                stderr=io.stderr,
                start_new_session=True,
            )
        except OSError as e:
            io.close()
            code = 127 if e.errno == errno.ENOENT else 126
            rank = _Rank(spec, 0, now, None, io)
            rank.error = f"could not start {spec.argv[0]}: {e.strerror}"
            rank.exit = Exited(0, code, None, now)
            return rank
        io.spawned()
        self.guardian.watch(proc.pid)
        for relay in io.relays:
            self.watch.add_reader(relay.fd, functools.partial(self._on_output, relay))
        return _Rank(spec, proc.pid, now, proc, io)

    def _on_output(self, relay: Relay) -> None:
        if not relay.read():
            self._close_relay(relay)

    def _drain(self, rank: _Rank) -> None:
        """Relay what an ended rank left in its pipes, and its unterminated last line."""
        for relay in rank.io.relays:
            if relay.fd < 0:
                continue
            if relay.drain():
                relay.flush()
            else:
                self._close_relay(relay)

    def _close_relay(self, relay: Relay) -> None:
        if relay.fd >= 0:
            self.watch.remove_reader(relay.fd)
        relay.close()

    def _handle(self, events: list[Event]) -> None:
        exited = []
        for e in events:
            if isinstance(e, Exited) and e.pid == self.guardian.pid:
                self.printer.event(
                    f"the guardian (pid {e.pid}) died: if rankrun is killed now, "
                    "its ranks may outlive it"
                )
            if isinstance(e, Exited) and e.pid in self.live:
                rank = self.live.pop(e.pid)
                rank.exit = e
                exited.append(rank)
        for rank in exited:
            self._drain(rank)
        first_failure = next((r for r in exited if r.failed), None)
        if first_failure is not None and self.deadline is None:
            self._fail(first_failure)
        elif self.deadline is not None:
            # What a dead leader leaves in its group may ignore the signal forwarded to it
            # (background jobs of a shell ignore SIGINT): ask it to stop the standard way.
            for rank in exited:
                self._signal_group(rank, signal.SIGTERM)
        for e in events:
            if isinstance(e, Signalled):
                self._on_signal(e.signum)
        if self.deadline is not None and time.monotonic() >= self.deadline:
            self._kill()

    def _fail(self, rank: _Rank) -> None:
        self.cause = rank
        e = rank.exit
        assert e is not None
        self.printer.event(f"rank {rank.spec.rank} {ending(e.exit_code, e.signal, rank.error)}")
        self._teardown(signal.SIGTERM)

    def _on_signal(self, signum: int) -> None:
        name = signal.Signals(signum).name
        if signum in FORWARDED:
            count = self._signal_groups(signum)
            self.printer.event(f"forwarded {name} to {count} rank group(s)")
        elif signum in TERMINATING and self.deadline is None:
            self.interrupted_by = signum
            self.printer.event(f"got {name}")
            self._teardown(signum)
        elif signum in TERMINATING and not self.killed:
            self.printer.event(f"got {name} again")
            self._kill()
        elif signum == signal.SIGTSTP:
            self._suspend()
        elif signum == signal.SIGCONT:
            self._signal_groups(signal.SIGCONT)

    def _suspend(self) -> None:
        """Ctrl-Z: stop every rank's group, then the launcher; the shell's fg sends SIGCONT.

        The ranks never see the terminal's SIGTSTP (each runs in a session of its own), and
        the kernel discards SIGTSTP sent to their orphaned groups, so they get SIGSTOP.
        """
        count = self._signal_groups(signal.SIGSTOP)
        self.printer.event(f"paused {count} rank group(s); fg resumes them")
        os.kill(os.getpid(), signal.SIGSTOP)

    def _teardown(self, signum: int) -> None:
        for rank in self.live.values():
            rank.terminated = True
        grace = self.plan.shutdown_timeout
        self.deadline = time.monotonic() + grace
        count = self._signal_groups(signum)
        if count:
            name = signal.Signals(signum).name
            self.printer.event(
                f"sent {name} to {count} rank group(s); SIGKILL in {grace:g} s (Ctrl-C to kill now)"
            )

    def _kill(self) -> None:
        count = self._signal_groups(signal.SIGKILL)
        if count and not self.killed:
            self.printer.event(f"sent SIGKILL to {count} rank group(s)")
        self.killed = True
        self.deadline = time.monotonic() + _KILL_WAIT_S

    def _signal_groups(self, signum: int) -> int:
        return sum(self._signal_group(rank, signum) for rank in self.ranks)

    def _signal_group(self, rank: _Rank, signum: int) -> bool:
        if not rank.group_alive:
            return False
        try:
            os.killpg(rank.pid, signum)
        except ProcessLookupError:
            self._group_gone(rank)
            return False
        return True

    def _group_gone(self, rank: _Rank) -> None:
        rank.group_alive = False
        self.guardian.forget(rank.pid)

    def _finished(self) -> bool:
        if self.live:
            return self.killed and self._past_deadline()
        for rank in self.ranks:
            if rank.group_alive and not _group_exists(rank.pid):
                self._group_gone(rank)
        leftovers = [str(r.spec.rank) for r in self.ranks if r.group_alive]
        if not leftovers:
            return True
        if self.deadline is None:
            self.printer.event(f"rank(s) {', '.join(leftovers)} left processes behind")
            self._teardown(signal.SIGTERM)
        return self.killed and self._past_deadline()

    def _past_deadline(self) -> bool:
        return self.deadline is not None and time.monotonic() >= self.deadline

    def _timeout(self) -> float | None:
        timeout = None
        if self.deadline is not None:
            timeout = max(0.0, self.deadline - time.monotonic())
        if not self.live:
            timeout = min(timeout if timeout is not None else _GROUP_RECHECK_S, _GROUP_RECHECK_S)
        return timeout

    def _result(self) -> Attempt:
        results = tuple(_result(r) for r in self.ranks)
        cause = None
        if self.cause is not None:
            cause = results[self.ranks.index(self.cause)]
        return Attempt(self.index, results, cause, self.interrupted_by)


def _result(rank: _Rank) -> RankResult:
    e = rank.exit or Exited(rank.pid, None, signal.SIGKILL, time.time())
    if rank.proc is not None:
        rank.proc.returncode = -e.signal if e.signal is not None else e.exit_code
    return RankResult(
        rank=rank.spec.rank,
        local_rank=rank.spec.local_rank,
        pid=rank.pid,
        started_at=rank.started_at,
        ended_at=e.at,
        exit_code=e.exit_code,
        signal=e.signal,
        terminated=rank.terminated,
        error=rank.error,
        stderr_tail=rank.io.stderr_tail(),
        error_file=rank.spec.error_file,
    )


def _group_exists(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True
