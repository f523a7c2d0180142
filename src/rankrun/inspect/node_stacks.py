"""Every rank's stack on this node, digested, with its place in the collective sequence.

py-spy reads every rank at once. A rank it can't read (py-spy missing, ptrace refused) and
that serves torch's worker server (``worker_main``) gives its stack by ``dump_traceback``
instead, which needs no ptrace. Ranks that serve also give their flight recorder's last
collective. The result holds per-rank values keyed by ``RankKey``, so that node 0 can put
every node's together (``digest.group``, ``flight_recorder.behind_lines``).
"""

from __future__ import annotations

from collections.abc import Sequence

from rankrun.base.values import NamedTuple
from rankrun.inspect.digest import Digest, RankKey, digest, group, verdict_lines
from rankrun.inspect.flight_recorder import Collective, behind_lines, last_collective
from rankrun.inspect.stacks import StackDump, StacksError, dump, format_dumps
from rankrun.inspect.worker_server import NotServing, ask

# The worker server answers from a thread of its own; a rank that doesn't serve answers at once.
_SERVER_TIMEOUT_S = 5.0


class Target(NamedTuple):
    rank: int
    pid: int
    socket: str | None
    """Its ``TORCH_WORKER_SERVER_SOCKET``, or None."""


class NodeStacks(NamedTuple):
    digests: dict[RankKey, Digest]
    collectives: dict[RankKey, Collective]
    """The ranks whose flight recorder answered."""
    text: str
    """Every rank's full stack, each line labelled ``[rankN]: ``."""


def read_node(
    targets: Sequence[Target],
    timeout: float,
    *,
    node_rank: int | None = None,
    host: str | None = None,
) -> NodeStacks:
    """Read the ranks' stacks and flight recorders. Raises ``StacksError`` when py-spy is
    missing and no rank serves its own stack (the message is py-spy's fix)."""
    dumps, missing = _py_spy(targets, timeout)
    serving = [t for t in targets if t.socket]
    unread = {t.rank for t in targets} - {_rank(d) for d in dumps if d.error is None}
    asks = [(t, "dump_traceback") for t in serving if t.rank in unread]
    asks += [(t, "fr_trace_json") for t in serving]
    answers = _ask_all(asks)
    served = [StackDump(f"rank{t.rank}", t.pid, body.decode(errors="replace"), None)
              for (t, handler), body in zip(asks, answers, strict=True)
              if handler == "dump_traceback" and body is not None]  # fmt: skip
    if missing is not None and not served:
        raise missing
    served_ranks = {_rank(d) for d in served}
    dumps = [d for d in dumps if _rank(d) not in served_ranks] + served
    dumps.sort(key=lambda d: _rank(d))
    key = {t.rank: RankKey(t.rank, node_rank, host) for t in targets}
    texts: dict[int, str] = {}
    for d in dumps:
        if d.error is None:
            texts.setdefault(_rank(d), d.text)
    digests = {key[t.rank]: digest(texts.get(t.rank, "")) for t in targets}
    collectives = {}
    for (t, handler), body in zip(asks, answers, strict=True):
        found = last_collective(body) if handler == "fr_trace_json" and body else None
        if found is not None:
            collectives[key[t.rank]] = found
    return NodeStacks(digests, collectives, format_dumps(dumps))


def verdict(stacks: NodeStacks) -> list[str]:
    """The grouped stacks, then who is behind on the collective sequence."""
    return verdict_lines(group(stacks.digests)) + behind_lines(stacks.collectives)


def _rank(d: StackDump) -> int:
    return int(d.label.removeprefix("rank"))


def _py_spy(
    targets: Sequence[Target], timeout: float
) -> tuple[list[StackDump], StacksError | None]:
    try:
        pids = [(f"rank{t.rank}", t.pid) for t in targets]
        return dump(pids, timeout, full_filenames=True), None
    except StacksError as e:
        return [], e


def _ask_all(asks: Sequence[tuple[Target, str]]) -> list[bytes | None]:
    """Each handler's answer, None where there is none; all asked at once."""
    if not asks:
        return []
    from concurrent.futures import ThreadPoolExecutor

    def one(item: tuple[Target, str]) -> bytes | None:
        target, handler = item
        assert target.socket is not None
        try:
            return ask(target.socket, handler, _SERVER_TIMEOUT_S)
        except NotServing:
            return None

    with ThreadPoolExecutor(max_workers=min(32, len(asks))) as pool:
        return list(pool.map(one, asks))
