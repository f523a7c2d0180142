"""A few cases of bench/fault_loop.py's randomized faults, drawn from fixed seeds: no launcher
or agent outlives its job, each exits with a plausible code and no traceback, and nothing
it started is left. The long run is the bench's own (``python bench/fault_loop.py``).
"""

from __future__ import annotations

import math
import signal
from types import ModuleType

import pytest
from conftest import load_bench

# Chosen for what they cover, each named by what its draw holds (see describe()).
SINGLE = {
    2: "SIGSTOP for 4.5 s in the teardown; a rank that ignores SIGTERM and starts a daemon",
    22: "two SIGSTOPs, then SIGKILL while a rank that ignores SIGTERM and has a daemon hangs",
    28: "SIGKILL in the teardown of a rank killed by a signal",
    34: "SIGINT in the teardown, beside a hanging rank that ignores SIGTERM",
    38: "SIGTERM in the teardown of a failure, ranks ignoring SIGTERM",
    52: "SIGHUP after the ranks have ended, one with a daemon",
}
MULTI = {
    13: "SIGINT to node 1 while it starts, before the join",
    17: "three agents; node 1 SIGKILLed in the teardown of a failure",
    25: "node 0 stopped for good while the ranks run; continued once node 1 has exited",
    39: "node 0 stopped past --node-timeout while it joins, then continued",
    3145: "--max-restarts 1: two ranks fail, the job restarts on both nodes, and then succeeds",
}


@pytest.fixture(scope="module")
def fault_loop() -> ModuleType:
    return load_bench("fault_loop")


def _passes(fault_loop: ModuleType, seed: int) -> None:
    result = fault_loop.run_case(fault_loop.draw_case(seed))
    assert not result.findings, fault_loop.line(result)


@pytest.mark.slow
@pytest.mark.parametrize("seed", sorted(SINGLE))
def test_a_launcher_under_random_faults_ends_and_leaves_nothing(
    fault_loop: ModuleType, seed: int
) -> None:
    _passes(fault_loop, seed)


@pytest.mark.slow
@pytest.mark.parametrize("seed", sorted(MULTI))
def test_two_agents_under_random_faults_end_and_leave_nothing(
    fault_loop: ModuleType, seed: int
) -> None:
    pytest.importorskip("torch")
    _passes(fault_loop, seed)


def test_a_seed_draws_the_same_case_and_its_parity_the_kind(fault_loop: ModuleType) -> None:
    draw = fault_loop.draw_case
    assert draw(31) == draw(31) and draw(31) != draw(33)
    assert [draw(s).nodes for s in (10, 11)] == [1, 2]
    assert fault_loop.seeds(7, 3, single_only=True, multi_only=False) == [8, 10, 12]
    assert fault_loop.seeds(7, 3, single_only=False, multi_only=True) == [7, 9, 11]


def test_the_draws_cover_every_fault_the_issue_lists(fault_loop: ModuleType) -> None:
    """Issue 18: kill, stop (continued or not) and signal any agent at random moments,
    torch's import, the join and a teardown included; ranks that fail, ignore SIGTERM or
    start children; a third agent; a node other than 0 stopped past --node-timeout."""
    cases = [fault_loop.draw_case(s) for s in range(1, 1600, 2)]
    faults = [(c, f) for c in cases for f in c.faults]
    timeout = fault_loop.NODE_TIMEOUT
    for signum in (*fault_loop.FATAL, signal.SIGSTOP):
        for anchor in ("start", "up", "ending"):
            for node in (0, 1, 2):
                assert any(
                    (f.signum, f.anchor, f.node) == (signum, anchor, node) for _, f in faults
                ), (signum, anchor, node)
    stopped = [f for _, f in faults if f.signum == signal.SIGSTOP]
    for node in (0, 1, 2):
        assert any(f.node == node and timeout < f.pause < math.inf for f in stopped), node
        assert any(f.node == node and f.pause == math.inf for f in stopped), node
    assert any(f.pause < timeout for f in stopped)
    assert {c.nodes for c in cases} == {2, 3}
    ranks = [r for c in cases for r in c.ranks]
    assert {r.end for r in ranks} == {"exit0", "fail", "signal", "hang"}
    assert any(r.ignore_term for r in ranks) and any(r.children for r in ranks)
    for case in cases:
        assert sum(f.pause == math.inf for f in case.faults) <= 1, case.seed


def test_the_multi_node_draws_restart_the_job_some_of_the_time(fault_loop: ModuleType) -> None:
    """Issue 18: job-wide restarts under faults, in a minority of the cases: failures that
    heal on a retry or fail every time, and faults in the teardown before a restart."""
    cases = [fault_loop.draw_case(s) for s in range(1, 1600, 2)]
    restarting = [c for c in cases if c.max_restarts and any(r.fails() for r in c.ranks)]
    assert {c.max_restarts for c in cases} == {0, 1, 2}
    assert 0.3 < sum(c.max_restarts == 0 for c in cases) / len(cases) < 0.7
    assert any(c.heals_at <= c.max_restarts for c in restarting)
    assert any(c.heals_at > c.max_restarts == 2 for c in restarting)
    assert any(f.anchor == "over" for c in restarting for f in c.faults)
    assert all(c.max_restarts == 0 for c in map(fault_loop.draw_case, range(0, 200, 2)))
    assert any(not c.faults for c in restarting)  # judged on its attempts, lines and code
    fails_always = next(c for c in restarting if c.heals_at > c.max_restarts)
    assert fails_always.attempts() == fails_always.max_restarts + 1
    briefly = [fault_loop.draw_case(s) for s in MULTI]  # the brief run restarts a job
    assert any(c.max_restarts and c.attempts() > 1 for c in briefly)
