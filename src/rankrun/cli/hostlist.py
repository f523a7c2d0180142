"""Slurm hostlist expressions (``gpu[01-04,07],cpu-a[1-2]``), expanded without Slurm.

Inside an srun step the node list arrives only in this compressed form, and every node must
pick the same first host as its rendezvous address. ``scontrol show hostnames`` would do it,
but a launcher should neither need Slurm's binaries on PATH (containers often lack them) nor
spawn one on every start. The syntax is small, so it is expanded here as Slurm's hostlist.c
does: a range keeps the width of its low end (``n[08-11]`` gives n08 ... n11), and several
bracket groups in one name expand with the first group outermost.
"""

from __future__ import annotations

import re

_RANGE = re.compile(r"([0-9]+)(?:-([0-9]+))?")
_MAX_RANGE = 64 * 1024  # Slurm's own limit on one range


def expand_hostlist(expr: str) -> list[str]:
    """Every host named by ``expr``, in Slurm's order, duplicates kept; ValueError if malformed."""
    names: list[str] = []
    depth = start = 0
    for i, ch in enumerate(expr + ","):
        if ch == "[":
            if depth:
                raise ValueError(f"hostlist {expr!r}: nested '[' at position {i}")
            depth = 1
        elif ch == "]":
            if not depth:
                raise ValueError(f"hostlist {expr!r}: ']' without '[' at position {i}")
            depth = 0
        elif ch == "," and not depth:
            name, start = expr[start:i], i + 1
            if not name or any(c.isspace() for c in name):
                raise ValueError(f"hostlist {expr!r}: empty or blank host name at position {i}")
            names.append(name)
    if depth:
        raise ValueError(f"hostlist {expr!r}: '[' is never closed")
    return [host for name in names for host in _expand_name(name, expr)]


def first_host(expr: str) -> str:
    """The first host of ``expr``: the one every node of a step agrees on."""
    return expand_hostlist(expr)[0]


def _expand_name(name: str, expr: str) -> list[str]:
    head, bracket, rest = name.partition("[")
    if not bracket:
        return [name]
    body, _, tail = rest.partition("]")
    return [head + num + host for num in _numbers(body, expr) for host in _expand_name(tail, expr)]


def _numbers(body: str, expr: str) -> list[str]:
    numbers: list[str] = []
    for part in body.split(","):
        match = _RANGE.fullmatch(part)
        if not match:
            raise ValueError(f"hostlist {expr!r}: bad range {part!r} in [{body}]")
        low, high = int(match[1]), int(match[2] or match[1])
        if high < low or high - low >= _MAX_RANGE:
            raise ValueError(f"hostlist {expr!r}: range {part!r} is reversed or too long")
        numbers.extend(str(n).zfill(len(match[1])) for n in range(low, high + 1))
    return numbers
