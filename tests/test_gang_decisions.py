"""The gang's decisions at their seam: scripted histories on a fake Host, a fake clock, no
processes.

The same gang end to end, with real launchers, ranks and signals, is
tests/test_gang_end_to_end.py.
"""

from __future__ import annotations

import signal
from collections.abc import Sequence
from pathlib import Path

import pytest

from rankrun.job.job import Job
from rankrun.output.outcome import Ending, RankResult
from rankrun.plan.options import Options
from rankrun.plan.plan import RankSpec, build_plan
from rankrun.run.gang import Gang, NoStacks, Stacks
from rankrun.run.rank import SpawnError
from rankrun.run.watch import Event, Exited, Signalled

TERM, KILL, INT = signal.SIGTERM, signal.SIGKILL, signal.SIGINT


class Events:
    """Printer stand-in: the gang's own messages, in order."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.labelled_lines: list[str] = []

    def event(self, message: str) -> None:
        self.lines.append(message)

    def labelled(self, line: str) -> None:
        self.lines.append(line)
        self.labelled_lines.append(line)


class ScriptedHost:
    """A host whose waits return scripted batches of events and move a fake clock.

    ``script`` maps each wait to (seconds it takes, the events it returns). A group lives
    until its rank's exit is scripted, unless ``lingering`` names it.
    """

    def __init__(self, script: Sequence[tuple[float, list[Event]]], spawn_fails: int = -1):
        self.script = list(script)
        self.clock = 1000.0
        self.spawned: list[int] = []
        self.signals: list[tuple[int, int]] = []
        self.exited: set[int] = set()
        self.lingering: set[int] = set()
        self.paused = 0
        self.stop_cancelled = False
        self.last_output = self.clock
        self.stack_requests: list[list[tuple[int, int]]] = []
        self.sockets: list[str | None] = []
        self.saved_to: list[str | None] = []
        self.no_stacks = ""
        self.stuck_in: dict[int, str] = {}
        """Where each rank that outlives SIGKILL is stuck, by pid."""
        self._spawn_fails = spawn_fails

    def now(self) -> float:
        return self.clock

    def wall_clock(self) -> float:
        return self.clock

    def spawn(self, spec: RankSpec) -> int:
        if spec.local_rank == self._spawn_fails:
            error = "could not start ./x: Permission denied"
            raise SpawnError(Ending(126, None, self.clock, error=error))
        pid = 100 + spec.local_rank
        self.spawned.append(pid)
        return pid

    def drain(self, pid: int) -> None:
        pass

    def release(self, pid: int) -> None:
        pass

    def result(self, pid: int, ending: Ending) -> RankResult:
        return RankResult(pid - 100, pid - 100, pid, 0.0, ending)

    def signal_group(self, pgid: int, signum: int) -> bool:
        if pgid in self.exited and pgid not in self.lingering:
            return False
        if signum:
            self.signals.append((pgid, signum))
        return True

    def group_exists(self, pgid: int) -> bool:
        return self.signal_group(pgid, 0)

    def group_gone(self, pgid: int) -> None:
        pass

    def wait(self, timeout: float | None) -> list[Event]:
        if not self.script:
            assert timeout is not None, "the gang would wait for ever on a finished script"
            self.clock += timeout
            return []
        seconds, events = self.script.pop(0)
        assert timeout is None or seconds <= timeout, f"scripted {seconds} s past {timeout} s"
        self.clock += seconds
        self.exited.update(e.pid for e in events if isinstance(e, Exited))
        return events

    def suspend_pending(self) -> bool:
        return not self.stop_cancelled

    def pause(self) -> None:
        self.paused += 1

    def stacks(self, ranks: list[tuple[int, int, str | None]], save_to: str | None) -> Stacks:
        self.stack_requests.append([(rank, pid) for rank, pid, _ in ranks])
        self.sockets.extend(socket for _, _, socket in ranks)
        self.saved_to.append(save_to)
        if self.no_stacks:
            raise NoStacks(self.no_stacks)
        verdict = (f"ranks {ranks[0][0]}-{ranks[-1][0]}: work (train.py:1)",)
        if save_to is not None:
            return Stacks(verdict, (), save_to)
        return Stacks(verdict, tuple(f"[rank{rank}]: at work" for rank, _, _ in ranks), None)

    def stuck(self, pid: int) -> str | None:
        return self.stuck_in.get(pid)


def exit_(pid: int, code: int | None = 0, sig: int | None = None) -> Exited:
    return Exited(pid, code, sig, 0.0)


def plan(ranks: int, **options: object) -> object:
    return build_plan("/bin/true", (), Options(nproc_per_node=ranks, master_port=0, **options))  # type: ignore[arg-type]


def supervise(host: ScriptedHost, ranks: int = 3, **options: object) -> tuple[object, Events]:
    events = Events()
    attempt = Gang(plan(ranks, **options), 0, host, events).supervise()  # type: ignore[arg-type]
    return attempt, events


def test_first_failure_terminates_the_others_and_is_the_cause() -> None:
    host = ScriptedHost([(1.0, [exit_(101, 3)]), (0.1, [exit_(100, None, TERM), exit_(102, 0)])])
    attempt, events = supervise(host)
    assert attempt.cause.rank == 1 and attempt.exit_code == 3
    assert host.signals == [(100, TERM), (102, TERM)]
    assert [r.terminated for r in attempt.ranks] == [True, False, True]
    assert events.lines[0] == "rank 1 exited with code 3"


def test_a_rank_failing_during_the_teardown_is_not_the_cause() -> None:
    host = ScriptedHost([(1.0, [exit_(102, None, signal.SIGSEGV)]), (0.1, [exit_(100, 7)]),
                         (0.1, [exit_(101, None, TERM)])])  # fmt: skip
    attempt, _ = supervise(host)
    assert attempt.cause.rank == 2
    assert attempt.exit_code == 128 + signal.SIGSEGV


def test_grace_ends_in_sigkill_and_a_rank_that_never_ends_is_said_so() -> None:
    host = ScriptedHost([(0.5, [exit_(100, 1)])])
    attempt, events = supervise(host, ranks=2, shutdown_timeout=5.0)
    assert host.signals == [(101, TERM), (101, KILL)]
    assert host.clock >= 1000.5 + 5.0
    assert attempt.ranks[1].ending.words() == "did not end, even after SIGKILL"
    assert "sent SIGKILL to 1 rank group(s)" in events.lines


def test_a_rank_stuck_in_the_kernel_is_named_with_its_wait_channel_and_not_waited_for() -> None:
    host = ScriptedHost([(0.5, [exit_(100, 1)])])
    host.stuck_in[101] = "state D, in nfs_wait_on_request"
    attempt, events = supervise(host, ranks=2, shutdown_timeout=5.0)
    assert host.signals == [(101, TERM), (101, KILL)], "SIGKILL is sent once, not for ever"
    assert host.clock < 1000.5 + 5.0 + 3.0, "given up a moment after SIGKILL"
    words = "is stuck in the kernel (state D, in nfs_wait_on_request) and could not be ended"
    assert attempt.ranks[1].ending.words() == words
    assert events.lines[-1] == f"rank 1 (pid 101) {words}"


def test_second_ctrl_c_during_the_teardown_kills_at_once() -> None:
    host = ScriptedHost([(0.5, [Signalled(INT)]), (0.3, [Signalled(INT)]),
                         (0.01, [exit_(100, None, KILL), exit_(101, None, KILL)])])  # fmt: skip
    attempt, events = supervise(host, ranks=2)
    assert host.signals == [(100, INT), (101, INT), (100, KILL), (101, KILL)]
    assert host.clock < 1001, "no grace period was waited"
    assert attempt.exit_code == 128 + INT and attempt.cause is None
    assert "got SIGINT again" in events.lines


def test_a_rank_that_cannot_start_ends_the_ones_that_did() -> None:
    host = ScriptedHost([(0.1, [exit_(100, None, TERM)])], spawn_fails=1)
    attempt, _ = supervise(host, ranks=3)
    assert host.spawned == [100], "nothing is started after the failure"
    assert host.signals == [(100, TERM)]
    assert attempt.cause.rank == 1 and attempt.cause.pid is None
    assert attempt.exit_code == 126


def test_sigusr1_is_forwarded_and_ends_nothing() -> None:
    host = ScriptedHost([(1.0, [Signalled(signal.SIGUSR1)]), (1.0, [exit_(100), exit_(101)])])
    attempt, _ = supervise(host, ranks=2)
    assert host.signals == [(100, signal.SIGUSR1), (101, signal.SIGUSR1)]
    assert attempt.exit_code == 0


def test_ctrl_z_stops_the_groups_then_the_launcher_and_fg_resumes_them() -> None:
    host = ScriptedHost([(0.1, [Signalled(signal.SIGTSTP)]), (5.0, [Signalled(signal.SIGCONT)]),
                         (0.1, [exit_(100)])])  # fmt: skip
    supervise(host, ranks=1)
    assert host.signals == [(100, signal.SIGSTOP), (100, signal.SIGCONT)]
    assert host.paused == 1


def test_a_ctrl_z_that_a_later_fg_cancelled_stops_nothing() -> None:
    # The kernel drops a pending SIGTSTP when a SIGCONT comes, whatever order handlers saw.
    host = ScriptedHost([(0.1, [Signalled(signal.SIGCONT), Signalled(signal.SIGTSTP)]),
                         (0.1, [exit_(100)])])  # fmt: skip
    host.stop_cancelled = True
    supervise(host, ranks=1)
    assert host.signals == [(100, signal.SIGCONT)]
    assert host.paused == 0


def test_a_helper_left_by_a_rank_that_exited_0_is_ended() -> None:
    host = ScriptedHost([(0.1, [exit_(100)])])
    host.lingering.add(100)
    attempt, events = supervise(host, ranks=1, shutdown_timeout=1.0)
    assert "rank(s) 0 left processes behind" in events.lines
    assert (100, TERM) in host.signals and attempt.exit_code == 0


@pytest.mark.parametrize("restarts, expected", [(0, 1), (2, 3)])
def test_restarts_run_the_gang_again_until_they_run_out(restarts: int, expected: int) -> None:
    batches = [(0.1, [exit_(100, 4)])] * expected
    host = ScriptedHost(batches)
    job = Job(plan(1, max_restarts=restarts))
    outcome = job.run(host, Events())  # type: ignore[arg-type]
    assert [a.number for a in outcome.attempts] == list(range(expected))
    assert outcome.exit_code == 4


def test_a_stall_is_reported_once_per_quiet_period_with_every_stack() -> None:
    host = ScriptedHost([(1.0, [])] * 30 + [(0.1, [exit_(100), exit_(101)])])
    attempt, events = supervise(host, ranks=2, stall_timeout=5.0)
    assert events.lines.count("stalled: no rank wrote a line for 5 s (2 ranks)") == 1
    assert host.stack_requests == [[(0, 100), (1, 101)]]
    # The verdict first, under the event; then each rank's stack, labelled by rank alone, as
    # rankrun stacks prints them, not "rankrun: [rank1]: ...".
    verdict = events.lines.index("  ranks 0-1: work (train.py:1)")
    assert verdict == events.lines.index("stalled: no rank wrote a line for 5 s (2 ranks)") + 1
    assert events.labelled_lines == ["[rank0]: at work", "[rank1]: at work"]
    assert attempt.exit_code == 0, "dump: the job goes on"
    # Each rank is asked at a worker server socket of its own, named for its attempt.
    assert [str(s).rsplit("/", 1)[-1] for s in host.sockets] == ["w0-0.sock", "w0-1.sock"]


def test_with_a_log_directory_the_full_stacks_go_there_and_the_verdict_says_where(
    tmp_path: Path,
) -> None:
    host = ScriptedHost([(1.0, [])] * 6 + [(0.1, [exit_(100), exit_(101)])])
    _, events = supervise(host, ranks=2, stall_timeout=5.0, log_dir=str(tmp_path))
    saved = host.saved_to[0]
    assert saved is not None and saved.endswith("/attempt_0/stacks_1.txt")
    assert f"every rank's stack is in {saved}" in events.lines
    assert "  ranks 0-1: work (train.py:1)" in events.lines
    assert events.labelled_lines == []


def test_a_stall_without_py_spy_is_one_event_that_says_why() -> None:
    host = ScriptedHost([(1.0, [])] * 6 + [(0.1, [exit_(100)])])
    host.no_stacks = "py-spy is needed to read stacks and is not installed"
    _, events = supervise(host, ranks=1, stall_timeout=5.0)
    assert "no stacks: py-spy is needed to read stacks and is not installed" in events.lines
    assert events.labelled_lines == []


def test_on_stall_stop_ends_the_job_with_124() -> None:
    host = ScriptedHost([(1.0, [])] * 6 + [(0.1, [exit_(100, None, TERM)])])
    attempt, _ = supervise(host, ranks=1, stall_timeout=5.0, on_stall="stop")
    assert (100, TERM) in host.signals
    assert attempt.exit_code == 124 and attempt.halted is not None
    assert attempt.ranks[0].terminated


def test_a_rank_that_outlives_the_grace_has_its_stack_shown_before_sigkill() -> None:
    host = ScriptedHost([(0.5, [exit_(100, 1)])])
    _, events = supervise(host, ranks=2, shutdown_timeout=3.0)
    assert "rank(s) 1 did not stop within 3 s; they were at:" in events.lines
    assert host.stack_requests == [[(1, 101)]]
    assert events.labelled_lines == ["[rank1]: at work"]
    assert events.lines.index("  ranks 1-1: work (train.py:1)") < events.lines.index(
        "[rank1]: at work"
    )
    assert events.lines.index("[rank1]: at work") < events.lines.index(
        "sent SIGKILL to 1 rank group(s)"
    )


def test_the_same_signal_again_within_moments_is_one_request_not_two() -> None:
    # Slurm sends SIGTERM twice, milliseconds apart: the ranks keep their grace period.
    host = ScriptedHost([(0.5, [Signalled(TERM)]), (0.005, [Signalled(TERM)]),
                         (2.0, [exit_(100, None, TERM)])])  # fmt: skip
    attempt, events = supervise(host, ranks=1)
    assert host.signals == [(100, TERM)]
    assert attempt.exit_code == 128 + TERM
    assert "got SIGTERM again" not in events.lines
