"""A hung job shows where each rank is: on a stall, and before SIGKILL."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import Runs

pytest.importorskip("torch")

# It destroys its group: torch aborts a gloo rank that exits with the group alive.
HANGING_RANK = """
import os, time
import torch, torch.distributed as dist

def load_batch():
    time.sleep(float(os.environ.get("LOAD_S", "300")))

dist.init_process_group("gloo")
print("ready", flush=True)
if dist.get_rank() == 1:
    load_batch()
dist.all_reduce(torch.ones(1))
dist.destroy_process_group()
"""

STUBBORN_RANK = """
import signal, time

def cleaning_up_forever():
    while True:
        time.sleep(0.05)

signal.signal(signal.SIGTERM, signal.SIG_IGN)
print("ready", flush=True)
if __import__("os").environ["RANK"] == "0":
    time.sleep(0.5)
    raise SystemExit(3)
cleaning_up_forever()
"""


def _has_py_spy() -> bool:
    return (
        shutil.which("py-spy") is not None
        or shutil.which("py-spy", path=str(__import__("pathlib").Path(sys.executable).parent))
        is not None
    )


needs_py_spy = pytest.mark.skipif(not _has_py_spy(), reason="py-spy is not installed")


@needs_py_spy
@pytest.mark.slow
def test_a_stall_shows_each_rank_where_it_waits_and_the_job_goes_on(runs: Runs) -> None:
    runs.script("train.py", HANGING_RANK, executable=False)
    runs.env["LOAD_S"] = "12"
    result = runs.gang(2, "--stall-timeout", "4", "train.py", timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    err = result.stderr
    assert err.count("stalled: no rank wrote a line for 4 s (2 ranks)") == 1, err
    report = err[err.index("stalled") :]
    assert "[rank0]:" in report and "all_reduce" in report
    # Labelled once, by rank, as rankrun stacks prints them.
    assert "rankrun: [rank" not in report, report
    rank1 = [line for line in report.splitlines() if line.startswith("[rank1]: ")]
    assert any("load_batch" in line for line in rank1), report


@needs_py_spy
@pytest.mark.slow
def test_on_stall_stop_ends_the_job_and_names_the_stall(runs: Runs) -> None:
    runs.script("train.py", HANGING_RANK, executable=False)
    result = runs.gang(2, "--stall-timeout", "3", "--on-stall", "stop", "train.py", timeout=120)
    assert result.returncode == 124, result.stderr[-3000:]
    assert "stopped: stalled: no rank wrote a line for 3 s" in result.stderr


@needs_py_spy
@pytest.mark.slow
def test_a_rank_that_ignores_sigterm_shows_its_stack_before_sigkill(runs: Runs) -> None:
    runs.script("train.py", STUBBORN_RANK, executable=False)
    result = runs.gang(2, "--shutdown-timeout", "2", "train.py", timeout=60)
    assert result.returncode == 3
    err = result.stderr
    assert "rank(s) 1 did not stop within 2 s; they were at:" in err
    assert "cleaning_up_forever" in err[err.index("did not stop") : err.index("sent SIGKILL")]


@pytest.mark.slow
def test_without_py_spy_a_stall_says_how_to_get_it(runs: Runs) -> None:
    # The base interpreter, beside which no py-spy lies, and a PATH without one.
    runs.script("rank.sh", "echo up\nexec sleep 300\n")
    base = Path(sys.base_prefix) / "bin" / "python3"
    runs.env.update(PYTHONPATH=str(Path(__file__).parents[1] / "src"), PATH="/usr/bin:/bin")
    argv = [str(base), "-m", "rankrun", "--stall-timeout", "1", "--on-stall", "stop", "./rank.sh"]
    result = subprocess.run(argv, env=runs.env, cwd=runs.workdir, capture_output=True, text=True,
                            timeout=60)  # fmt: skip
    assert result.returncode == 124
    assert "no stacks: py-spy is needed to read stacks and is not installed: pip install" in (
        result.stderr
    )
