"""launch() is the public API under the command; the command only parses and calls it."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import pytest
from conftest import Runs, process_state, wait_until

import rankrun
from rankrun.cli import main as cli
from rankrun.job import launcher
from rankrun.output.printer import Printer
from rankrun.run.guardian import Guardian
from rankrun.run.host import Host


def test_launch_returns_each_ranks_outcome(runs: Runs) -> None:
    script = runs.script("rank.sh", '[ "$RANK" = 2 ] && exit 4; sleep 300\n')
    options = rankrun.Options(nproc_per_node=3, master_port=0)
    outcome = rankrun.launch(str(script), (), options, env=runs.env)
    assert outcome.exit_code == 4
    ranks = outcome.ranks
    assert [r.rank for r in ranks] == [0, 1, 2]
    cause = outcome.attempts[0].cause
    assert cause is not None and cause.rank == 2 and cause.exit_code == 4
    assert [r.terminated for r in ranks] == [True, True, False]
    assert [r.signal for r in ranks] == [signal.SIGTERM, signal.SIGTERM, None]
    assert all(r.pid > 0 and r.ended_at >= r.started_at for r in ranks)


def test_launch_leaves_the_caller_no_child_to_reap(runs: Runs) -> None:
    script = runs.script("rank.sh", "sleep 0.1 &\nexit 0\n")
    assert rankrun.launch(str(script), (), rankrun.Options(master_port=0), env=runs.env).ok
    with pytest.raises(ChildProcessError):
        os.waitpid(-1, os.WNOHANG)


def test_launch_leaves_the_callers_own_children_to_the_caller(runs: Runs) -> None:
    mine = subprocess.Popen(["sh", "-c", "exit 3"])
    wait_until(lambda: process_state(mine.pid) == "Z", 5, "the caller's child to end, unreaped")
    script = runs.script("rank.sh", "exit 0\n")
    assert rankrun.launch(str(script), (), rankrun.Options(master_port=0), env=runs.env).ok
    assert mine.wait(timeout=5) == 3


def test_launch_restores_the_callers_signal_handlers(runs: Runs) -> None:
    script = runs.script("rank.sh", "exit 0\n")
    before = signal.getsignal(signal.SIGTERM)
    assert rankrun.launch(str(script), (), rankrun.Options(master_port=0), env=runs.env).ok
    assert signal.getsignal(signal.SIGTERM) is before


def test_launch_restores_the_callers_signal_mask(runs: Runs) -> None:
    script = runs.script("rank.sh", "exit 0\n")
    for mask in ({signal.SIGUSR1}, {signal.SIGUSR1, signal.SIGTSTP}):
        before = signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        try:
            assert rankrun.launch(str(script), (), rankrun.Options(master_port=0), env=runs.env).ok
            assert signal.pthread_sigmask(signal.SIG_BLOCK, ()) == mask
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, before)


def test_a_host_that_fails_on_entry_gives_back_the_callers_signal_state(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real = Guardian.adopted

    def adopted_then_fail(self: Guardian) -> None:
        real(self)
        raise OSError("a stand-in for a fork that failed")

    def state() -> tuple[object, ...]:
        wakeup = signal.set_wakeup_fd(-1)
        signal.set_wakeup_fd(wakeup)
        handlers = [signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGTSTP)]
        return (*handlers, wakeup, signal.pthread_sigmask(signal.SIG_BLOCK, ()),
                sorted(os.listdir("/proc/self/fd")))  # fmt: skip

    monkeypatch.setattr(Guardian, "adopted", adopted_then_fail)
    before = state()
    with pytest.raises(OSError, match="stand-in"):
        Host(Printer(), 1.0, 1, "token").__enter__()
    assert state() == before


def test_bad_input_raises_usage_error_before_spawning(runs: Runs) -> None:
    with pytest.raises(rankrun.UsageError, match="outside"):
        rankrun.launch("x.sh", (), rankrun.Options(nnodes=2, node_rank=5))


def test_cli_passes_every_option_to_launch(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []

    def fake_launch(*args: object) -> rankrun.Outcome:
        calls.append(args)
        return rankrun.Outcome(attempts=(rankrun.Attempt(0, (), None),))

    monkeypatch.setattr(launcher, "launch", fake_launch)
    code = cli.main(
        ["--nnodes", "2", "--node-rank", "1", "--nproc_per_node", "4", "--master_addr", "h",
         "--master-port", "1234", "--max-restarts", "2", "--shutdown-timeout", "3",
         "--monitor-interval", "5", "--run-id", "r", "--standalone", "-m", "--no-python",
         "--role", "trainer", "--no-prefix", "--local-ranks-filter", "0,3", "--timestamps",
         "--log-dir", "L", "-r", "1", "-t", "0:2", "--summary-json", "s.json",
         "train.py", "--lr", "1", "--nnodes", "9"]
    )  # fmt: skip
    assert code == 0
    expected = rankrun.Options(
        nproc_per_node=4, nnodes=2, node_rank=1, master_addr="h", master_port=1234,
        standalone=True, module=True, no_python=True, max_restarts=2, shutdown_timeout=3.0,
        run_id="r", role="trainer", prefix=False, local_ranks_filter="0,3", timestamps=True,
        log_dir="L", redirects="1", tee="0:2", summary_json="s.json",
    )  # fmt: skip
    assert calls == [("train.py", ["--lr", "1", "--nnodes", "9"], expected)]


def test_help_says_monitor_interval_has_no_effect(runs: Runs) -> None:
    result = runs.run("--help")
    assert result.returncode == 0
    assert "ignored" in result.stdout and "--monitor-interval" in result.stdout


@pytest.mark.slow
def test_demo_trains_and_every_rank_holds_the_same_weights(runs: Runs) -> None:
    pytest.importorskip("torch")
    demo = Path(__file__).parents[1] / "examples" / "train_ddp.py"
    result = runs.run(
        "--standalone", "--nproc-per-node", "2", str(demo), "--steps", "5", timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("weights match rank 0") == 2
