"""The loop's hands on this machine: start ranks, signal their groups, wait for events.

``Gang`` makes every decision and touches the world only through a ``Host``, so tests can
give it a scripted one and replay histories in milliseconds.
"""

from __future__ import annotations

import functools
import os
import signal
import time
from collections.abc import Callable
from types import TracebackType

from rankrun.inspect.cgroup import memory_cgroup
from rankrun.inspect.live import LiveRun
from rankrun.output.outcome import Ending, RankResult
from rankrun.output.printer import Printer
from rankrun.output.relay import Relay
from rankrun.plan.plan import RankSpec
from rankrun.run.guardian import Guardian
from rankrun.run.libc import load_prctl, set_subreaper
from rankrun.run.limits import ensure_fd_capacity
from rankrun.run.rank import Rank, pipe_bytes
from rankrun.run.reaper import Reaper
from rankrun.run.watch import Event, Exited, Watch

TYPE_CHECKING = False
if TYPE_CHECKING:
    from rankrun.run.gang import Stacks


class Host:
    """Owns, while entered, the signal handlers, the subreaper and the guardian."""

    def __init__(self, printer: Printer, grace: float, nproc: int, token: str,
                 guardian: Guardian | None = None) -> None:  # fmt: skip
        """``guardian``: one forked already, which this host owns from its entry."""
        self._printer, self._grace, self._nproc, self._token = printer, grace, nproc, token
        self._forked = guardian
        self._watch = Watch()
        self._guardian: Guardian | None = None
        self._subreaper = False
        self._ranks: dict[int, Rank] = {}
        self._news: list[Event] = []
        self._live = LiveRun(printer.event)
        self._killed: set[int] = set()
        """The groups rankrun sent SIGKILL."""
        self._stuck: set[int] = set()
        """Ranks that outlived SIGKILL: not ours to end again, nor to name as escaped."""
        self.last_output = time.monotonic()
        """When a rank last wrote something that passes through rankrun."""
        self._sockets: list[str] = []
        """The worker server sockets rankrun chose for the ranks started, to remove at the end."""
        self._socket_dirs: dict[str, bool] = {}
        """Their directories, and whether this host made each."""

    def __enter__(self) -> Host:
        ensure_fd_capacity(self._nproc)
        self._watch.__enter__()
        try:
            self._reaper = Reaper()
            # The ranks start in the launcher's memory cgroup: its OOM kills so far.
            self._memory = memory_cgroup()
            self._oom_kills = self._memory.oom_kills() if self._memory is not None else None
            # Forked first, so that it is adopted by init and not by the launcher as subreaper.
            self._guardian = self._forked or Guardian(self._grace, self._token)
            load_prctl()  # while the guardian's first fork exits
            self._watch.hold_stops()
            self._guardian.adopted()
            self._watch.add_reader(self._guardian.lifeline, self._guardian_died)
            self._subreaper = set_subreaper(True)
        except BaseException as e:
            self.__exit__(type(e), e, e.__traceback__)
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._live.close()
        self._remove_sockets()
        try:
            if self._guardian is not None:
                self._watch.remove_reader(self._guardian.lifeline)
                self._guardian.close()
        finally:
            if self._subreaper:
                set_subreaper(False)
            self._watch.__exit__(exc_type, exc, tb)

    def now(self) -> float:
        """The loop's clock, for deadlines."""
        return time.monotonic()

    def wall_clock(self) -> float:
        """Unix time, for the times a report shows."""
        return time.time()

    def spawn(self, spec: RankSpec) -> int:
        """Start a rank and return its pid; raises SpawnError if its program can't run."""
        if spec.worker_socket is not None:
            self._socket_dir(spec.worker_socket)
        rank = Rank(spec, self._printer, pipe_bytes(self._nproc))
        with self._watch.job.released():
            if spec.cpus is None:
                rank.start()
            else:
                _bound(spec.cpus, rank.start)
        assert self._guardian is not None
        self._guardian.guard(rank.pid)
        for relay in rank.relays:
            self._watch.add_reader(relay.fd, functools.partial(self._on_output, relay, rank.pid))
        self._ranks[rank.pid] = rank
        self._live.started(spec, rank.pid)
        return rank.pid

    def _socket_dir(self, socket: str) -> None:
        """The directory of a rank's worker server socket, made private before the rank
        starts: torch's server can't bind in a missing one, and the rank would fail."""
        self._sockets.append(socket)
        path = os.path.dirname(socket)
        if path not in self._socket_dirs:
            try:
                os.mkdir(path, 0o700)
                self._socket_dirs[path] = True
            except OSError:
                self._socket_dirs[path] = False  # launch() made it, for error files too

    def _remove_sockets(self) -> None:
        """torch's server leaves its socket behind, even when it shuts down cleanly."""
        for socket in self._sockets:
            try:
                os.unlink(socket)
            except OSError:
                pass
        for path, made in self._socket_dirs.items():
            if made:
                try:
                    os.rmdir(path)
                except OSError:
                    pass

    def _on_output(self, relay: Relay, pid: int) -> None:
        self.last_output = time.monotonic()
        if relay.read():
            self._live.output(pid)
        else:
            self._end_relay(relay)

    def _end_relay(self, relay: Relay) -> None:
        if relay.open:
            self._watch.remove_reader(relay.fd)
            relay.close()

    def drain(self, pid: int) -> None:
        """Relay what an ended rank left in its pipes."""
        for relay in self._ranks[pid].drain():
            self._end_relay(relay)

    def result(self, pid: int, ending: Ending) -> RankResult:
        return self._ranks[pid].result(ending)

    def release(self, pid: int) -> None:
        """Stop relaying a rank's output and close its pipes."""
        rank = self._ranks.pop(pid)
        for relay in rank.relays:
            self._end_relay(relay)
        rank.close()

    def signal_group(self, pgid: int, signum: int) -> bool:
        """Signal a rank's process group; False if the group is gone."""
        try:
            os.killpg(pgid, signum)
        except ProcessLookupError:
            return False
        if signum == signal.SIGKILL:
            self._killed.add(pgid)
        return True

    def group_exists(self, pgid: int) -> bool:
        return self.signal_group(pgid, 0)

    def group_gone(self, pgid: int) -> None:
        assert self._guardian is not None
        self._guardian.release(pgid)

    def add_source(self, fd: int, take: Callable[[], list[Event]]) -> None:
        """Events from outside this machine (the node agent's): ``fd`` is readable when
        ``take()`` has some. The source stays until ``remove_source``."""
        self._watch.add_reader(fd, lambda: self._news.extend(take()))

    def remove_source(self, fd: int) -> None:
        self._watch.remove_reader(fd)

    def wait(self, timeout: float | None) -> list[Event]:
        """Block until something happens or ``timeout`` passes; exits come first."""
        assert self._guardian is not None
        self._guardian.flush()
        signals = self._watch.wait(self._live.tick(timeout))
        news, self._news = self._news, []
        if not signals or signals[0].signum != signal.SIGCHLD:
            return [*signals, *news]
        exits: list[Event] = list(self._explain(self._reaper.reap()))
        return exits + signals[1:] + news

    def _explain(self, exits: list[Exited]) -> list[Exited]:
        """Say, of each rank dead of a SIGKILL rankrun did not send, whether the kernel's OOM
        killer sent it."""
        killed = [e for e in exits if e.signal == signal.SIGKILL and e.pid in self._ranks]
        killed = [e for e in killed if e.pid not in self._killed]
        if not killed:
            return exits
        from rankrun.inspect.oom import Killed, explain

        ago = time.time() - time.monotonic()
        ranks = [Killed(e.pid, self._ranks[e.pid].started_at - ago, e.peak_rss, e.cgroup)
                 for e in killed]  # fmt: skip
        verdicts, self._oom_kills = explain(ranks, self._memory, self._oom_kills)
        return [e._replace(oom=verdicts[e.pid]) if e.pid in verdicts else e for e in exits]

    def _guardian_died(self) -> None:
        assert self._guardian is not None
        self._watch.remove_reader(self._guardian.lifeline)
        self._printer.event(
            f"the guardian (pid {self._guardian.pid}) died: if rankrun is killed now, "
            "its ranks may outlive it"
        )

    def end_escaped(self) -> list[str]:
        """End what left its rank's group (a ``setsid`` daemon) and was adopted; name it."""
        adopted = set(self._reaper.adopted()) - self._stuck  # a stuck rank is the kernel's
        if not adopted:
            return []  # the common case, without importing what ends them
        from rankrun.run.escapees import end_escaped

        return end_escaped(adopted, self._reaper, self._watch, self._grace)

    def stuck(self, pid: int) -> str | None:
        """Where a rank that outlived SIGKILL is: ``state D, in nfs_wait_on_request``."""
        from rankrun.inspect.procfs import kernel_wait

        where = kernel_wait(pid)
        if where is not None:
            self._stuck.add(pid)
        return where

    def stacks(self, ranks: list[tuple[int, int, str | None]], save_to: str | None) -> Stacks:
        """The ranks' stacks, given as (rank, pid, worker server socket), grouped; the full
        ones written to ``save_to`` when given and writable. Raises NoStacks."""
        from rankrun.inspect.node_stacks import Target, read_node, verdict
        from rankrun.inspect.stacks import StacksError
        from rankrun.run.gang import NoStacks, Stacks

        try:
            with self._watch.job.released():
                node = read_node([Target(*r) for r in ranks], timeout=10.0)
        except StacksError as e:
            raise NoStacks(str(e)) from None
        saved = save_to if save_to is not None and _saved(save_to, node.text) else None
        lines = () if saved is not None else tuple(node.text.splitlines())
        return Stacks(tuple(verdict(node)), lines, saved, node)

    def suspend_pending(self) -> bool:
        """Whether a Ctrl-Z is still to be obeyed: no SIGCONT has come after it."""
        return self._watch.suspend_pending()

    def pause(self) -> None:
        """Stop this process until SIGCONT, as Ctrl-Z would, unless a SIGCONT came already."""
        self._watch.pause()

    def terminating(self) -> int | None:
        """A terminating signal that came and is still to be handled, if one did."""
        return self._watch.terminating()

    def raise_on_terminating(self) -> None:
        """Once the ranks have ended, a terminating signal breaks a blocked report or summary."""
        self._watch.raise_on_terminating()


def _saved(path: str, text: str) -> bool:
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as f:
            f.write(text)
    except OSError:
        return False
    return True


def _bound(cpus: frozenset[int], start: Callable[[], None]) -> None:
    """Start a rank bound to ``cpus``: the child inherits this thread's affinity at fork.

    Setting the launcher's own affinity around the spawn costs two system calls; binding
    in the child (preexec_fn) would force fork over vfork, about 4 times the spawn's cost.
    """
    mine = os.sched_getaffinity(0)
    os.sched_setaffinity(0, cpus)
    try:
        start()
    finally:
        os.sched_setaffinity(0, mine)
