"""bench/compare.py's plans: --quick stays quick, and the full run keeps every row."""

from __future__ import annotations

import sys
from types import ModuleType
from typing import Any

import pytest
from conftest import load_bench


@pytest.fixture(scope="module")
def compare() -> ModuleType:
    return load_bench("compare")


def plan(compare: ModuleType, monkeypatch: pytest.MonkeyPatch, *flags: str) -> Any:
    monkeypatch.setattr(sys, "argv", ["compare.py", *flags])
    return compare.plan_for(compare.parse_args())


def test_quick_leaves_out_the_multi_node_rows_whose_agents_each_import_torch(
    compare: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    quick = plan(compare, monkeypatch, "--quick")
    assert (quick.launch, quick.rest, quick.multi) == (True, True, False)
    assert quick.sizes == [1, 8] and quick.repeats == 3


def test_the_full_run_and_an_explicit_ask_keep_the_multi_node_rows(
    compare: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    full = plan(compare, monkeypatch)
    assert (full.launch, full.rest, full.multi) == (True, True, True)
    assert full.agents == compare.FULL_AGENTS and full.repeats == 5
    assert plan(compare, monkeypatch, "--quick", "--agents", "2").multi
    assert plan(compare, monkeypatch, "--quick", "--multi-node-only").multi
