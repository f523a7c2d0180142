"""Rank numbers folded into ranges: the verdict's compact form, the report's prose form, and
the cut that keeps a verdict's line short at any scale."""

from __future__ import annotations

from rankrun.output.rank_ranges import fold


def _report(ranks: list[int]) -> str:
    return fold(ranks, separator=", ", shortest=3, limit=None)


def test_a_verdict_folds_every_run_of_two_or_more() -> None:
    assert fold([15, 14, *range(13)]) == "0-12,14-15"
    assert fold([3]) == "3" and fold([]) == ""
    assert fold([1, 3, 5, 6]) == "1,3,5-6"


def test_the_report_folds_runs_of_three_or_more_and_lists_the_rest() -> None:
    assert _report([*range(6), 7, 8, *range(10, 512)]) == "0-5, 7, 8, 10-511"
    assert _report([9, 4]) == "4, 9"


def test_past_the_limit_the_ranks_are_cut_with_how_many_more() -> None:
    every_other = range(0, 1024, 2)
    cut = fold(every_other)
    assert cut == "0,2,4,6,8,10,12,14,16,18,20,22,24,26,28,30,... (496 more)"
    assert len(cut) <= 60
    assert fold(every_other, limit=None).count(",") == 511
    cut = fold(every_other, separator=", ", shortest=3, limit=40)
    assert cut == "0, 2, 4, 6, 8, 10, 12, ... (505 more)"
