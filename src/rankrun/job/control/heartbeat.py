"""Heartbeats: a node whose counter stands still is lost."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import NamedTuple

from rankrun.job.control.calls import first_line, load
from rankrun.job.control.store import JobStore

ASK = b"ask:"
NODE0_BEATS_PER_S = 1000
"""The beats node 0's store takes per second, at most, once the job's size would ask for more
than the usual interval gives (past 2,000 nodes at 2 s): each costs its one thread a request."""


def beat_interval(timeout: float, nnodes: int) -> float:
    """Seconds between an agent's beats: a fifth of ``timeout`` (0.1 to 2 s), stretched at
    thousands of nodes to pace node 0's store at ``NODE0_BEATS_PER_S``, as far as a quarter of
    ``timeout``, so that a live node still beats several times before it could be lost."""
    usual = min(max(timeout / 5, 0.1), 2.0)
    return max(usual, min(nnodes / NODE0_BEATS_PER_S, timeout / 4))


class Heartbeat:
    """Each agent bumps its counter; node 0 alone reads them all, and a node whose counter
    stands still for ``timeout`` is lost.

    Per ``interval``, an agent makes one request and node 0 one more (a ``multi_get`` of
    every node's beat): O(1) for each agent, O(N) for node 0. An agent other than node 0
    judges node 0 only by whether its own calls succeed (``cut_off``).

    A beat is ``<count>:<quiet>``, written with ``compare_set`` (whose answer proves the
    server alive, as ``set``'s would not): ``quiet`` is how long this node's ranks have not
    written a line (``-`` while none runs), so node 0 knows the whole job's quiet time with
    no request more (``job_quiet``). Node 0 asks every node a question (``asks.ask``) by
    writing ``ask:<number>`` over their beats: the beat's answer brings it (``asked``).

    Owned by one thread, which calls ``tick()`` every ``interval`` seconds. Changes are timed
    with this agent's monotonic clock; no host clocks are compared. ``cut_off()`` reads only
    the clock, so any thread may ask it, even while the owner is stuck in a store call.
    """

    def __init__(
        self,
        store: JobStore,
        node_rank: int,
        nnodes: int,
        *,
        interval: float = 1.0,
        timeout: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
        quiet: Callable[[], float | None] = lambda: None,
    ) -> None:
        self.store = store
        self.quiet = quiet
        """Seconds since this node's ranks last wrote a line; None while none runs."""
        self._beats = 0
        self._written = b"1"  # what this node's beat key holds: the join's counter, at first
        self.asked: int | None = None
        """The last question node 0 asked through this node's beat, until taken."""
        self.node_rank = node_rank
        self.interval = interval
        self.timeout = timeout
        self.clock = clock
        self.error: str | None = None  # the last store error, while ticks fail
        self._mine = store.keys.heartbeat(node_rank)
        self._others = [r for r in range(nnodes) if r != node_rank] if node_rank == 0 else []
        self._keys = [store.keys.heartbeat(r) for r in self._others]
        now = clock()
        self._last_ok = now
        self._seen: dict[int, tuple[bytes, float]] = {r: (b"", now) for r in self._others}
        self._last_awake = now
        self.frozen_for: float | None = None
        """How long this process did not run (SIGSTOP, a paused VM), once that passed
        ``timeout``: the others have given this node up, and it judges none of them by a time
        it did not watch."""

    def awake(self) -> None:
        """Note that this process runs; called often, by threads that never block for long."""
        now = self.clock()
        if now - self._last_awake > self.timeout and self.frozen_for is None:
            self.frozen_for = now - self._last_awake
        self._last_awake = now

    def tick(self) -> list[int]:
        """Beat and, on node 0, look at the others: return the nodes lost. Store errors are
        kept, not raised.

        May block for as long as the store does not answer (see ``cut_off``).
        """
        self.awake()
        quiet = self.quiet()
        beat = f"{self._beats}:{'-' if quiet is None else f'{quiet:.1f}'}".encode()
        try:
            held = self.store.client.compare_set(self._mine, self._written, beat)
            values = self.store.client.multi_get(self._keys) if self._keys else []
        except RuntimeError as e:
            self.error = first_line(e)
            return []
        # The join's counter, or node 0's question: match it, beat next time.
        self._written = held
        self._beats += held == beat
        if held.startswith(ASK):
            self.asked = int(held[len(ASK) :])
        now = self.clock()
        if self._others:
            # Node 0's calls go to the store it hosts: only a stop of this process makes them
            # slow, and then it must not judge the others by the time it did not watch.
            self.awake()
        else:
            self._last_awake = now  # the calls above may block for as long as the store does
        if self.frozen_for is not None:
            return []
        self._last_ok, self.error = now, None
        for r, value in zip(self._others, values, strict=True):
            if value != self._seen[r][0] and not value.startswith(ASK):  # node 0's own write
                self._seen[r] = (value, now)
        return self.lost()

    def job_quiet(self) -> float | None:
        """Node 0: how long no rank on any node has written a line, as of now; None while a
        node runs no ranks or has not said."""
        quiet = self.quiet()
        if quiet is None:
            return None
        now = self.clock()
        for value, seen in self._seen.values():
            theirs = _quiet_of(value)
            if theirs is None:
                return None
            quiet = min(quiet, theirs + (now - seen))
        return quiet

    def lost(self) -> list[int]:
        """Nodes whose counter has not changed for ``timeout``, as of the last good tick."""
        return [r for r, (_, t) in self._seen.items() if self._last_ok - t > self.timeout]

    def cut_off(self) -> bool:
        """Whether this agent's own store operations have not succeeded for ``timeout``, or
        this process did not run for that long."""
        return self.frozen_for is not None or self.clock() - self._last_ok > self.timeout

    def quiet_for(self) -> float:
        """Seconds since this agent's last successful tick."""
        return self.clock() - self._last_ok


class NodeBeat(NamedTuple):
    node: int
    hostname: str
    pid: int
    """Its agent's."""
    quiet: float | None
    """How long its ranks had written no line, at its last beat; None while none runs."""


def node_beats(store: JobStore, nnodes: int) -> list[NodeBeat]:
    """Every node's last beat and claim, in one request: for ``rankrun status`` on node 0.

    A beat bears no time, so its age is not known here; only node 0's agent times them."""
    nodes = range(nnodes)
    keys = [store.keys.heartbeat(r) for r in nodes] + [store.keys.claim(r) for r in nodes]
    values = store.client.multi_get(keys)
    claims = [load(raw) for raw in values[nnodes:]]
    return [NodeBeat(r, c["hostname"], c["pid"], _quiet_of(beat))
            for r, beat, c in zip(nodes, values[:nnodes], claims, strict=True)]  # fmt: skip


def _quiet_of(beat: bytes) -> float | None:
    _, _, quiet = beat.partition(b":")
    try:
        return float(quiet)
    except ValueError:
        return None  # "-", or the join's bare counter
