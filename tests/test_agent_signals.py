"""A signal ends a node agent at any moment of its life, torch's import included.

A multi-node agent imports torch before it joins: more than a second in which numpy's and
torch's C code run Python callbacks that may catch the exception a signal handler raises.
"""

from __future__ import annotations

import signal
import subprocess
import time

import pytest
from conftest import Runs

from rankrun.plan.ports import free_port

pytest.importorskip("torch")


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP])
def test_a_signal_during_the_agents_torch_import_ends_it(runs: Runs, signum: int) -> None:
    runs.script("rank.sh", "touch ran.$RANK\n")
    flags = ["--nnodes", "2", "--node-rank", "0", "--master-port", str(free_port()),
             "--rdzv-conf", "join_timeout=60"]  # fmt: skip
    for delay in (0.15, 0.3, 0.5, 0.7, 0.9):
        agent = runs.start(*flags, "./rank.sh")
        time.sleep(delay)  # the moment the signal lands is the scenario itself
        agent.send_signal(signum)
        try:
            _, err = agent.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            agent.kill()
            agent.communicate()
            pytest.fail(f"{signal.Signals(signum).name} {delay} s after the start was lost")
        assert agent.returncode == 128 + signum, (delay, err)
        assert "Traceback" not in err and "error:" not in err, (delay, err)
        assert not list(runs.workdir.glob("ran.*")), "no rank may start"
