"""bench/compare.py's plans: --quick stays quick, and the full run keeps every row."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from conftest import Runs, load_bench


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


def test_the_multi_node_rows_run_8_agents_and_wait_longer_for_more(
    compare: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    only = plan(compare, monkeypatch, "--multi-node-only")
    assert only.agents == [2, 4, 8] and only.multi
    assert only.sizes == []  # no launch rows, so no plot of them
    assert compare.multi_start_s(8) > compare.multi_start_s(2) >= compare.MULTI_START_S


def _runs(latencies: list[float | None]) -> list[dict[str, object]]:
    return [{"latency_s": s, "failed": True, "exit_codes": [3, 3], "leftovers": 0}
            for s in latencies]  # fmt: skip


def test_the_failure_figure_shows_its_spread_or_how_often_agents_hung(
    compare: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    launch = {"first_rank_s": 1.5, "all_exited_s": 1.6, "exit_codes": [0, 0]}
    across = {
        "rankrun": {"launch_2": [launch] * 3, "failure_2": _runs([0.149, 0.121, 0.180])},
        "torchrun": {"launch_2": [launch] * 3, "failure_2": _runs([None, 0.4, None])},
    }
    rows = compare.summarize_multi(across, plan(compare, monkeypatch, "--agents", "2"))
    text = compare.multi_table(rows, [])
    assert "| 149 ms (121–180) |" in text
    assert "| never exits in 2 of 3 runs; the others 400 ms |" in text


def test_the_parts_of_a_launch_across_nodes_add_up_to_its_first_rank(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.syspath_prepend(str(Path(__file__).parents[1] / "bench"))
    parts = load_bench("multi_launch_parts")
    steps = ["python_up", "torch_import.start", "torch_import.end", "store.end",
             "wait_joined.start", "join.end", "host.start", "host.end", "attempt_0.start",
             "attempt_0.end", "spawn.start", "rank"]  # fmt: skip
    # Node 1 claims last, node 0's rank runs first: the path crosses from one to the other.
    node0 = {step: 0.1 * i for i, step in enumerate(steps)}
    node1 = {**node0, "wait_joined.start": 0.45, "rank": 1.5}
    cut = parts.parts_of({"agents": [node0, node1]})
    assert sum(cut.values()) == pytest.approx(node0["rank"])
    assert cut["claim (job key, claim, counters)"] == pytest.approx(0.45 - 0.3)
    assert cut["join: last claim -> verdict"] == pytest.approx(0.5 - 0.45)


@pytest.mark.slow
def test_scale_quick_reports_every_figure_and_leaves_nothing_behind(runs: Runs) -> None:
    """bench/scale.py --quick runs the real control plane at 16 and 256 simulated nodes."""
    out = runs.workdir / "scale"
    bench = Path(__file__).parents[1] / "bench" / "scale.py"
    done = subprocess.run([sys.executable, str(bench), "--quick", "--out", str(out)],
                          env=runs.env, capture_output=True, text=True, timeout=600)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    data = json.loads((out / "scale.json").read_text())
    assert [r["n"] for r in data["new"]] == [16, 256] == [r["n"] for r in data["old"]]
    for row in data["new"]:
        assert row["join_s"] >= 0 and row["fanout_ms"]["count"] == 2 * (row["n"] - 1)
        assert 0 < row["fanout_ms"]["p50"] <= row["fanout_ms"]["p99"] <= row["fanout_ms"]["max"]
        assert 0.5 < row["lost_over_timeout"] < 10
        assert row["requests_per_s"] > 0 and row["store_cpu_pct"] >= 0
        assert row["agent_rss_mib"] > 0 and row["agent_cpu_pct"] >= 0
    assert data["old"][-1]["demanded_requests_per_s"] > 10 * data["new"][-1]["requests_per_s"]
    if shutil.which("cc"):  # io_clock.c, preloaded into node 0: every fan-out's share
        for row in data["new"]:
            shares = [t["store_share"] for t in row["fanout_trials"]]
            assert all(s["wakeups"] == row["n"] and s["share_ms"] > 0 for s in shares), shares
            assert row["store_share_ms"]["count"] == 2 and row["wake_gap_us"] > 0
    table = (out / "scale.md").read_text()
    assert "| 256 |" in table and "Old design" in table
