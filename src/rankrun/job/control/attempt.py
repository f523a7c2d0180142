"""One attempt across nodes: its failures in order, its end, each node's result, barriers.

Every agent learns an attempt's end by blocking in ``wait`` on one key (``await_end``,
``await_over``): the server wakes every waiter when it is set. No agent polls, and no agent
but node 0 reads another node's keys.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from typing import Any, NamedTuple

from rankrun.job.control.calls import ControlError, bounded, dump, load, peek, wait_for
from rankrun.job.control.store import JobStore
from rankrun.output.outcome import Ending, OomVerdict, RankResult

ERROR_TEXT_MAX = 64 * 1024  # characters of a failure's error kept: the server drops a client
# that sends a value over about 8 MiB, and the report shows a few lines anyway


class BarrierTimeout(ControlError):
    """Not every node reached the barrier in time."""


class FailureFact(NamedTuple):
    """One rank's failure, published by its agent."""

    node_rank: int
    hostname: str
    rank: int
    local_rank: int
    pid: int
    exit_code: int | None
    signal: int | None
    error_text: str
    duration: float


class NodeResult(NamedTuple):
    """One node's end of an attempt, for node 0's job-wide report."""

    node_rank: int
    hostname: str
    pid: int
    exit_code: int
    ranks: tuple[RankResult, ...]
    """Its ranks; a failed one's ``stderr_tail`` is its error as the report shows it, cut to
    ``ERROR_TEXT_MAX``, and no rank's ``error_file`` (a path on that node) travels."""


class EndKind:
    """Kinds of attempt end, as the store holds them."""

    FAILURE = "failure"
    INTERRUPT = "interrupt"
    LOST = "lost"
    DONE = "done"  # every node published its result: nothing ended it early


class AttemptEnd(NamedTuple):
    """Why an attempt ended, as every node reads it: the first writer's reason holds."""

    kind: str  # an EndKind
    reason: str
    code: int  # the exit code it gives the nodes it halts
    node: int  # the node that ended it
    signal: int | None = None  # the signal that interrupted the job there
    lost: tuple[int, ...] = ()

    def halts(self, node_rank: int) -> bool:
        """Whether this end stops ``node_rank``'s ranks: another node's failure or signal, or a
        lost node, but never the node's own news."""
        return self.kind == EndKind.LOST or (self.kind != EndKind.DONE and self.node != node_rank)


def publish_failure(store: JobStore, attempt: int, fact: FailureFact) -> int:
    """Record a rank's failure; returns its order in the store. Order 1 is the root cause.

    The error text is cut to its last ``ERROR_TEXT_MAX`` characters.
    """
    fact = fact._replace(error_text=fact.error_text[-ERROR_TEXT_MAX:])
    order: int = store.client.add(store.keys.failures(attempt), 1)
    store.client.set(store.keys.failure(attempt, order), dump(fact))
    return order


def first_failure(store: JobStore, attempt: int) -> FailureFact | None:
    """The root cause, if its fact is there yet. Does not wait."""
    return _peek_fact(store, store.keys.failure(attempt, 1))


def failures(store: JobStore, attempt: int) -> list[tuple[int, FailureFact]]:
    """Every failure published so far, with its order. Does not wait.

    An order can be missing when its agent was lost between counting and writing it.
    """
    count = store.client.add(store.keys.failures(attempt), 0)
    found = []
    for order in range(1, count + 1):
        fact = _peek_fact(store, store.keys.failure(attempt, order))
        if fact is not None:
            found.append((order, fact))
    return found


def _peek_fact(store: JobStore, key: str) -> FailureFact | None:
    raw = peek(store.client, key)
    return None if raw is None else FailureFact(**load(raw))


def end_attempt(store: JobStore, attempt: int, end: AttemptEnd) -> AttemptEnd:
    """End the attempt everywhere; returns the end that holds (the first one given).

    Setting the key wakes every agent blocked in ``await_end``.
    """
    mine = _dump_end(end)
    held: bytes = store.client.compare_set(store.keys.end(attempt), "", mine)
    return _load_end(held)


def attempt_ended(store: JobStore, attempt: int) -> AttemptEnd | None:
    """Why the attempt ended, or None while it runs. Does not wait."""
    raw = peek(store.client, store.keys.end(attempt))
    return None if raw is None else _load_end(raw)


def await_end(store: JobStore, attempt: int, timeout: float) -> AttemptEnd | None:
    """Block until the attempt ends anywhere; None after ``timeout``. Use a client of its own."""
    if not wait_for(store.client, [store.keys.end(attempt)], timeout):
        return None
    return _load_end(store.client.get(store.keys.end(attempt)))


def _dump_end(end: AttemptEnd) -> str:
    return json.dumps(end._asdict(), separators=(",", ":"))


def _load_end(raw: bytes) -> AttemptEnd:
    fields = load(raw)
    return AttemptEnd(**{**fields, "lost": tuple(fields.get("lost", ()))})


def publish_interrupt(store: JobStore, attempt: int) -> None:
    """A signal to this node ended its part of the attempt: the job must not restart.
    Published before the node's result, so that whoever has every result sees it."""
    store.client.add(store.keys.interrupts(attempt), 1)


def interrupted(store: JobStore, attempt: int) -> bool:
    """Whether a signal to any node ended its part of the attempt."""
    return bool(store.client.add(store.keys.interrupts(attempt), 0))


def publish_result(store: JobStore, attempt: int, result: NodeResult, nnodes: int) -> None:
    """This node's part of the attempt is over. The last node to publish ends the attempt
    (``DONE``, unless something ended it before) and wakes every agent's ``await_over``."""
    store.client.set(store.keys.result(attempt, result.node_rank), _dump_result(result))
    if store.client.add(store.keys.results(attempt), 1) >= nnodes:
        done = AttemptEnd(EndKind.DONE, "every node finished", 0, result.node_rank)
        end_attempt(store, attempt, done)
        store.client.compare_set(store.keys.over(attempt), "", "[]")


def declare_lost(store: JobStore, attempt: int, end: AttemptEnd) -> AttemptEnd:
    """Node 0: the nodes in ``end.lost`` will publish nothing. End the attempt (unless it has
    ended) and wake every agent's ``await_over``; returns the end that holds."""
    held = end_attempt(store, attempt, end)
    store.client.compare_set(store.keys.over(attempt), "", json.dumps(list(end.lost)))
    return held


def await_over(store: JobStore, attempt: int, timeout: float) -> tuple[int, ...] | None:
    """Block until every node has published its result or been declared lost: the nodes
    lost. None after ``timeout``. Use a client of its own."""
    if not wait_for(store.client, [store.keys.over(attempt)], timeout):
        return None
    return tuple(json.loads(store.client.get(store.keys.over(attempt))))


def gather_results(
    store: JobStore,
    attempt: int,
    nnodes: int,
    timeout: float,
    skip: Iterable[int] = (),
    complete: bool = False,
) -> dict[int, NodeResult]:
    """Node 0: every node's result, waiting up to ``timeout`` for those not in ``skip``.

    Returns what arrived, by node rank; a node missing from it is lost or too late.
    ``complete``: every result is there (the attempt is over, no node lost): one read.
    Otherwise it waits on a client of its own, then reads what is there.
    """
    skipped = set(skip)
    keys = {r: store.keys.result(attempt, r) for r in range(nnodes)}
    wanted = [keys[r] for r in range(nnodes) if r not in skipped]

    def collect() -> dict[int, NodeResult]:
        mine = store if complete else store.clone()
        if not complete and wanted:
            wait_for(mine.client, wanted, timeout)
        there = [r for r, key in keys.items() if complete or mine.client.check([key])]
        raws = mine.client.multi_get([keys[r] for r in there]) if there else []
        return {r: _load_result(raw) for r, raw in zip(there, raws, strict=True)}

    return bounded(collect, timeout + 10, "the nodes' results")


def _dump_result(result: NodeResult) -> str:
    ranks = [_rank_fields(r) for r in result.ranks]
    return json.dumps({**result._asdict(), "ranks": ranks}, separators=(",", ":"))


def _rank_fields(r: RankResult) -> dict[str, Any]:
    from rankrun.output.report import error_lines

    oom = r.ending.oom._asdict() if r.ending.oom is not None else None
    error = "\n".join(error_lines(r))[-ERROR_TEXT_MAX:] if r.failed else ""
    ending = {**r.ending._asdict(), "oom": oom}
    return {**r._asdict(), "ending": ending, "stderr_tail": error, "error_file": None}


def _load_result(raw: bytes) -> NodeResult:
    fields = load(raw)
    return NodeResult(**{**fields, "ranks": tuple(_rank_result(r) for r in fields["ranks"])})


def _rank_result(fields: dict[str, Any]) -> RankResult:
    ending = fields["ending"]
    oom = OomVerdict(**ending["oom"]) if ending["oom"] is not None else None
    return RankResult(**{**fields, "ending": Ending(**{**ending, "oom": oom})})


def say_seen(store: JobStore, attempt: int) -> None:
    """This node has read the attempt's end: node 0 may stop serving, as far as it goes.
    The n-th node to say so also sets ``seen_by(n)``, which node 0 waits on."""
    count = store.client.add(store.keys.seen(attempt), 1)
    store.client.set(store.keys.seen_by(attempt, count), "1")


def await_seen(store: JobStore, attempt: int, count: int, timeout: float) -> None:
    """Node 0, before it exits: until ``count`` nodes have read the attempt's end, or for at
    most ``timeout``; one ``wait``. Node 0's heartbeat waits behind it: no one reads it."""
    wait_for(store.client, [store.keys.seen_by(attempt, count)], timeout)


def barrier(
    store: JobStore,
    name: str,
    node_rank: int,
    nnodes: int,
    timeout: float,
    opening: Callable[[], str] = lambda: "",
    given_up: Callable[[], str | None] = lambda: None,
) -> str:
    """Wait until all ``nnodes`` nodes have called ``barrier`` with ``name`` (once per name).

    Each node counts itself in. The last to arrive wakes node 0, which calls ``opening()``
    (e.g. to serve the next attempt's store) and opens the barrier with its value; the others
    wait for that value, which every node returns. Waits happen on a connection of their
    own, so the heartbeat's client is never held up; a stopped node 0 ends it as
    ``Unresponsive`` after ``timeout``. ``given_up()`` says why the job can't meet any
    more (a node lost, this one cut off, a signal): the barrier then raises ``Abandoned``.
    """

    def meet() -> str:
        mine = store.clone()
        keys, client = mine.keys, mine.client
        client.set(keys.arrived(name, node_rank), "1")
        if client.add(keys.arrivals(name), 1) >= nnodes:
            client.set(keys.all_arrived(name), "1")
        if node_rank == 0:
            if not wait_for(client, [keys.all_arrived(name)], timeout):
                _missed(mine, name, nnodes, timeout)
            client.set(keys.opened(name), opening())
        elif not wait_for(client, [keys.opened(name)], timeout):
            _missed(mine, name, nnodes, timeout)
        return bytes(client.get(keys.opened(name))).decode()

    return bounded(meet, timeout + 10, f"the barrier {name}", given_up)


def _missed(store: JobStore, name: str, nnodes: int, timeout: float) -> None:
    """Raise BarrierTimeout naming the nodes that did not arrive (one read per node, once)."""
    if store.client.check([store.keys.opened(name)]):  # opened just as the wait gave up
        return
    missing = [r for r in range(nnodes) if not store.client.check([store.keys.arrived(name, r)])]
    nodes = ", ".join(map(str, missing)) or "0"
    raise BarrierTimeout(f"node {nodes} did not reach {name} within {timeout:g} s")
