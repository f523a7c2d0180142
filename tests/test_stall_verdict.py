"""A stall names its culprit: ranks grouped by where they wait, the odd one out first, the
collective it never entered, and stacks without ptrace from torch's worker server."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest
from conftest import Runs

from rankrun.inspect.stacks import find_py_spy

pytest.importorskip("torch")

# Ranks 0-2 wait in the 6th all_reduce while rank 3 loads a batch. Until the gang is ready, a
# shell loop says it is starting, so that a slow import of torch is not a stall (a thread
# can't: the import holds the GIL). With WORKER_MAIN, the script serves its stack and flight
# recorder on TORCH_WORKER_SERVER_SOCKET. It can make itself non-dumpable: then only a process
# with CAP_SYS_PTRACE may read it.
TRAIN = """
import ctypes, os, subprocess, time

ticker = subprocess.Popen(["sh", "-c", "while sleep 0.5; do echo starting; done"])

import torch, torch.distributed as dist
from torch.distributed.elastic.control_plane import worker_main

def load_batch():
    time.sleep(300)

def train():
    dist.init_process_group("gloo")
    for _ in range(5):
        dist.all_reduce(torch.ones(1))
    if os.environ.get("NOT_DUMPABLE"):
        ctypes.CDLL(None).prctl(4, 0, 0, 0, 0)  # PR_SET_DUMPABLE
    ticker.kill()
    ticker.wait()
    print("ready", flush=True)
    if dist.get_rank() == 3:
        load_batch()
    dist.all_reduce(torch.ones(1))

if os.environ.get("WORKER_MAIN"):
    worker_main()(train)()
else:
    train()
"""

needs_py_spy = pytest.mark.skipif(find_py_spy() is None, reason="py-spy is not installed")


ONE_NODE = "stalled: no rank wrote a line for 2 s (4 ranks)"


def _verdict(stderr: str, header: str = ONE_NODE) -> list[str]:
    """The lines under the stall's event, ``header``, without rankrun's prefix."""
    lines = stderr.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("rankrun: stalled: "))
    assert lines[start] == f"rankrun: {header}", lines[start]
    verdict = []
    for line in lines[start + 1 :]:
        if not line.startswith("rankrun:   "):
            break
        verdict.append(line.removeprefix("rankrun:   "))
    return verdict


def _stop_at_stall(runs: Runs, *args: str) -> str:
    runs.script("train.py", TRAIN, executable=False)
    result = runs.gang(4, "--stall-timeout", "2", "--on-stall", "stop", *args, "train.py",
                       timeout=180)  # fmt: skip
    assert result.returncode == 124, result.stderr[-3000:]
    return result.stderr


@needs_py_spy
@pytest.mark.slow
def test_the_rank_stuck_in_its_own_function_is_named_first_then_the_ranks_waiting(
    runs: Runs,
) -> None:
    err = _stop_at_stall(runs)
    verdict = _verdict(err)
    assert verdict[0].startswith("rank 3: load_batch (train.py:9) <- train (train.py:"), err
    assert verdict[1].startswith("ranks 0-2: all_reduce (torch/distributed/distributed_c10d.py:"), (
        err
    )
    assert verdict[1].endswith("<- train (train.py:22)"), err
    # No log directory: the full stacks follow, each line labelled by its rank.
    assert any(line.startswith("[rank3]:     load_batch (") for line in err.splitlines()), err


@needs_py_spy
@pytest.mark.slow
def test_with_a_log_directory_the_full_stacks_are_saved_there(runs: Runs) -> None:
    err = _stop_at_stall(runs, "--log-dir", "logs", "--run-id", "r1")
    saved = runs.workdir / "logs" / "r1" / "attempt_0" / "stacks_1.txt"
    assert "rankrun: every rank's stack is in logs/r1/attempt_0/stacks_1.txt" in err or (
        "rankrun: every rank's stack is in {saved}" in err
    ), err
    assert "[rank3]:     load_batch (" in saved.read_text()
    # the rank's own lines still come (torch warns without NumPy); its stack does not
    assert "[rank3]:     load_batch (" not in err, "the full stacks go to the file, not the console"


@needs_py_spy
@pytest.mark.slow
def test_with_worker_main_the_verdict_names_the_collective_the_rank_never_entered(
    runs: Runs,
) -> None:
    runs.env.update(WORKER_MAIN="1", TORCH_FR_BUFFER_SIZE="100")
    verdict = _verdict(_stop_at_stall(runs))
    assert verdict[0].startswith("rank 3: load_batch (train.py:9)"), verdict
    assert verdict[2] == "rank 3 never entered all_reduce #6 (ranks 0-2 wait in it)", verdict


def _without_py_spy(runs: Runs) -> None:
    """rankrun run by an interpreter beside which no py-spy lies, with a PATH without one; the
    ranks run the test's interpreter, which has torch."""
    base = Path(sys.base_prefix) / "bin" / "python3"
    if find_py_spy({"PATH": "/usr/bin:/bin"}, str(base)) is not None:
        pytest.skip("py-spy is installed beside the base interpreter")
    runs.script("train.sh", f"exec {sys.executable} train.py\n")
    runs.env.update(PYTHONPATH=str(Path(__file__).parents[1] / "src"), PATH="/usr/bin:/bin")
    runs.argv = lambda *args: [str(base), "-m", "rankrun", *args]  # type: ignore[method-assign]


@pytest.mark.slow
def test_without_py_spy_stacks_come_from_the_ranks_that_serve_them(runs: Runs) -> None:
    _without_py_spy(runs)
    runs.env.update(WORKER_MAIN="1", TORCH_FR_BUFFER_SIZE="100")
    runs.script("train.py", TRAIN, executable=False)
    result = runs.gang(4, "--stall-timeout", "2", "--on-stall", "stop", "--no-python",
                       "./train.sh", timeout=180)  # fmt: skip
    assert result.returncode == 124, result.stderr[-3000:]
    verdict = _verdict(result.stderr)
    assert verdict[0].startswith("rank 3: load_batch (train.py:9) <- train (train.py:"), verdict
    assert verdict[1].startswith("ranks 0-2: all_reduce (torch/distributed/distributed_c10d.py:")
    assert "no stacks" not in result.stderr
    # faulthandler's words, as dump_traceback gives them, not py-spy's.
    assert '[rank3]:   File "' in result.stderr, result.stderr[-3000:]


@needs_py_spy
@pytest.mark.slow
def test_where_ptrace_is_refused_stacks_come_from_the_ranks_that_serve_them(runs: Runs) -> None:
    setpriv = shutil.which("setpriv")
    if os.geteuid() != 0 or setpriv is None:
        pytest.skip("needs root and setpriv, to run rankrun without CAP_SYS_PTRACE")
    # Non-dumpable ranks and a py-spy without CAP_SYS_PTRACE: the kernel refuses the attach.
    runs.env.update(WORKER_MAIN="1", TORCH_FR_BUFFER_SIZE="100", NOT_DUMPABLE="1")
    argv = runs.argv
    runs.argv = lambda *args: [setpriv, "--bounding-set", "-sys_ptrace", "--inh-caps",  # type: ignore[method-assign]
                               "-sys_ptrace", *argv(*args)]  # fmt: skip
    err = _stop_at_stall(runs)
    verdict = _verdict(err)
    assert verdict[0].startswith("rank 3: load_batch (train.py:9) <- train (train.py:"), err
    assert '[rank3]:   File "' in err, err[-3000:]
