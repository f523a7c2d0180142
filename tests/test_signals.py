"""Signals have no gaps: from rankrun's first instruction to the last byte of its report."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import BLOCKING_RANK, Runs, process_state, wait_until
from test_gang_end_to_end import start_as_a_shell_job


def test_a_signal_while_the_summary_blocks_keeps_the_reported_exit_code(runs: Runs) -> None:
    fifo = runs.workdir / "summary.json"
    os.mkfifo(fifo)  # no reader: writing the summary blocks after the report
    runs.script("rank.sh", "exit 3\n")
    log = runs.workdir / "stderr.log"
    with open(log, "w") as err:
        argv = runs.argv("--nproc-per-node", "2", "--master-port", "0",
                         "--summary-json", str(fifo), "./rank.sh")  # fmt: skip
        launcher = subprocess.Popen(argv, env=runs.env, cwd=runs.workdir, stderr=err)
    wait_until(lambda: "exit code 3" in log.read_text(), 20, log.read_text)
    wait_until(lambda: _opening(launcher.pid, fifo), 20, "the launcher to open the summary")
    assert launcher.poll() is None, "blocked on the summary, as the test intends"
    launcher.send_signal(signal.SIGTERM)
    assert launcher.wait(timeout=10) == 3
    assert "got SIGTERM after the ranks had ended" in log.read_text()
    assert "Traceback" not in log.read_text()


@pytest.mark.slow
def test_ctrl_z_then_fg_at_any_gap_leaves_the_job_running(runs: Runs) -> None:
    # At a gap of 0 the kernel often runs the SIGCONT's handler before the SIGTSTP's; at the
    # others the SIGCONT may land as the launcher stops itself. Both lost it, 3 runs in 10.
    runs.script("rank.sh", BLOCKING_RANK)
    launcher = start_as_a_shell_job(runs, "--nproc-per-node", "4", "./rank.sh")
    pids = [int(f.read_text().split()[0]) for f in runs.wait_for_files("pids.*", 4)]
    stuck = []
    for i in range(120):
        launcher.send_signal(signal.SIGTSTP)
        end = time.perf_counter() + (i % 8) * 0.0001  # 0 to 0.7 ms
        while time.perf_counter() < end:
            pass
        launcher.send_signal(signal.SIGCONT)
        time.sleep(0.02)
        states = _settled_states([launcher.pid, *pids])
        if "T" in states:
            stuck.append((i, states))
            launcher.send_signal(signal.SIGCONT)
    launcher.send_signal(signal.SIGTERM)
    launcher.communicate(timeout=20)
    assert not stuck, f"stopped after the last SIGCONT: {stuck}"


def _settled_states(pids: list[int]) -> list[str]:
    """The processes' states, given a second to leave T: a slow launcher is not a stuck one."""
    states: list[str | None] = []

    def settled() -> bool:
        states[:] = [process_state(pid) for pid in pids]
        return "T" not in states

    wait_until(settled, 1.0, "them to leave T", fail=False, every=0.01)
    return states


def test_ctrl_c_before_anything_is_spawned_is_one_line_and_130(runs: Runs) -> None:
    # A FIFO that nobody writes holds rankrun in its plan, before any rank exists.
    fifo = runs.workdir / "hold"
    os.mkfifo(fifo)
    runs.script("rank.sh", "touch started.$RANK\n")
    code = (
        "import sys, rankrun.job.launcher as L\n"
        "plan = L.build_plan\n"
        f"L.build_plan = lambda *a: (open({str(fifo)!r}).read(), plan(*a))[1]\n"
        "from rankrun.cli.main import main\n"
        "sys.exit(main(['--master-port', '0', './rank.sh']))\n"
    )
    launcher = subprocess.Popen(
        [sys.executable, "-c", code], env=runs.env, cwd=runs.workdir,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    _wait_blocked_on(launcher.pid, fifo)
    launcher.send_signal(signal.SIGINT)
    out, err = launcher.communicate(timeout=10)
    assert launcher.returncode == 128 + signal.SIGINT
    assert err.splitlines() == ["rankrun: stopped by SIGINT"]
    assert not list(runs.workdir.glob("started.*"))


def test_ctrl_c_while_the_handlers_are_installed_is_one_line_and_130(runs: Runs) -> None:
    # The Ctrl-C lands the moment the first handler is in place, before the others are.
    code = (
        "import signal, sys\n"
        "install = signal.signal\n"
        "def installed(signum, handler):\n"
        "    install(signum, handler)\n"
        "    signal.raise_signal(signal.SIGINT)\n"
        "signal.signal = installed\n"
        "from rankrun.cli.main import main\n"
        "sys.exit(main(['--version']))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], env=runs.env, capture_output=True, text=True, timeout=30
    )
    assert (result.returncode, result.stderr) == (130, "rankrun: stopped by SIGINT\n")


def test_ctrl_c_that_python_swallows_still_stops_the_run(runs: Runs) -> None:
    # A handler's exception raised inside a weakref callback, as one runs in every import, is
    # "ignored" by Python: the signal must still reach the gang.
    runs.script("rank.sh", "sleep 5\ntouch done.$RANK\n")
    code = (
        "import signal, sys, weakref\n"
        "import rankrun.cli.command_line as command_line\n"
        "parse = command_line.parse\n"
        "class Gone: pass\n"
        "def parse_with_ctrl_c(*args):\n"
        "    gone = Gone()\n"
        "    ref = weakref.ref(gone, lambda _: signal.raise_signal(signal.SIGINT))\n"
        "    del gone\n"
        "    return parse(*args)\n"
        "command_line.parse = parse_with_ctrl_c\n"
        "from rankrun.cli.main import main\n"
        "sys.exit(main(['--master-port', '0', './rank.sh']))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], env=runs.env, cwd=runs.workdir, capture_output=True,
        text=True, timeout=30,
    )  # fmt: skip
    assert result.returncode == 128 + signal.SIGINT, result.stderr
    assert "Exception ignored" not in result.stderr
    assert not list(runs.workdir.glob("done.*"))


def _wait_blocked_on(pid: int, path: Path) -> None:
    wait_until(lambda: _opening(pid, path), 20, "the launcher to reach the FIFO")


def _opening(pid: int, path: Path) -> bool:
    """Whether the process sleeps in open() (a FIFO's open blocks for a writer)."""
    if process_state(pid) != "S":
        return False
    try:
        with open(f"/proc/{pid}/syscall") as f:
            fields = f.read().split()
    except OSError:
        return False
    return bool(fields) and fields[0] in ("2", "257")  # open, openat
