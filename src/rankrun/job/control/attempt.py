"""One attempt across nodes: its failures in order, its end, each node's result, barriers."""

from __future__ import annotations

import time
from collections.abc import Iterable
from datetime import timedelta
from typing import Any, NamedTuple

from rankrun.job.control.calls import POLL, ControlError, bounded, dump, load, peek
from rankrun.job.control.store import JobStore

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
    ranks: tuple[dict[str, Any], ...]  # summary rows, as --summary-json writes them


def publish_failure(store: JobStore, attempt: int, fact: FailureFact) -> int:
    """Record a rank's failure; returns its order in the store. Order 1 is the root cause.

    The error text is cut to its last ``ERROR_TEXT_MAX`` characters.
    """
    fact = fact._replace(error_text=fact.error_text[-ERROR_TEXT_MAX:])
    order: int = store.client.add(store.key("attempt", attempt, "failures"), 1)
    store.client.set(store.key("attempt", attempt, "failure", order), dump(fact))
    return order


def first_failure(store: JobStore, attempt: int) -> FailureFact | None:
    """The root cause, if its fact is there yet. Does not wait."""
    return _peek_fact(store, store.key("attempt", attempt, "failure", 1))


def failures(store: JobStore, attempt: int) -> list[tuple[int, FailureFact]]:
    """Every failure published so far, with its order. Does not wait.

    An order can be missing when its agent was lost between counting and writing it.
    """
    count = store.client.add(store.key("attempt", attempt, "failures"), 0)
    found = []
    for order in range(1, count + 1):
        fact = _peek_fact(store, store.key("attempt", attempt, "failure", order))
        if fact is not None:
            found.append((order, fact))
    return found


def _peek_fact(store: JobStore, key: str) -> FailureFact | None:
    raw = peek(store.client, key)
    return None if raw is None else FailureFact(**load(raw))


def end_attempt(store: JobStore, attempt: int, reason: str) -> str:
    """End the attempt everywhere; returns the reason that holds (the first one given)."""
    held: bytes = store.client.compare_set(store.key("attempt", attempt, "end"), "", reason)
    return held.decode()


def attempt_ended(store: JobStore, attempt: int) -> str | None:
    """Why the attempt ended, or None while it runs. Does not wait."""
    raw = peek(store.client, store.key("attempt", attempt, "end"))
    return None if raw is None else raw.decode()


def publish_interrupt(store: JobStore, attempt: int) -> None:
    """A signal to this node ended its part of the attempt: the job must not restart.
    Published before the node's result, so that whoever has every result sees it."""
    store.client.add(store.key("attempt", attempt, "interrupts"), 1)


def interrupted(store: JobStore, attempt: int) -> bool:
    """Whether a signal to any node ended its part of the attempt."""
    return bool(store.client.add(store.key("attempt", attempt, "interrupts"), 0))


def publish_result(store: JobStore, attempt: int, result: NodeResult) -> None:
    store.client.set(store.key("attempt", attempt, "result", result.node_rank), dump(result))
    store.client.add(store.key("attempt", attempt, "results"), 1)


def gather_results(
    store: JobStore, attempt: int, nnodes: int, timeout: float, skip: Iterable[int] = ()
) -> dict[int, NodeResult]:
    """Node 0: every node's result, waiting up to ``timeout`` for those not in ``skip``.

    Returns what arrived, by node rank; a node missing from it is lost or too late.
    """
    skipped = set(skip)
    wanted = [r for r in range(nnodes) if r not in skipped]
    deadline = time.monotonic() + timeout
    keys = {r: store.key("attempt", attempt, "result", r) for r in range(nnodes)}
    counter = store.key("attempt", attempt, "results")
    while time.monotonic() < deadline:
        if store.client.add(counter, 0) >= len(wanted) and all(
            store.client.check([keys[r]]) for r in wanted
        ):
            break
        time.sleep(POLL)
    results = {}
    for r, key in keys.items():
        raw = peek(store.client, key)
        if raw is not None:
            fields = load(raw)
            results[r] = NodeResult(**{**fields, "ranks": tuple(fields["ranks"])})
    return results


def barrier(store: JobStore, name: str, node_rank: int, nnodes: int, timeout: float) -> None:
    """Wait until all ``nnodes`` nodes have called ``barrier`` with ``name`` (once per name).

    ``add`` counts arrivals; the last one sets the ``open`` key that the others ``wait`` for.
    It waits on a connection of its own, so the thread that beats the heartbeat on ``store``
    is never held up; a stopped node 0 ends it as ``Unresponsive`` after ``timeout``.
    """

    def meet() -> None:
        mine = store.clone()
        mine.client.set(mine.key("barrier", name, node_rank), "1")
        if mine.client.add(mine.key("barrier", name, "count"), 1) >= nnodes:
            mine.client.set(mine.key("barrier", name, "open"), "1")
            return
        try:
            mine.client.wait([mine.key("barrier", name, "open")], timedelta(seconds=timeout))
        except RuntimeError:
            keys = [mine.key("barrier", name, r) for r in range(nnodes)]
            missing = [r for r, k in enumerate(keys) if not mine.client.check([k])]
            if not missing:  # opened just as the wait gave up
                return
            nodes = ", ".join(map(str, missing))
            raise BarrierTimeout(
                f"node {nodes} did not reach {name} within {timeout:g} s"
            ) from None

    bounded(meet, timeout + 10, f"the barrier {name}")


def clear_rank_keys(client: Any) -> int:
    """Node 0, between attempts: delete the keys that the ranks' torch wrote.

    The ranks use this store too (TORCHELASTIC_USE_AGENT_STORE=True): without this, the next
    attempt's ranks read the last attempt's addresses and fail to connect. Call it only when
    no rank of the job runs on any node, i.e. after the restart barrier. Returns the count.
    """
    stale = [k for k in client.list_keys() if not k.startswith("rankrun/")]
    for k in stale:
        client.delete_key(k)
    return len(stale)
