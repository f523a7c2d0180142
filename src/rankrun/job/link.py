"""A node's link to the job: the threads that beat its heart and hear the job's news.

While the gang runs an attempt, one background thread owns this node's store client: it
publishes what ends the attempt here (a failure, an interrupt) and bumps the heartbeat; on
node 0 it also reads every node's heartbeat and declares the lost ones. A second thread
blocks in ``wait`` on the attempt's end and then its conclusion, on a client of its own: the
store pushes them, so a failure anywhere reaches every node within a round trip, and no node
polls. What it learns reaches the gang's loop as a ``Halted`` event, through a pipe the loop
waits on. A third thread only reads the clock: a node whose store calls hang (node 0
stopped, the network gone) must still end its ranks, and a hung call can't tell it so.
"""

from __future__ import annotations

import os
import queue
import signal
import threading
import time
from collections.abc import Callable

from rankrun.job import control
from rankrun.job.control import AttemptEnd, EndKind
from rankrun.output.outcome import Halt, RankResult
from rankrun.run.watch import Asked, Event, Halted, Verdict

TYPE_CHECKING = False
if TYPE_CHECKING:
    from rankrun.inspect.node_stacks import NodeStacks

WAIT_CHUNK = 60.0  # seconds of one ``wait`` on the job's news, before it is made again
ANSWER_WAIT = 20.0  # seconds a node has to read its ranks' stacks (py-spy's limit is 10)


class Link:
    def __init__(self, store: control.JobStore, nodes: dict[int, control.NodeInfo],
                 node_rank: int, nnodes: int, timeout: float, stall: Halt | None = None,
                 stall_timeout: float = 0.0) -> None:  # fmt: skip
        self.store, self.nodes, self.node_rank = store, nodes, node_rank
        self.nnodes = nnodes
        self.stall_timeout = stall_timeout
        """Node 0: --stall-timeout, judged across every node's ranks; 0 for none."""
        self.stall = stall
        """The halt a stall decides (--on-stall stop), or None: the stacks only."""
        self._stall_armed = True
        self.hostname = nodes[node_rank].hostname
        self.timeout = timeout
        interval = control.beat_interval(timeout, nnodes)
        self.heartbeat = control.Heartbeat(store, node_rank, nnodes, interval=interval,
                                           timeout=timeout)  # fmt: skip
        self.attempt_number = 0
        self.ends: dict[int, AttemptEnd] = {}
        """How each attempt ended, once it has."""
        self.overs: dict[int, tuple[int, ...]] = {}
        """Each attempt whose every node has published its result or been declared lost: the
        nodes lost."""
        self._requests: queue.SimpleQueue[Callable[[], object]] = queue.SimpleQueue()
        self._news: list[Event] = []
        self._lock = threading.Lock()
        self._told: set[int] = set()
        self._closing = threading.Event()
        self._kick = threading.Event()
        self.fd, self._wake_fd = os.pipe()
        os.set_blocking(self.fd, False)
        for target in (self._run, self._hear, self._watch_clock):
            threading.Thread(target=target, name="rankrun-link", daemon=True).start()

    # The gang's coordinator: called on the loop's thread, never waits on the network.

    def failed(self, result: RankResult) -> None:
        from rankrun.output.report import error_lines

        words = result.ending.words()
        reason = f"rank {result.rank} on node {self.node_rank} ({self.hostname}) {words}"
        fact = control.FailureFact(
            self.node_rank, self.hostname, result.rank, result.local_rank, result.pid or 0,
            result.exit_code, result.signal, "\n".join(error_lines(result)), result.duration,
        )  # fmt: skip
        attempt = self.attempt_number
        self._requests.put(lambda: control.publish_failure(self.store, attempt, fact))
        end = AttemptEnd(EndKind.FAILURE, reason, result.code, self.node_rank)
        self._requests.put(lambda: control.end_attempt(self.store, attempt, end))
        self._kick.set()

    def interrupted(self, signum: int) -> None:
        attempt = self.attempt_number
        self._requests.put(lambda: self.publish_interrupt(attempt, signum))
        self._kick.set()

    def publish_interrupt(self, attempt: int, signum: int) -> None:
        """End ``attempt`` for every node by this node's signal; from the calling thread."""
        name = signal.Signals(signum).name
        reason = f"interrupted on node {self.node_rank} ({self.hostname}) by {name}"
        end = AttemptEnd(EndKind.INTERRUPT, reason, 128 + signum, self.node_rank, signum)
        control.end_attempt(self.store, attempt, end)

    def halted(self, halt: Halt) -> None:
        attempt = self.attempt_number
        reason = f"{halt.reason} on node {self.node_rank} ({self.hostname})"
        end = AttemptEnd(EndKind.INTERRUPT, reason, halt.exit_code, self.node_rank)
        self._requests.put(lambda: control.end_attempt(self.store, attempt, end))
        self._kick.set()

    def answer(self, number: int, stacks: NodeStacks | None) -> None:
        """This node's answer to question ``number``: its ranks' stacks, None if none."""
        from rankrun.job.stall import node_answer

        text = node_answer(stacks, self.node_rank, self.hostname)
        self._requests.put(lambda: control.answer(self.store, number, self.node_rank, text))
        self._kick.set()

    def flush(self) -> None:
        """Block until this node's news queued so far (a failure, an interrupt) is in the
        store. The node's result comes after it: the last result ends the attempt as done,
        and must not overtake the failure that ended it here. Blocks while the store does
        not answer: call it bounded."""
        published = threading.Event()
        self._requests.put(published.set)
        self._kick.set()
        published.wait()

    def take(self) -> list[Event]:
        """The events for the loop: drains the wakeup pipe."""
        try:
            while os.read(self.fd, 512):
                pass
        except BlockingIOError:
            pass
        with self._lock:
            news, self._news = self._news, []
        return news

    def close(self) -> None:
        self._closing.set()
        self._kick.set()
        for fd in (self.fd, self._wake_fd):
            os.close(fd)

    # The link's own threads.

    def _run(self) -> None:
        """Publish what happens here at once, and beat every ``interval``; nothing else."""
        next_beat = 0.0
        while not self._closing.is_set():
            try:
                self._publish_requests()
                if time.monotonic() >= next_beat:
                    next_beat = time.monotonic() + self.heartbeat.interval
                    self._declare_lost(self.heartbeat.tick())
                    self._take_question()
                    self._watch_stall()
            except RuntimeError:
                pass  # the store is unreachable: the clock thread decides when to give up
            self._kick.wait(max(0.0, next_beat - time.monotonic()))
            self._kick.clear()

    def _publish_requests(self) -> None:
        while not self._requests.empty():
            self._requests.get()()

    def _declare_lost(self, lost: list[int]) -> None:
        """Node 0: end the attempt for the nodes whose heartbeat stopped."""
        if lost:
            reason = self.lost_reason(lost)
            end = AttemptEnd(EndKind.LOST, reason, 1, self.node_rank, lost=tuple(lost))
            control.declare_lost(self.store, self.attempt_number, end)

    def lost_reason(self, lost: list[int]) -> str:
        """``node 1 (host, pid 42) lost: no heartbeat for 10 s``."""
        named = ", ".join(f"{r} ({self.nodes[r].hostname}, pid {self.nodes[r].pid})" for r in lost)
        return f"node {named} lost: no heartbeat for {self.timeout:g} s"

    def _take_question(self) -> None:
        number, self.heartbeat.asked = self.heartbeat.asked, None
        if number is not None:
            asked = control.question(self.store, number)
            self._hand(Asked(asked.number, asked.what, asked.reason))

    def _watch_stall(self) -> None:
        """Node 0: once per quiet period of every node's ranks past --stall-timeout, ask
        every node for its ranks' stacks, and give the loop the grouped verdict."""
        if not self.stall_timeout or self.node_rank != 0:
            return
        quiet = self.heartbeat.job_quiet()
        if quiet is None or quiet < self.stall_timeout:
            self._stall_armed = True
        elif self._stall_armed:
            self._stall_armed = False
            threading.Thread(target=self._stall_verdict, name="rankrun-stall", daemon=True).start()

    def _stall_verdict(self) -> None:
        from rankrun.job.stall import job_verdict

        reason = f"stalled: no rank wrote a line for {self.stall_timeout:g} s"
        lost = set(self.heartbeat.lost())
        asked = [r for r in range(self.nnodes) if r not in lost]
        waited = 2 * self.heartbeat.interval + ANSWER_WAIT
        try:
            number = control.ask(self.store, "stacks", reason, asked)
            answers = control.await_answers(self.store, number, asked, waited)
        except (control.ControlError, RuntimeError):
            return  # the store is gone: the clock thread decides what that means
        lines = tuple(job_verdict(reason, answers, asked, waited))
        self._hand(Verdict(lines, self.stall))

    @property
    def cut_off(self) -> bool:
        return self.heartbeat.cut_off()

    def _hear(self) -> None:
        """Block on each attempt's end, then on its conclusion, as the store pushes them.

        A failed call (a connection refused in a storm of them, a store that went away) is
        tried again on a new connection, backing off: a node that stopped hearing would wait
        for an end that came. Whether this node is cut off is the clock thread's to judge.
        """
        number, failures = 0, 0
        while not self._closing.is_set():
            try:
                mine = self.store.clone()
                while not self._closing.is_set():
                    number = self._hear_attempt(mine, number)
                    failures = 0
            except RuntimeError:
                failures += 1
                self._closing.wait(control.backoff(failures))

    def _hear_attempt(self, mine: control.JobStore, number: int) -> int:
        """Attempt ``number``'s end and conclusion, once each is there; the next to hear."""
        if number not in self.ends:
            end = control.await_end(mine, number, WAIT_CHUNK)
            if end is None:
                return number
            self.ends[number] = end
            if end.halts(self.node_rank):
                self._tell(number, Halted(end.reason, end.code, end.signal))
        lost = control.await_over(mine, number, WAIT_CHUNK)
        if lost is None:
            return number
        self.overs[number] = lost
        self._wake()
        return number + 1

    def _watch_clock(self) -> None:
        while not self._closing.wait(self.heartbeat.interval):
            self.heartbeat.awake()
            if self.heartbeat.cut_off():
                self._tell(self.attempt_number, Halted(self.cut_off_reason(), 1))
                return

    def cut_off_reason(self) -> str:
        frozen = self.heartbeat.frozen_for
        if frozen is not None:
            return (f"cut off from the job: this node did not run for {frozen:.1f} s (stopped?), "
                    f"past --node-timeout {self.timeout:g} s, so the other nodes have given it "
                    "up: ending this node's ranks")  # fmt: skip
        why = f": {self.heartbeat.error}" if self.heartbeat.error else ""
        return f"cut off from the job's store for {self.timeout:g} s{why}: ending this node's ranks"

    def _tell(self, attempt: int, event: Halted) -> None:
        with self._lock:
            if attempt in self._told:
                return
            self._told.add(attempt)
            self._news.append(event)
        self._wake()

    def _hand(self, event: Event) -> None:
        """An event for the loop, whatever the attempt."""
        with self._lock:
            self._news.append(event)
        self._wake()

    def _wake(self) -> None:
        """Wake the loop that waits on ``fd``."""
        try:
            os.write(self._wake_fd, b"!")
        except OSError:
            pass  # closed: the run is over
