"""Joining: each agent claims its node rank; node 0 checks that the claims agree, and says go."""

from __future__ import annotations

import hashlib
import json
import os
import queue
import time
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple, NoReturn

from rankrun.job.control.calls import (
    Call,
    ControlError,
    Unresponsive,
    dump,
    first_line,
    load,
    wait_for,
)
from rankrun.job.control.store import (
    JOB_KEY_WAIT,
    JOIN_TIMEOUT,
    WAIT_NOTE_EVERY,
    JobInfo,
    JobStore,
    Stranger,
    held_by,
    read_job,
)

ABORT_LINGER = 5.0  # how long node 0 keeps serving so that every agent reads an abort
MISSING_SHOWN = 10  # node ranks named in a note or error about missing nodes


class JoinError(ControlError):
    """The nodes could not form the job. Every agent raises the same message."""


class Mismatch(JoinError):
    """The nodes were started with different settings."""


class DuplicateNodeRank(JoinError):
    """Two agents were given the same --node-rank."""


class JoinTimeout(JoinError):
    """Not every node joined in time."""


class NodeInfo(NamedTuple):
    """One agent, as it joins. All fields but node_rank, hostname and pid must agree across
    nodes."""

    node_rank: int
    hostname: str
    pid: int
    nnodes: int
    nproc_per_node: int
    run_id: str
    version: str
    command_hash: str


AGREED_FIELDS = {
    "nnodes": "--nnodes",
    "nproc_per_node": "--nproc-per-node",
    "run_id": "the run id",
    "version": "rankrun's version",
    "command_hash": "the training command (hash)",
}
COMMAND_KEPT = 1000  # characters of a node's command line kept in the store, for the message
COMMAND_SHOWN = 60  # characters of each command line shown, around the first difference


def config_hash(me: NodeInfo) -> str:
    """A short hash of the settings every node must share."""
    text = json.dumps([getattr(me, f) for f in AGREED_FIELDS if f != "run_id"])
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def command_hash(script: str, args: Sequence[str]) -> str:
    """Hash of the command as the user gave it: resolved paths (the venv's python) may differ."""
    return hashlib.sha256("\0".join((script, *args)).encode()).hexdigest()[:12]


def command_line(script: str, args: Sequence[str]) -> str:
    """The command as the user gave it, as a shell would read it, for a mismatch's message."""
    import shlex

    return shlex.join((script, *args))[:COMMAND_KEPT]


class Joined(NamedTuple):
    """What an agent knows once the job is formed."""

    nodes: dict[int, NodeInfo]
    """By node rank: every node on node 0; node 0 and this node on the others."""
    opened: str
    """What node 0 handed every agent with its go (the first attempt's workers' store)."""
    node_rank: int
    """This agent's: the one it was given, or the ticket it took."""


def join(
    store: JobStore,
    me: NodeInfo,
    timeout: float = JOIN_TIMEOUT,
    on_wait: Callable[[str], None] = lambda note: None,
    every: float = WAIT_NOTE_EVERY,
    command: str = "",
    opening: Callable[[], str] = lambda: "",
    ticketed: bool = False,
) -> Joined:
    """Claim ``me.node_rank`` and wait for node 0's verdict on the job.

    ``ticketed``: this agent was given no node rank, and claims the next ticket instead (1,
    2, ... in the order agents ask; node 0 is the agent that hosts the store), which the
    result's ``node_rank`` says.

    Every agent claims its rank and waits on one key. Node 0 alone reads the claims, once all
    are in, checks that they agree, calls ``opening()`` and publishes one verdict: go, with
    what ``opening()`` returned, or the one-line error every agent raises. ``command``
    (``command_line()``) is kept beside the claim, read only when the commands differ.

    Calls ``on_wait(note)`` about every ``every`` seconds while waiting: node 0's note names
    the missing nodes. Raises ``Stranger`` (having written nothing, but for a ticket past the
    last node rank) when the store belongs to another run, or to this run after all its nodes
    joined; otherwise a ``JoinError`` whose
    message is the same on every agent. Call it before any other thread uses ``store``. Its
    store operations run in a helper thread, so that a stopped node 0 ends it as
    ``Unresponsive`` rather than blocking forever.
    """
    assert store.run_id == me.run_id, (store.run_id, me.run_id)
    notes: queue.SimpleQueue[str] = queue.SimpleQueue()
    call = Call(lambda: _join(store, me, timeout, notes.put, every, command, opening, ticketed))
    limit = time.monotonic() + timeout + 2 * ABORT_LINGER + 30
    while not call.wait(min(1.0, max(0.0, limit - time.monotonic()))):
        _drain(notes, on_wait)
        if time.monotonic() >= limit:
            raise Unresponsive(f"node 0's store stopped answering while {me.hostname} joined")
    _drain(notes, on_wait)
    try:
        return call.result()
    except RuntimeError as e:  # DistNetworkError: the store's process is gone
        raise Unresponsive(
            f"node 0's store closed while {me.hostname} joined ({first_line(e)}): node 0 stopped "
            "or failed, and its output says why"
        ) from None


def _drain(notes: queue.SimpleQueue[str], on_wait: Callable[[str], None]) -> None:
    while not notes.empty():
        on_wait(notes.get())


def _join(
    store: JobStore,
    me: NodeInfo,
    timeout: float,
    on_wait: Callable[[str], None],
    every: float,
    command: str,
    opening: Callable[[], str],
    ticketed: bool,
) -> Joined:
    deadline = time.monotonic() + timeout
    keys, client = store.keys, store.client
    job = read_job(client, min(timeout, JOB_KEY_WAIT))
    # Read first: a stranger must leave the job's keys as they are.
    if job.run_id != me.run_id:
        raise Stranger(held_by(job, f"this is job {me.run_id}"))
    if client.check([keys.complete()]):
        raise Stranger(held_by(job, _late(job, me, ticketed)))
    if ticketed:
        me = me._replace(node_rank=_ticket(store, job, me))
    elif me.node_rank >= job.nnodes:
        holder = me._replace(nnodes=job.nnodes, node_rank=0)
        message = _disagreement([holder, me], [0, me.node_rank])
        _abort(store, me, message, Mismatch, member=False)
    mine = dump(me)
    held = client.compare_set(keys.claim(me.node_rank), "", mine)
    if held != mine.encode():
        if client.check([keys.complete()]):
            raise Stranger(held_by(job, _late(job, me, ticketed)))
        message = _duplicate(NodeInfo(**load(held)), me, ticketed)
        _abort(store, me, message, DuplicateNodeRank, member=False)
    client.set(keys.command(me.node_rank), command)
    client.add(keys.heartbeat(me.node_rank), 1)  # node 0's multi_get finds every counter
    if client.add(keys.joined(), 1) == job.nnodes:
        client.set(keys.complete(), "1")
        client.set(keys.news(), "1")
    if me.node_rank == 0:
        return _decide(store, me, job.nnodes, deadline, on_wait, every, opening)
    return _await_verdict(store, me, job.nnodes, on_wait, every)


def _decide(
    store: JobStore,
    me: NodeInfo,
    nnodes: int,
    deadline: float,
    on_wait: Callable[[str], None],
    every: float,
    opening: Callable[[], str],
) -> Joined:
    """Node 0: wait for every claim (or an abort), read them once, and give the verdict."""
    keys, client = store.keys, store.client
    next_note = time.monotonic() + every
    while not wait_for(client, [keys.news()], min(next_note, deadline) - time.monotonic()):
        if time.monotonic() >= deadline:
            _abort(store, me, _not_joined(_missing(store, nnodes)), JoinTimeout)
        if time.monotonic() >= next_note:
            missing = _missing(store, nnodes)
            on_wait(_waiting_for(missing, nnodes))
            next_note += every
    if client.check([keys.verdict()]):  # an abort woke it
        _raise_verdict(store, me)
    claims = client.multi_get([keys.claim(r) for r in range(nnodes)])
    nodes = [NodeInfo(**load(raw)) for raw in claims]
    message = _disagreement(nodes, list(range(nnodes)), lambda r: _commands(store, r))
    if message:
        _abort(store, me, message, Mismatch)
    go = json.dumps({"kind": "go", "node0": me._asdict(), "opened": opening()})
    client.compare_set(keys.verdict(), "", go)
    _raise_verdict(store, me)  # an abort that came first holds
    return Joined({n.node_rank: n for n in nodes}, json.loads(go)["opened"], me.node_rank)


def _await_verdict(
    store: JobStore, me: NodeInfo, nnodes: int, on_wait: Callable[[str], None], every: float
) -> Joined:
    """Any node but 0: block on the verdict; a note now and then says how many are missing."""
    keys, client = store.keys, store.client
    while not wait_for(client, [keys.verdict()], every):
        joined = client.add(keys.joined(), 0)
        on_wait(f"waiting for {nnodes - joined} of {nnodes} nodes to join (node 0 names them)")
    verdict = _raise_verdict(store, me)
    node0 = NodeInfo(**verdict["node0"])
    return Joined({0: node0, me.node_rank: me}, verdict["opened"], me.node_rank)


def _ticket(store: JobStore, job: JobInfo, me: NodeInfo) -> int:
    """The next node rank, for an agent given none: 1, 2, ... in the order they ask."""
    number = int(store.client.add(store.keys.ticket(), 1))
    if number >= job.nnodes:  # every node rank is handed out: a stranger, as one that is late
        raise Stranger(held_by(job, _late(job, me, ticketed=True)))
    return number


def _missing(store: JobStore, nnodes: int) -> list[int]:
    """Node 0 only, every ``every`` seconds while it waits: one check per node."""
    return [r for r in range(nnodes) if not store.client.check([store.keys.claim(r)])]


def _waiting_for(missing: list[int], nnodes: int) -> str:
    shown = ", ".join(map(str, missing[:MISSING_SHOWN]))
    more = f" and {len(missing) - MISSING_SHOWN} more" if len(missing) > MISSING_SHOWN else ""
    return f"waiting for node {shown}{more} to join ({len(missing)} of {nnodes:,} missing)"


def _abort(
    store: JobStore, me: NodeInfo, message: str, kind: type[JoinError], member: bool = True
) -> NoReturn:
    """Publish ``message`` for every agent, unless another came first; raise the one held."""
    verdict = json.dumps({"kind": kind.__name__, "message": message})
    store.client.compare_set(store.keys.verdict(), "", verdict)
    store.client.set(store.keys.news(), "1")
    _raise_verdict(store, me, member)
    raise kind(message)  # not reached: the key is set now


def _raise_verdict(store: JobStore, me: NodeInfo, member: bool = True) -> dict[str, Any]:
    """The published verdict: raised if it is an abort, returned if it is go.

    ``member``: this agent holds its rank, and acknowledges an abort; node 0 serves until
    every member has (its exit ends the store), for at most ``ABORT_LINGER``.
    """
    keys, client = store.keys, store.client
    verdict: dict[str, Any] = json.loads(client.get(keys.verdict()))
    if verdict["kind"] == "go":
        return verdict
    kind = {c.__name__: c for c in (Mismatch, DuplicateNodeRank, JoinTimeout)}[verdict["kind"]]
    if member and client.add(keys.acked(), 1) >= client.add(keys.joined(), 0):
        client.set(keys.acked_all(), "1")
    if member and me.node_rank == 0:
        wait_for(client, [keys.acked_all()], ABORT_LINGER)
    raise kind(verdict["message"])


def _disagreement(
    nodes: Sequence[NodeInfo],
    ranks: Sequence[int],
    commands: Callable[[list[int]], list[str]] | None = None,
) -> str:
    """``--nproc-per-node: node 0 has 8, node 3 has 4``, one clause per field; '' if none.

    Differing commands are shown as command lines, read through ``commands(node ranks)``,
    where every node shown kept one; as hashes otherwise.
    """
    clauses = []
    for field, label in AGREED_FIELDS.items():
        first = getattr(nodes[0], field)
        odd = [(r, getattr(n, field)) for r, n in zip(ranks, nodes, strict=True)]
        odd = [(r, v) for r, v in odd if v != first]
        if not odd:
            continue
        more = f", and {len(odd) - 5} more" if len(odd) > 5 else ""
        shown = [(ranks[0], first), *odd[:5]]
        if field == "command_hash" and commands is not None:
            lines = commands([r for r, _ in shown])
            if all(lines):
                runs = zip(shown, _shortened(lines), strict=True)
                said = ", ".join(f"node {r} runs {line}" for (r, _), line in runs)
                clauses.append(f"the training command differs: {said}{more}")
                continue
        said = ", ".join(f"node {r} has {v}" for r, v in shown)
        clauses.append(f"{label}: {said}{more}")
    if not clauses:
        return ""
    return "; ".join(clauses) + ": start every node with the same settings"


def _commands(store: JobStore, ranks: list[int]) -> list[str]:
    keys = [store.keys.command(r) for r in ranks]
    if not store.client.check(keys):  # a node of a version that kept none: get would wait
        return [""] * len(keys)
    return [raw.decode(errors="replace") for raw in store.client.multi_get(keys)]


def _shortened(lines: list[str]) -> list[str]:
    """Each command line, quoted, cut to ``COMMAND_SHOWN`` characters around where it first
    differs from the first one (the first one: from the second)."""
    shown = []
    for i, line in enumerate(lines):
        other = lines[1] if i == 0 else lines[0]
        same = len(os.path.commonprefix([line, other]))
        start = max(0, min(same - COMMAND_SHOWN // 3, len(line) - COMMAND_SHOWN))
        cut = line[start : start + COMMAND_SHOWN]
        head, tail = ("..." if start else ""), ("..." if start + COMMAND_SHOWN < len(line) else "")
        shown.append(f'"{head}{cut}{tail}"')
    return shown


def _duplicate(first: NodeInfo, second: NodeInfo, ticketed: bool = False) -> str:
    if ticketed:
        return (
            f"node rank {first.node_rank}, handed out at the join to host {second.hostname} pid "
            f"{second.pid}, is also given by --node-rank to host {first.hostname} pid "
            f"{first.pid}: give every node its own --node-rank, or none"
        )
    return (
        f"--node-rank {first.node_rank} is claimed by two agents (host {first.hostname} pid "
        f"{first.pid}, host {second.hostname} pid {second.pid}): give each node its own --node-rank"
    )


def _not_joined(missing: list[int]) -> str:
    nodes = ", ".join(map(str, missing[:MISSING_SHOWN]))
    more = f" and {len(missing) - MISSING_SHOWN} more" if len(missing) > MISSING_SHOWN else ""
    return f"node {nodes}{more} did not join within the timeout: is rankrun started on every node?"


def _late(job: JobInfo, me: NodeInfo, ticketed: bool = False) -> str:
    this = "no --node-rank" if ticketed else f"--node-rank {me.node_rank}"
    return (
        f"its {job.nnodes} nodes have all joined, and this agent ({this} on {me.hostname}) "
        "is not one of them"
    )
