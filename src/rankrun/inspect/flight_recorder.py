"""Which ranks are behind on the collective sequence, from torch's flight recorder.

Each rank that serves ``fr_trace_json`` (see ``worker_server``) records its last collectives
when ``TORCH_FR_BUFFER_SIZE`` is set, gloo's included: each entry has a ``collective_seq_id``
that counts the collectives of its process group. Only the default process group (id 0)
is compared, since every rank is in it. ``behind_lines()`` is a pure function over each
rank's last entered collective, so that ranks of several nodes can be judged together.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

from rankrun.base.values import NamedTuple
from rankrun.inspect.digest import RankKey
from rankrun.output.rank_ranges import fold


class Collective(NamedTuple):
    seq: int
    """The collective's number in the default process group, from 1."""
    op: str
    """``all_reduce``, as torch names it, without the backend's prefix."""
    done: bool
    """Whether the rank has finished it."""


def last_collective(trace: bytes) -> Collective | None:
    """The last collective a rank entered, from its ``fr_trace_json``; None if none is
    recorded (the recorder is off) or the answer can't be read."""
    try:
        entries = json.loads(trace).get("entries") or []
    except (ValueError, AttributeError):
        return None
    last = None
    for e in entries:
        if str(e.get("pg_id")) != "0" or e.get("is_p2p"):
            continue
        if last is None or e.get("collective_seq_id", 0) > last.get("collective_seq_id", 0):
            last = e
    if last is None or not last.get("collective_seq_id"):
        return None
    op = str(last.get("profiling_name", "collective")).rsplit(":", 1)[-1]
    done = bool(last.get("retired")) or last.get("state") == "completed"
    return Collective(int(last["collective_seq_id"]), op, done)


def behind_lines(collectives: Mapping[RankKey, Collective]) -> list[str]:
    """``rank 13 never entered all_reduce #641 (ranks 0-12,14-15 wait in it)``: the ranks
    behind the furthest, grouped by where they stopped. Empty when no rank records."""
    if not collectives:
        return []
    furthest = max(c.seq for c in collectives.values())
    ahead = sorted(k.rank for k, c in collectives.items() if c.seq == furthest)
    op = next(c.op for c in collectives.values() if c.seq == furthest)
    waiting = not all(c.done for c in collectives.values() if c.seq == furthest)
    they = f"{'rank' if len(ahead) == 1 else 'ranks'} {fold(ahead)}"
    then = f"{they} {'wait in it' if waiting else 'finished it'}"
    by_seq: dict[int, list[int]] = {}
    for key, c in collectives.items():
        if c.seq < furthest:
            by_seq.setdefault(c.seq, []).append(key.rank)
    if not by_seq:
        return [f"every rank entered {op} #{furthest}; none is behind on collectives"]
    lines = []
    for seq in sorted(by_seq):
        ranks = by_seq[seq]
        who = f"{'rank' if len(ranks) == 1 else 'ranks'} {fold(ranks)}"
        if seq == furthest - 1:
            lines.append(f"{who} never entered {op} #{furthest} ({then})")
        else:
            lines.append(f"{who} stopped after collective #{seq}; {op} #{furthest} ({then})")
    return lines
