"""Joining: each agent claims its node rank, waits for the others, and checks they agree."""

from __future__ import annotations

import hashlib
import json
import os
import queue
import time
from collections.abc import Callable, Sequence
from typing import NamedTuple, NoReturn

from rankrun.job.control.calls import POLL, Call, ControlError, Unresponsive, dump, first_line, load
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


def join(
    store: JobStore,
    me: NodeInfo,
    timeout: float = JOIN_TIMEOUT,
    on_wait: Callable[[list[int]], None] = lambda missing: None,
    every: float = WAIT_NOTE_EVERY,
    command: str = "",
) -> list[NodeInfo]:
    """Claim ``me.node_rank``, wait for every node, and check that their settings agree.

    ``command`` (``command_line()``) is kept beside the claim, out of it: read only when the
    commands differ, so that nodes do not read every other node's command line.

    Returns every node's info, by node rank. Calls ``on_wait(missing node ranks)`` about every
    ``every`` seconds while waiting. Raises ``Stranger`` (having written nothing) when the
    store belongs to another run, or to this run after all its nodes joined; otherwise a
    ``JoinError`` whose message is the same on every agent. Call it before any other thread
    uses ``store``: it waits on keys. Its store operations run in a helper thread, so that a
    stopped node 0 ends it as ``Unresponsive`` rather than blocking forever.
    """
    assert store.run_id == me.run_id, (store.run_id, me.run_id)
    notes: queue.SimpleQueue[list[int]] = queue.SimpleQueue()
    call = Call(lambda: _join(store, me, timeout, notes.put, every, command))
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


def _drain(notes: queue.SimpleQueue[list[int]], on_wait: Callable[[list[int]], None]) -> None:
    while not notes.empty():
        on_wait(notes.get())


def _join(
    store: JobStore,
    me: NodeInfo,
    timeout: float,
    on_wait: Callable[[list[int]], None],
    every: float,
    command: str,
) -> list[NodeInfo]:
    deadline = time.monotonic() + timeout
    job = read_job(store.client, min(timeout, JOB_KEY_WAIT))
    # Read first: a stranger must leave the job's keys as they are.
    if job.run_id != me.run_id:
        raise Stranger(held_by(job, f"this is job {me.run_id}"))
    if store.client.check([store.key("join", "complete")]):
        raise Stranger(held_by(job, _late(job, me)))
    if me.node_rank >= job.nnodes:
        holder = me._replace(nnodes=job.nnodes, node_rank=0)
        message = _disagreement([holder, me], [0, me.node_rank])
        _abort(store, me, message, Mismatch, member=False)
    mine = dump(me)
    held = store.client.compare_set(store.key("join", "claim", me.node_rank), "", mine)
    if held != mine.encode():
        if store.client.check([store.key("join", "complete")]):
            raise Stranger(held_by(job, _late(job, me)))
        message = _duplicate(NodeInfo(**load(held)), me)
        _abort(store, me, message, DuplicateNodeRank, member=False)
    store.client.set(store.key("join", "command", me.node_rank), command)
    store.client.add(store.key("hb", me.node_rank), 1)  # every hb key exists once all joined
    if store.client.add(store.key("join", "joined"), 1) == job.nnodes:
        store.client.set(store.key("join", "complete"), "1")
    _wait_all(store, me, job.nnodes, "joined", deadline, on_wait, every)
    claims = [store.key("join", "claim", r) for r in range(job.nnodes)]
    nodes = [NodeInfo(**load(raw)) for raw in store.client.multi_get(claims)]
    message = _disagreement(nodes, list(range(job.nnodes)), lambda r: _commands(store, r))
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
    keys = [store.key("join", "command", r) for r in ranks]
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


def _duplicate(first: NodeInfo, second: NodeInfo) -> str:
    return (
        f"--node-rank {first.node_rank} is claimed by two agents (host {first.hostname} pid "
        f"{first.pid}, host {second.hostname} pid {second.pid}): give each node its own --node-rank"
    )


def _not_joined(missing: list[int], counter: str, me: NodeInfo) -> str:
    if counter == "joined" and missing:
        nodes = ", ".join(map(str, missing))
        return f"node {nodes} did not join within the timeout: is rankrun started on every node?"
    return f"the nodes did not all confirm their settings in time (seen by node {me.node_rank})"


def _late(job: JobInfo, me: NodeInfo) -> str:
    return (
        f"its {job.nnodes} nodes have all joined, and this agent (--node-rank {me.node_rank} "
        f"on {me.hostname}) is not one of them"
    )
