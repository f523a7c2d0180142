"""A stall of a multi-node job: one verdict on node 0, every node's ranks grouped, the culprit
rank and its node named first; with torch's worker server, the collective it never entered."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable

import pytest
from conftest import Runs
from netns import Hosts, make_hosts_fixture  # noqa: F401
from test_stall_verdict import TRAIN, _verdict, needs_py_spy

from rankrun.plan.ports import free_port

pytest.importorskip("torch")


def _run(runs: Runs, hosts: Hosts | None = None, **env: str) -> list[tuple[int, str]]:
    """Two agents of two ranks each, stopped at a stall of 3 s; each one's code and stderr."""
    runs.script("train.py", TRAIN, executable=False)
    runs.env.update(env)
    addr = hosts.addrs[0] if hosts is not None else "127.0.0.1"
    if hosts is not None:
        runs.env["GLOO_SOCKET_IFNAME"] = "eth0"  # the hosts' one interface
    port = str(free_port())
    agents = []
    for node in range(2):
        argv = runs.argv("--nnodes", "2", "--node-rank", str(node), "--nproc-per-node", "2",
                         "--master-addr", addr, "--master-port", port, "--stall-timeout", "3",
                         "--on-stall", "stop", "train.py")  # fmt: skip
        if hosts is not None:
            argv = hosts.argv(node, argv)
        agents.append(subprocess.Popen(argv, env=runs.env, cwd=runs.workdir, text=True,
                                       stdout=subprocess.PIPE, stderr=subprocess.PIPE))  # fmt: skip
    return [(a.wait(timeout=240), a.communicate()[1]) for a in agents]


def _check(runs: Runs, ended: list[tuple[int, str]], host1: str) -> list[str]:
    (code0, err0), (code1, err1) = ended
    assert (code0, code1) == (124, 124), err0[-3000:]
    verdict = _verdict(err0, "stalled: no rank wrote a line for 3 s (4 ranks on 2 nodes)")
    assert verdict[0].startswith(f"rank 3 (node 1, host {host1}): load_batch (train.py:"), verdict
    # on one host (loopback agents, namespaces) the group's ranks share it, and it is said
    assert verdict[1].startswith(f"ranks 0-2 (host {host1}): all_reduce (torch/distributed/")
    asked = "reading every rank's stack for node 0's verdict (stalled: no rank wrote a line"
    assert "stalled" not in err1.split(asked)[0], "node 1 judges no stall of its own"
    assert asked in err1
    assert err0.count("stalled: no rank wrote a line for 3 s (") == 1, err0
    return verdict


@needs_py_spy
@pytest.mark.slow
def test_node_0_names_the_stuck_rank_and_its_node_first(runs: Runs) -> None:
    verdict = _check(runs, _run(runs), os.uname().nodename)
    assert len(verdict) == 2, verdict


@needs_py_spy
@pytest.mark.slow
def test_with_the_worker_server_the_verdict_names_the_collective_never_entered(
    runs: Runs,
) -> None:
    ended = _run(runs, WORKER_MAIN="1", TORCH_FR_BUFFER_SIZE="100")
    verdict = _check(runs, ended, os.uname().nodename)
    assert "rank 3 never entered all_reduce #6 (ranks 0-2 wait in it)" in verdict, verdict


@needs_py_spy
@pytest.mark.slow
def test_across_network_namespaces(runs: Runs, make_hosts: Callable[..., Hosts]) -> None:
    hosts = make_hosts(2)
    ended = _run(runs, hosts)
    _check(runs, ended, os.uname().nodename)  # a namespace shares the host's name
