"""A stalled job across nodes: each node's answer, and node 0's grouped verdict.

Each node groups its ranks' equal digests before it answers, so that an answer is a few
groups, not a stack per rank: a digest is at most 2 KiB (``inspect.digest``), and an answer
at most ``control.ANSWER_MAX`` bytes, whatever the node's rank count. Node 0 puts every
node's groups together and names the smallest groups first, the odd rank out being usually
the culprit; then the ranks behind on the collective sequence, where the flight recorder
says.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence

from rankrun.inspect.digest import Digest, RankKey, from_json, group, verdict_lines
from rankrun.inspect.flight_recorder import Collective, behind_lines
from rankrun.inspect.node_stacks import NodeStacks
from rankrun.output.rank_ranges import fold


def node_answer(stacks: NodeStacks | None, node_rank: int, hostname: str) -> str:
    """This node's answer, as JSON: its ranks grouped by digest, and their last collectives."""
    groups: dict[Digest, list[int]] = {}
    collectives = []
    if stacks is not None:
        for key, frames in stacks.digests.items():
            groups.setdefault(frames, []).append(key.rank)
        collectives = [{"rank": k.rank, **c._asdict()} for k, c in stacks.collectives.items()]
    shown = [{"ranks": ranks, "frames": [f._asdict() for f in frames]}
             for frames, ranks in groups.items()]  # fmt: skip
    answer = {"node": node_rank, "host": hostname, "groups": shown, "collectives": collectives}
    return json.dumps(answer, separators=(",", ":"))


def job_verdict(
    reason: str, answers: Mapping[int, bytes], asked: Sequence[int], waited: float
) -> list[str]:
    """The verdict's lines: what stalled, one line per group of ranks, smallest first, who
    is behind on collectives; then the nodes that did not answer within ``waited`` s."""
    digests: dict[RankKey, Digest] = {}
    collectives: dict[RankKey, Collective] = {}
    unread = []
    for node, raw in sorted(answers.items()):
        try:
            answer = json.loads(raw)
        except ValueError:  # cut at ANSWER_MAX
            unread.append(node)
            continue
        host = answer["host"]
        for g in answer["groups"]:
            frames = from_json(g["frames"])
            digests.update((RankKey(rank, node, host), frames) for rank in g["ranks"])
        for c in answer["collectives"]:
            key = RankKey(c.pop("rank"), node, host)
            collectives[key] = Collective(**c)
    nodes = len({key.node_rank for key in digests})
    lines = [f"{reason} ({len(digests)} ranks on {nodes} node{'s' if nodes != 1 else ''})"]
    lines.extend(f"  {line}" for line in verdict_lines(group(digests)))
    lines.extend(f"  {line}" for line in behind_lines(collectives))
    silent = [r for r in asked if r not in answers]
    if silent:
        lines.append(f"  node {fold(silent)}: no stacks within {waited:g} s")
    if unread:
        lines.append(f"  node {fold(unread)}: stacks too large to read")
    return lines
