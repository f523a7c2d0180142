"""A node's link to the job: the thread that beats its heart and reads the job's end.

While the gang runs an attempt, one background thread owns this node's store client: it
publishes what ends the attempt here (a failure, an interrupt), bumps the heartbeat, and
watches for the attempt's end from elsewhere (another node's failure, a lost node). What it
learns reaches the gang's loop as a ``Halted`` event, through a pipe the loop waits on. A
second thread only reads the clock: a node whose store calls hang (node 0 stopped, the
network gone) must still end its ranks, and a hung call can't tell it so.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import threading
import time
from collections.abc import Callable, Sequence

from rankrun.job import control
from rankrun.output.outcome import Halt, RankResult
from rankrun.run.watch import Event, Halted

POLL = 0.05


class End:
    """Kinds of attempt end, as written to the store."""

    FAILURE = "failure"
    INTERRUPT = "interrupt"
    LOST = "lost"


class Link:
    def __init__(self, store: control.JobStore, nodes: list[control.NodeInfo], node_rank: int,
                 timeout: float) -> None:  # fmt: skip
        self.store, self.nodes, self.node_rank = store, nodes, node_rank
        self.hostname = nodes[node_rank].hostname
        nnodes = len(nodes)
        self.timeout = timeout
        interval = min(max(timeout / 5, 0.1), 2.0)
        self.heartbeat = control.Heartbeat(store, node_rank, nnodes, interval=interval,
                                           timeout=timeout)  # fmt: skip
        self.attempt_number = 0
        self.ends: dict[int, dict[str, object]] = {}
        """How each attempt ended, once it has: kind, reason, code, node."""
        self.result_counts: dict[int, int] = {}
        """How many nodes have published their result of each attempt."""
        self._requests: queue.SimpleQueue[Callable[[], object]] = queue.SimpleQueue()
        self._news: list[Event] = []
        self._lock = threading.Lock()
        self._told: set[int] = set()
        self._closing = threading.Event()
        self._kick = threading.Event()
        self.fd, self._wake_fd = os.pipe()
        os.set_blocking(self.fd, False)
        for target in (self._run, self._watch_clock):
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
        self._requests.put(lambda: self._end(attempt, End.FAILURE, reason, result.code))
        self._kick.set()

    def interrupted(self, signum: int) -> None:
        attempt = self.attempt_number
        self._requests.put(lambda: self.publish_interrupt(attempt, signum))
        self._kick.set()

    def publish_interrupt(self, attempt: int, signum: int) -> None:
        """End ``attempt`` for every node by this node's signal; from the calling thread."""
        name = signal.Signals(signum).name
        reason = f"interrupted on node {self.node_rank} ({self.hostname}) by {name}"
        self._end(attempt, End.INTERRUPT, reason, 128 + signum, signum)

    def halted(self, halt: Halt) -> None:
        attempt = self.attempt_number
        reason = f"{halt.reason} on node {self.node_rank} ({self.hostname})"
        self._requests.put(lambda: self._end(attempt, End.INTERRUPT, reason, halt.exit_code))
        self._kick.set()

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
        next_beat = 0.0
        while not self._closing.is_set():
            try:
                self._publish_requests()
                if time.monotonic() >= next_beat:
                    next_beat = time.monotonic() + self.heartbeat.interval
                    self._declare_lost(self.heartbeat.tick())
                self._read_end()
            except RuntimeError:
                pass  # the store is unreachable: the clock thread decides when to give up
            self._kick.wait(POLL)  # a failure here is published at once, not at the next poll
            self._kick.clear()

    def _publish_requests(self) -> None:
        while not self._requests.empty():
            self._requests.get()()

    def _end(self, attempt: int, kind: str, reason: str, code: int, signum: int | None = None,
             lost: Sequence[int] = ()) -> None:  # fmt: skip
        record = json.dumps({"kind": kind, "reason": reason, "code": code, "signal": signum,
                             "node": self.node_rank, "lost": list(lost)})  # fmt: skip
        control.end_attempt(self.store, attempt, record)

    def _declare_lost(self, lost: list[int]) -> None:
        if lost:
            named = ", ".join(
                f"{r} ({self.nodes[r].hostname}, pid {self.nodes[r].pid})" for r in lost
            )
            reason = f"node {named} lost: no heartbeat for {self.timeout:g} s"
            self._end(self.attempt_number, End.LOST, reason, 1, lost=lost)

    @property
    def cut_off(self) -> bool:
        return self.heartbeat.cut_off()

    def _read_end(self) -> None:
        attempt = self.attempt_number
        count = self.store.key("attempt", attempt, "results")
        self.result_counts[attempt] = self.store.client.add(count, 0)
        raw = control.attempt_ended(self.store, attempt)
        if raw is None or attempt in self._told:
            return
        end = self.ends[attempt] = json.loads(raw)
        if end["node"] != self.node_rank or end["kind"] == End.LOST:
            self._tell(attempt, Halted(end["reason"], end["code"], end.get("signal")))
        else:
            self._told.add(attempt)

    def _watch_clock(self) -> None:
        while not self._closing.wait(POLL * 2):
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
        try:
            os.write(self._wake_fd, b"!")
        except OSError:
            pass  # closed: the run is over
