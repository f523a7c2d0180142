"""Questions to every node, such as the stacks of a stalled job, and their answers.

Node 0's agent, or a ``rankrun stacks`` on node 0, asks: it writes the question's number over
every node's heartbeat key, in one request, and each agent reads it in its next beat's answer
(``Heartbeat.asked``): no agent spends a request or a connection on waiting for questions,
which are rare, and a question reaches every node within one heartbeat interval. Each answers
under a key of its node; the asker waits for all the answers at once, bounded: a node that
can't answer in time is named, not waited for.
"""

from __future__ import annotations

import json
from typing import NamedTuple

from rankrun.job.control.calls import bounded, wait_for
from rankrun.job.control.heartbeat import ASK
from rankrun.job.control.store import JobStore

ANSWER_MAX = 64 * 1024  # bytes of one node's answer: 4,096 nodes' answers stay 256 MiB at most


class Ask(NamedTuple):
    number: int
    what: str  # "stacks"
    reason: str  # why, in words, for the nodes' logs


def ask(store: JobStore, what: str, reason: str, nodes: list[int]) -> int:
    """Ask ``nodes``; returns the question's number."""
    number: int = store.client.add(store.keys.asks(), 1)
    store.client.set(store.keys.ask(number), json.dumps({"what": what, "reason": reason}))
    beats = [store.keys.heartbeat(r) for r in nodes]
    store.client.multi_set(beats, [ASK + str(number).encode()] * len(beats))
    return number


def question(store: JobStore, number: int) -> Ask:
    """Question ``number``, once a beat has brought its number. Does not wait."""
    fields = json.loads(store.client.get(store.keys.ask(number)))
    return Ask(number, fields["what"], fields["reason"])


def answer(store: JobStore, number: int, node: int, text: str) -> None:
    """This node's answer; cut to ``ANSWER_MAX`` bytes, which the asker sees as cut JSON."""
    store.client.set(store.keys.answer(number, node), text.encode()[:ANSWER_MAX])


def await_answers(
    store: JobStore, number: int, nodes: list[int], timeout: float
) -> dict[int, bytes]:
    """Every answer to question ``number`` that came within ``timeout``, by node."""
    keys = {r: store.keys.answer(number, r) for r in nodes}

    def collect() -> dict[int, bytes]:
        mine = store.clone()
        wait_for(mine.client, list(keys.values()), timeout)
        there = [r for r, key in keys.items() if mine.client.check([key])]
        raws = mine.client.multi_get([keys[r] for r in there]) if there else []
        return dict(zip(there, raws, strict=True))

    return bounded(collect, timeout + 10, "the nodes' answers")
