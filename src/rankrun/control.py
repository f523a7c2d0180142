"""The job's facts across nodes, as keys in one TCPStore: read and written here, nowhere else.

Multi-node runs only. Node 0's agent hosts a ``torch.distributed.TCPStore`` at
--master-addr:--master-port; every other agent connects to it. torch is imported by the first
function that needs it, never when this module is imported.

Keys (``P`` is ``rankrun/<run id>``)::

    rankrun/job                        JobInfo, written once by node 0 when it starts hosting
    P/join/claim/<node>                the NodeInfo of the agent that holds --node-rank <node>
    P/join/joined                      counter: node ranks claimed
    P/join/complete                    set when all nodes have claimed: later arrivals are strangers
    P/join/agreed                      counter: agents that found every node's settings agree
    P/join/abort                       the message every agent raises (the first writer's)
    P/join/acked                       counter: agents that read the abort (node 0 waits for them)
    P/hb/<node>                        heartbeat counter
    P/attempt/<k>/failures             counter: the store's order of failures
    P/attempt/<k>/failure/<n>          FailureFact of the n-th failure; n = 1 is the root cause
    P/attempt/<k>/end                  why attempt k ended (the first writer's reason)
    P/attempt/<k>/result/<node>        NodeResult
    P/attempt/<k>/results              counter: results published
    P/barrier/<name>/<node>, /count, /open

Facts learnt from torch 2.13 that shape this module:

- One client object may be used from several threads: its operations are serialised by a lock
  inside it. But an operation that waits (``get`` of a missing key, ``wait``) holds that lock,
  so every other thread's operation on the same client waits behind it. Everything here that a
  background thread calls is a short, non-waiting operation (about 15 us on loopback); the
  functions that wait (``join``, ``barrier``) run before that thread starts, or on a clone.
- The store's timeout bounds waiting for a key, not a server that does not answer. Against a
  SIGSTOPped server, or across a pulled cable, every operation blocks, whatever the timeout,
  until the server answers or TCP gives up (about 15 minutes). They release the GIL and do not
  stop the process from exiting. So being cut off is judged by the clock
  (``Heartbeat.cut_off``), never by waiting for an operation to fail; and the waiting
  functions here run their operations in a helper thread that they abandon when time is up.
- A server that exits is noticed at once: ``DistNetworkError`` (a ``RuntimeError``).
- ``add`` on a key that holds a non-number, or a value over about 8 MiB (16 MiB failed),
  makes the server drop that client's connection: every later call on it fails. Counters
  and values here never share a key, and error texts are cut.
- ``set`` does not wait for the server's answer: it "succeeds" against a stopped or vanished
  server. Only calls that return a value (``add``, ``get``, ``check``, ``compare_set``) prove
  the server alive, so the heartbeat uses ``add``.
- The server has one event-loop thread. After a connection that sends bytes it can't parse, or
  closes without a word, it sometimes looks up the peer's name by reverse DNS on that thread:
  every client waits for it (5 s here, where DNS is unreachable). Nothing here opens such a
  connection; port scanners and health checks can.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import os
import queue
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterable, Sequence
from datetime import timedelta
from typing import Any, Generic, NamedTuple, NoReturn, TypeVar

T = TypeVar("T")

JOIN_TIMEOUT = 600.0
WAIT_NOTE_EVERY = 10.0  # seconds between "waiting for ..." notes
POLL = 0.05  # seconds between looks at a key that another agent will write
JOB_KEY_WAIT = 30.0  # a store without rankrun/job this long after connecting is not rankrun's
ABORT_LINGER = 5.0  # how long node 0 keeps serving so that every agent reads an abort
ERROR_TEXT_MAX = 64 * 1024  # characters of a failure's error kept: the server drops a client
# that sends a value over about 8 MiB, and the report shows a few lines anyway


class ControlError(Exception):
    """A multi-node failure to report as one line: the message names the problem and the fix."""


class Stranger(ControlError):
    """This agent is not part of the job that holds the port. It wrote nothing there."""


class JoinError(ControlError):
    """The nodes could not form the job. Every agent raises the same message."""


class Mismatch(JoinError):
    """The nodes were started with different settings."""


class DuplicateNodeRank(JoinError):
    """Two agents were given the same --node-rank."""


class JoinTimeout(JoinError):
    """Not every node joined in time."""


class Unresponsive(ControlError):
    """The store did not answer in time: node 0 stopped or lost, or the network is down."""


class BarrierTimeout(ControlError):
    """Not every node reached the barrier in time."""


# ---------------------------------------------------------------------------------------------
# Values


class JobInfo(NamedTuple):
    """What node 0 announces at ``rankrun/job``: enough for a stranger to know it is one."""

    run_id: str
    host: str
    port: int
    started: str  # node 0's local time, for people to read; never compared
    nnodes: int
    config_hash: str


class NodeInfo(NamedTuple):
    """One agent, as it joins. All fields but node_rank, host and pid must agree across nodes."""

    node_rank: int
    host: str
    pid: int
    nnodes: int
    nproc_per_node: int
    run_id: str
    version: str
    command_hash: str


class FailureFact(NamedTuple):
    """One rank's failure, published by its agent."""

    node_rank: int
    host: str
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
    host: str
    pid: int
    exit_code: int
    ranks: tuple[dict[str, Any], ...]  # summary rows, as --summary-json writes them


class JobStore(NamedTuple):
    """A TCPStore client and the run whose keys (under ``rankrun/<run id>/``) it uses."""

    client: Any
    run_id: str

    def key(self, *parts: object) -> str:
        return "/".join(("rankrun", self.run_id, *(str(p) for p in parts)))

    def clone(self) -> JobStore:
        """The same store over a connection of its own, for a thread that waits on keys."""
        return JobStore(self.client.clone(), self.run_id)


AGREED_FIELDS = {
    "nnodes": "--nnodes",
    "nproc_per_node": "--nproc-per-node",
    "run_id": "the run id",
    "version": "rankrun's version",
    "command_hash": "the training command (hash)",
}


def config_hash(me: NodeInfo) -> str:
    """A short hash of the settings every node must share."""
    text = json.dumps([getattr(me, f) for f in AGREED_FIELDS if f != "run_id"])
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def command_hash(script: str, args: Sequence[str]) -> str:
    """Hash of the command as the user gave it: resolved paths (the venv's python) may differ."""
    return hashlib.sha256("\0".join((script, *args)).encode()).hexdigest()[:12]


# ---------------------------------------------------------------------------------------------
# Hosting and connecting


def torch_distributed() -> Any:
    """``torch.distributed``, imported quietly: no NumPy warning, and no C++ log lines.

    torch's C++ side logs every failed connection try, with a stack trace, to stderr; it reads
    TORCH_CPP_LOG_LEVEL once, when torch is imported. The variable is set for the import only
    (unless the user set it), so the ranks' environments never see it.
    """
    if "torch.distributed" in sys.modules:
        return sys.modules["torch.distributed"]
    ours = "TORCH_CPP_LOG_LEVEL" not in os.environ and "torch" not in sys.modules
    if ours:
        os.environ["TORCH_CPP_LOG_LEVEL"] = "FATAL"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return importlib.import_module("torch.distributed")
    finally:
        if ours:
            del os.environ["TORCH_CPP_LOG_LEVEL"]


def host(addr: str, port: int, *, timeout: float = 30.0) -> Any:
    """Node 0: serve the store on every interface at ``port`` (0: a free one, see ``.port``).

    torch's server connects to itself at ``addr``, so ``addr`` must reach this host.
    """
    dist = torch_distributed()

    def serve() -> Any:
        delta = timedelta(seconds=timeout)
        return dist.TCPStore(addr, port, None, True, delta, wait_for_workers=False)

    try:
        return bounded(serve, timeout + 5, f"hosting the store at {addr}:{port}")
    except RuntimeError as e:
        if "EADDRINUSE" in str(e):
            raise ControlError(
                f"--master-port {port} is in use on this host, perhaps by a stale run: "
                "end it, or choose another --master-port for every node"
            ) from None
        raise ControlError(
            f"could not host the job's store at {addr}:{port}: {_first_line(e)}; node 0 "
            "connects to its own store at --master-addr: is it this host's address?"
        ) from None


def connect(
    addr: str,
    port: int,
    *,
    timeout: float = JOIN_TIMEOUT,
    on_wait: Callable[[str], None] = lambda note: None,
    op_timeout: float = 30.0,
    every: float = WAIT_NOTE_EVERY,
) -> Any:
    """Nodes 1..: a client of node 0's store, waiting up to ``timeout`` for it to come up.

    Calls ``on_wait("waiting for node 0 at host:port (why)")`` about every ``every`` seconds.
    Each try is torch's constructor, which retries a refused connection for up to ``every``
    seconds, in a helper thread: against a listener that accepts but never answers (a stopped
    node 0) it blocks, and stays pending, so it completes if node 0 wakes up. There is no
    plain-socket probe: the server can stall for a reverse DNS lookup after a connection that
    closes without a word. ``op_timeout`` becomes the client's timeout for waiting on a key.
    """
    dist = torch_distributed()
    deadline = time.monotonic() + timeout
    next_note = time.monotonic() + every
    pending: Call[Any] | None = None
    started = 0.0
    why = "nothing answers there yet"
    while True:
        now = time.monotonic()
        if now >= deadline:
            raise Unresponsive(
                f"node 0's store at {addr}:{port} did not answer within {timeout:g} s ({why}): "
                "is node 0 started, and are --master-addr and --master-port the same on every node?"
            )
        if pending is None:
            pending, started = Call(_client(dist, addr, port, min(every, deadline - now))), now
        if pending.wait(min(1.0, max(0.0, deadline - now))):
            try:
                client = pending.result()
                client.set_timeout(timedelta(seconds=op_timeout))
                return client
            except RuntimeError as e:
                pending, why = None, _why(e)
        elif now - started > 3 * every + 5:
            # torch's own retries of a refused connection outlast their timeout, 1.3 to 1.9
            # times unloaded: only a try far past that has met a listener that never answers.
            why = "it accepts connections but has not answered: a stopped process?"
        if time.monotonic() >= next_note:
            on_wait(f"waiting for node 0 at {addr}:{port} ({why})")
            next_note += every


def _client(dist: Any, addr: str, port: int, seconds: float) -> Callable[[], Any]:
    return lambda: dist.TCPStore(addr, port, None, False, timedelta(seconds=seconds))


def _why(error: RuntimeError) -> str:
    text = _first_line(error)
    return "nothing answers there yet" if "trying to connect" in text else text


def announce(client: Any, job: JobInfo) -> None:
    """Node 0, right after ``host``: say whose store this is.

    The server's own client connects at --master-addr; where that is another host running a
    rankrun job, the key is already there, and it is left as it is.
    """
    mine = _dump(job)
    held = client.compare_set("rankrun/job", "", mine)
    if held != mine.encode():
        other = JobInfo(**_load(held))
        raise Stranger(
            _held_by(other, f"this is job {job.run_id}, and --master-addr must be node 0's")
        )


def read_job(client: Any, timeout: float = JOB_KEY_WAIT) -> JobInfo:
    """The job that holds the store; an agent without --rdzv-id adopts its run id."""
    raw = _wait_get(client, "rankrun/job", timeout)
    if raw is None:
        raise Stranger(
            "the store at --master-addr:--master-port holds no rankrun job: another program's "
            "TCPStore? choose another --master-port for every node"
        )
    return JobInfo(**_load(raw))


# ---------------------------------------------------------------------------------------------
# Joining


def join(
    store: JobStore,
    me: NodeInfo,
    timeout: float = JOIN_TIMEOUT,
    on_wait: Callable[[list[int]], None] = lambda missing: None,
    every: float = WAIT_NOTE_EVERY,
) -> list[NodeInfo]:
    """Claim ``me.node_rank``, wait for every node, and check that their settings agree.

    Returns every node's info, by node rank. Calls ``on_wait(missing node ranks)`` about every
    ``every`` seconds while waiting. Raises ``Stranger`` (having written nothing) when the
    store belongs to another run, or to this run after all its nodes joined; otherwise a
    ``JoinError`` whose message is the same on every agent. Call it before any other thread
    uses ``store``: it waits on keys. Its store operations run in a helper thread, so that a
    stopped node 0 ends it as ``Unresponsive`` rather than blocking forever.
    """
    assert store.run_id == me.run_id, (store.run_id, me.run_id)
    notes: queue.SimpleQueue[list[int]] = queue.SimpleQueue()
    call = Call(lambda: _join(store, me, timeout, notes.put, every))
    limit = time.monotonic() + timeout + 2 * ABORT_LINGER + 30
    while not call.wait(min(1.0, max(0.0, limit - time.monotonic()))):
        _drain(notes, on_wait)
        if time.monotonic() >= limit:
            raise Unresponsive(f"node 0's store stopped answering while {me.host} joined")
    _drain(notes, on_wait)
    return call.result()


def _drain(notes: queue.SimpleQueue[list[int]], on_wait: Callable[[list[int]], None]) -> None:
    while not notes.empty():
        on_wait(notes.get())


def _join(
    store: JobStore,
    me: NodeInfo,
    timeout: float,
    on_wait: Callable[[list[int]], None],
    every: float,
) -> list[NodeInfo]:
    deadline = time.monotonic() + timeout
    job = read_job(store.client, min(timeout, JOB_KEY_WAIT))
    # Read first: a stranger must leave the job's keys as they are.
    if job.run_id != me.run_id:
        raise Stranger(_held_by(job, f"this is job {me.run_id}"))
    if store.client.check([store.key("join", "complete")]):
        raise Stranger(_held_by(job, _late(job, me)))
    if me.node_rank >= job.nnodes:
        holder = me._replace(nnodes=job.nnodes, node_rank=0)
        message = _disagreement([holder, me], [0, me.node_rank])
        _abort(store, me, message, Mismatch, member=False)
    mine = _dump(me)
    held = store.client.compare_set(store.key("join", "claim", me.node_rank), "", mine)
    if held != mine.encode():
        if store.client.check([store.key("join", "complete")]):
            raise Stranger(_held_by(job, _late(job, me)))
        message = _duplicate(NodeInfo(**_load(held)), me)
        _abort(store, me, message, DuplicateNodeRank, member=False)
    store.client.add(store.key("hb", me.node_rank), 1)  # every hb key exists once all joined
    if store.client.add(store.key("join", "joined"), 1) == job.nnodes:
        store.client.set(store.key("join", "complete"), "1")
    _wait_all(store, me, job.nnodes, "joined", deadline, on_wait, every)
    claims = [store.key("join", "claim", r) for r in range(job.nnodes)]
    nodes = [NodeInfo(**_load(raw)) for raw in store.client.multi_get(claims)]
    message = _disagreement(nodes, list(range(job.nnodes)))
    if message:
        _abort(store, me, message, Mismatch)
    store.client.add(store.key("join", "agreed"), 1)
    _wait_all(store, me, job.nnodes, "agreed", max(deadline, time.monotonic() + 30), None, every)
    return nodes


def _wait_all(
    store: JobStore,
    me: NodeInfo,
    nnodes: int,
    counter: str,
    deadline: float,
    on_wait: Callable[[list[int]], None] | None,
    every: float,
) -> None:
    """Until ``counter`` reaches ``nnodes``; an abort or the deadline raises, on every agent."""
    next_note = time.monotonic() + every
    while store.client.add(store.key("join", counter), 0) < nnodes:
        _raise_abort(store, me)
        if time.monotonic() >= deadline:
            missing = _missing(store, nnodes)
            _abort(store, me, _not_joined(missing, counter, me), JoinTimeout)
        if on_wait is not None and time.monotonic() >= next_note:
            on_wait(_missing(store, nnodes))
            next_note += every
        time.sleep(POLL)
    _raise_abort(store, me)


def _missing(store: JobStore, nnodes: int) -> list[int]:
    return [r for r in range(nnodes) if not store.client.check([store.key("join", "claim", r)])]


def _abort(
    store: JobStore, me: NodeInfo, message: str, kind: type[JoinError], member: bool = True
) -> NoReturn:
    """Publish ``message`` for every agent, unless another came first; raise the one held."""
    verdict = json.dumps({"kind": kind.__name__, "message": message})
    store.client.compare_set(store.key("join", "abort"), "", verdict)
    _raise_abort(store, me, member)
    raise kind(message)  # not reached: the key is set now


def _raise_abort(store: JobStore, me: NodeInfo, member: bool = True) -> None:
    """Raise the published verdict, if there is one. ``member``: this agent holds its rank."""
    key = store.key("join", "abort")
    if not store.client.check([key]):
        return
    verdict = json.loads(store.client.get(key))
    kind = {c.__name__: c for c in (Mismatch, DuplicateNodeRank, JoinTimeout)}[verdict["kind"]]
    acked = store.client.add(store.key("join", "acked"), 1 if member else 0)
    if member and me.node_rank == 0:  # its exit ends the store: let the others read it first
        joined = store.client.add(store.key("join", "joined"), 0)
        linger = time.monotonic() + ABORT_LINGER
        while acked < joined and time.monotonic() < linger:
            time.sleep(POLL)
            acked = store.client.add(store.key("join", "acked"), 0)
    raise kind(verdict["message"])


def _disagreement(nodes: Sequence[NodeInfo], ranks: Sequence[int]) -> str:
    """``--nproc-per-node: node 0 has 8, node 3 has 4``, one clause per field; '' if none."""
    clauses = []
    for field, label in AGREED_FIELDS.items():
        first = getattr(nodes[0], field)
        odd = [(r, getattr(n, field)) for r, n in zip(ranks, nodes, strict=True)]
        odd = [(r, v) for r, v in odd if v != first]
        if odd:
            shown = ", ".join(f"node {r} has {v}" for r, v in odd[:5])
            more = f", and {len(odd) - 5} more" if len(odd) > 5 else ""
            clauses.append(f"{label}: node {ranks[0]} has {first}, {shown}{more}")
    if not clauses:
        return ""
    return "; ".join(clauses) + ": start every node with the same settings"


def _duplicate(first: NodeInfo, second: NodeInfo) -> str:
    return (
        f"--node-rank {first.node_rank} is claimed by two agents (host {first.host} pid "
        f"{first.pid}, host {second.host} pid {second.pid}): give each node its own --node-rank"
    )


def _not_joined(missing: list[int], counter: str, me: NodeInfo) -> str:
    if counter == "joined" and missing:
        nodes = ", ".join(map(str, missing))
        return f"node {nodes} did not join within the timeout: is rankrun started on every node?"
    return f"the nodes did not all confirm their settings in time (seen by node {me.node_rank})"


def _held_by(job: JobInfo, this: str) -> str:
    return (
        f"port {job.port} on {job.host} is held by rankrun job {job.run_id} "
        f"(started {job.started}); {this}: use another --master-port"
    )


def _late(job: JobInfo, me: NodeInfo) -> str:
    return (
        f"its {job.nnodes} nodes have all joined, and this agent (--node-rank {me.node_rank} "
        f"on {me.host}) is not one of them"
    )


# ---------------------------------------------------------------------------------------------
# One attempt: failures, its end, and each node's result


def publish_failure(store: JobStore, attempt: int, fact: FailureFact) -> int:
    """Record a rank's failure; returns its order in the store. Order 1 is the root cause.

    The error text is cut to its last ``ERROR_TEXT_MAX`` characters.
    """
    fact = fact._replace(error_text=fact.error_text[-ERROR_TEXT_MAX:])
    order: int = store.client.add(store.key("attempt", attempt, "failures"), 1)
    store.client.set(store.key("attempt", attempt, "failure", order), _dump(fact))
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
    raw = _peek(store.client, key)
    return None if raw is None else FailureFact(**_load(raw))


def end_attempt(store: JobStore, attempt: int, reason: str) -> str:
    """End the attempt everywhere; returns the reason that holds (the first one given)."""
    held: bytes = store.client.compare_set(store.key("attempt", attempt, "end"), "", reason)
    return held.decode()


def attempt_ended(store: JobStore, attempt: int) -> str | None:
    """Why the attempt ended, or None while it runs. Does not wait."""
    raw = _peek(store.client, store.key("attempt", attempt, "end"))
    return None if raw is None else raw.decode()


def publish_result(store: JobStore, attempt: int, result: NodeResult) -> None:
    store.client.set(store.key("attempt", attempt, "result", result.node_rank), _dump(result))
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
        raw = _peek(store.client, key)
        if raw is not None:
            fields = _load(raw)
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


# ---------------------------------------------------------------------------------------------
# Heartbeats


class Heartbeat:
    """Each agent bumps ``hb/<node>``; a node whose counter stands still for ``timeout`` is lost.

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
    ) -> None:
        self.store = store
        self.node_rank = node_rank
        self.interval = interval
        self.timeout = timeout
        self.clock = clock
        self.error: str | None = None  # the last store error, while ticks fail
        self._mine = store.key("hb", node_rank)
        self._others = [r for r in range(nnodes) if r != node_rank]
        self._keys = [store.key("hb", r) for r in self._others]
        now = clock()
        self._last_ok = now
        self._seen: dict[int, tuple[bytes, float]] = {r: (b"", now) for r in self._others}

    def tick(self) -> list[int]:
        """Beat, look at the others, and return the nodes lost. Store errors are kept, not raised.

        May block for as long as the store does not answer (see ``cut_off``).
        """
        try:
            self.store.client.add(self._mine, 1)
            values = self.store.client.multi_get(self._keys) if self._keys else []
        except RuntimeError as e:
            self.error = _first_line(e)
            return []
        now = self.clock()
        self._last_ok, self.error = now, None
        for r, value in zip(self._others, values, strict=True):
            if value != self._seen[r][0]:
                self._seen[r] = (value, now)
        return self.lost()

    def lost(self) -> list[int]:
        """Nodes whose counter has not changed for ``timeout``, as of the last good tick."""
        return [r for r, (_, t) in self._seen.items() if self._last_ok - t > self.timeout]

    def cut_off(self) -> bool:
        """Whether this agent's own store operations have not succeeded for ``timeout``."""
        return self.clock() - self._last_ok > self.timeout

    def quiet_for(self) -> float:
        """Seconds since this agent's last successful tick."""
        return self.clock() - self._last_ok


# ---------------------------------------------------------------------------------------------
# Helpers


class Call(Generic[T]):
    """``fn()`` in a daemon thread, to be waited for with a limit and abandoned after it.

    Store calls that hang on a stopped or unreachable server release the GIL and do not keep
    the process from exiting, so a thread left behind costs a thread, nothing more.
    """

    def __init__(self, fn: Callable[[], T]) -> None:
        self._fn = fn
        self._done = threading.Event()
        self._value: list[T] = []
        self._error: list[BaseException] = []
        threading.Thread(target=self._run, name="rankrun-store-call", daemon=True).start()

    def _run(self) -> None:
        try:
            self._value.append(self._fn())
        except BaseException as e:
            self._error.append(e)
        finally:
            self._done.set()

    def wait(self, timeout: float) -> bool:
        return self._done.wait(timeout)

    def result(self) -> T:
        assert self._done.is_set()
        if self._error:
            raise self._error[0]
        return self._value[0]


def bounded(fn: Callable[[], T], timeout: float, what: str) -> T:
    """``fn()``, or ``Unresponsive`` if it has not returned within ``timeout`` seconds."""
    call = Call(fn)
    if not call.wait(timeout):
        raise Unresponsive(f"{what}: the store did not answer within {timeout:g} s")
    return call.result()


def _peek(client: Any, key: str) -> bytes | None:
    """The value of ``key``, or None if it is not set. Does not wait."""
    if not client.check([key]):
        return None
    value: bytes = client.get(key)
    return value


def _wait_get(client: Any, key: str, timeout: float) -> bytes | None:
    deadline = time.monotonic() + timeout
    while (value := _peek(client, key)) is None and time.monotonic() < deadline:
        time.sleep(POLL)
    return value


def _dump(value: NamedTuple) -> str:
    return json.dumps(value._asdict(), separators=(",", ":"))


def _load(raw: bytes) -> dict[str, Any]:
    fields: dict[str, Any] = json.loads(raw)
    return fields


def _first_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return lines[0] if lines else type(error).__name__
