"""A few cases of bench/fault_loop.py's randomized faults, drawn from fixed seeds: no launcher
or agent outlives its job, each exits with a plausible code and no traceback, and nothing
it started is left. The long run is the bench's own (``python bench/fault_loop.py``).

Until the fixes of issue 18's two open agent defects are merged, the cases leave their
patterns out (``avoid_known``): a SIGKILL of node 1, a SIGSTOP of node 0 past --node-timeout.
"""

from __future__ import annotations

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
    7: "SIGINT to node 0 in the teardown; ranks with daemons that ignore SIGTERM",
    15: "SIGHUP to node 1 while its ranks run",
    47: "node 1 stopped past --node-timeout while the ranks run, then continued",
    203: "node 0 SIGKILLed while its rank ends and node 1's hangs",
}


@pytest.fixture(scope="module")
def fault_loop() -> ModuleType:
    return load_bench("fault_loop")


def _passes(fault_loop: ModuleType, seed: int) -> None:
    result = fault_loop.run_case(fault_loop.draw_case(seed, avoid_known=True))
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


def test_avoiding_the_known_defects_leaves_out_their_patterns(fault_loop: ModuleType) -> None:
    sigkill, sigstop = signal.SIGKILL, signal.SIGSTOP
    for seed in range(1, 400, 2):
        for f in fault_loop.draw_case(seed, avoid_known=True).faults:
            assert not (f.node == 1 and f.signum == sigkill), seed
            assert not (f.node == 0 and f.signum == sigstop and f.pause > 2), seed
    drawn = [f for s in range(1, 400, 2) for f in fault_loop.draw_case(s).faults]
    assert any(f.node == 1 and f.signum == sigkill for f in drawn)
    assert any(f.node == 0 and f.signum == sigstop and f.pause > 2 for f in drawn)
