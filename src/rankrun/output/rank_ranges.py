"""Rank numbers with their runs folded into ranges: ``0-12,14-15`` in a stall's verdict,
``0-5, 7, 9-511`` in the report. One folder for both, so that they cut a list the same way."""

from __future__ import annotations

from collections.abc import Iterable


def fold(
    ranks: Iterable[int], *, separator: str = ",", shortest: int = 2, limit: int | None = 60
) -> str:
    """The ranks in order, each run of at least ``shortest`` consecutive ones as ``first-last``;
    past ``limit`` characters, cut with how many more ranks there are."""
    runs: list[list[int]] = []
    for rank in sorted(ranks):
        if runs and rank == runs[-1][1] + 1:
            runs[-1][1] = rank
        else:
            runs.append([rank, rank])
    parts = [
        f"{a}-{b}" if b - a + 1 >= shortest else separator.join(map(str, range(a, b + 1)))
        for a, b in runs
    ]
    text = separator.join(parts)
    if limit is None or len(text) <= limit:
        return text
    shown: list[str] = []
    for part in parts:
        if len(separator.join([*shown, part])) > limit - 16:
            break
        shown.append(part)
    left = sum(b - a + 1 for a, b in runs[len(shown) :])
    return separator.join([*shown, f"... ({left} more)"])
