"""``rankrun stacks`` and ``rankrun status`` of a multi-node job: on node 0, every node's
ranks, grouped as a stall's verdict groups them; on another node, that node's ranks and a
line that says node 0 has the whole job."""

from __future__ import annotations

import os
import re
import signal
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from conftest import Runs, wait_until
from netns import Hosts, make_hosts_fixture  # noqa: F401
from test_stall_verdict import needs_py_spy

from rankrun.inspect import lookup, registry, rundir
from rankrun.plan.ports import free_port

pytest.importorskip("torch")

# Rank 3 waits in a function of its own; the others in another.
WAITING = """
    import os, time

    def load_batch():
        time.sleep(300)

    def wait_for_the_others():
        time.sleep(300)

    rank = os.environ["RANK"]
    print("ready", flush=True)
    open(f"ready.{rank}", "w").close()
    load_batch() if rank == "3" else wait_for_the_others()
"""


class TwoNodes:
    """Two agents of two ranks each, on loopback or in two network namespaces."""

    def __init__(self, runs: Runs, hosts: Hosts | None = None) -> None:
        self.runs, self.hosts = runs, hosts
        runs.script("rank.py", WAITING, executable=False)
        self.addr = hosts.addrs[0] if hosts is not None else "127.0.0.1"
        self.port = port = str(free_port())
        self.agents = []
        for node in range(2):
            argv = runs.argv("--nnodes", "2", "--node-rank", str(node), "--nproc-per-node", "2",
                             "--master-addr", self.addr, "--master-port", port, "--run-id",
                             "j19", "--shutdown-timeout", "5", "--node-timeout", "30",
                             "rank.py")  # fmt: skip
            self.agents.append(subprocess.Popen(self._on(node, argv), env=runs.env,
                                                cwd=runs.workdir, text=True,
                                                stdout=subprocess.PIPE,
                                                stderr=subprocess.PIPE))  # fmt: skip
        runs.wait_for_files("ready.*", 4, timeout=60)

        def registered() -> list[registry.RunEntry]:
            entries = sorted(lookup.live_runs(runs.env), key=lambda e: e.node_rank)
            return entries if len(entries) == 2 else []

        self.entries = wait_until(registered, 10, "both agents' registry entries", every=0.05)

    def _on(self, node: int, argv: list[str]) -> list[str]:
        return argv if self.hosts is None else self.hosts.argv(node, argv)

    def command(self, node: int, *args: str) -> subprocess.CompletedProcess[str]:
        argv = self._on(node, self.runs.argv(*args))
        return subprocess.run(argv, env=self.runs.env, cwd=self.runs.workdir, text=True,
                              capture_output=True, timeout=90)  # fmt: skip

    def end(self) -> list[tuple[int, str]]:
        """SIGTERM node 0: the job ends on every node."""
        if self.agents[0].poll() is None:
            self.agents[0].send_signal(signal.SIGTERM)
        ended = []
        for agent in self.agents:
            try:
                out = agent.communicate(timeout=60)[1]
            except subprocess.TimeoutExpired:
                agent.kill()
                out = agent.communicate()[1]
            ended.append((agent.returncode, out))
        return ended


@pytest.fixture
def two_nodes(runs: Runs, tmp_path: Path) -> Iterator[Callable[..., TwoNodes]]:
    runs.env[rundir.OVERRIDE_VAR] = str(tmp_path / "registry")
    made: list[TwoNodes] = []

    def make(hosts: Hosts | None = None) -> TwoNodes:
        made.append(TwoNodes(runs, hosts))
        return made[-1]

    yield make
    for job in made:
        job.end()


def _check_stacks(job: TwoNodes, host: str) -> None:
    node0 = job.entries[0]
    assert [(e.nnodes, e.job_store) for e in job.entries] == [(2, f"{job.addr}:{job.port}")] * 2
    # By run id, on a host where both nodes run: node 0, which has the whole job.
    shown = job.command(0, "stacks", "j19", "--wait", "20")
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    assert lines[0] == "stacks of job j19 (4 ranks on 2 nodes)", shown.stdout
    assert lines[1].startswith(f"  rank 3 (node 1, host {host}): load_batch (rank.py:"), lines
    assert lines[2].startswith(f"  ranks 0-2 (host {host}): wait_for_the_others (rank.py:"), lines
    assert lines[3] == f"node 0 ({node0.host}), every thread:", lines
    full = lines[4:]
    assert {line.split(":")[0] for line in full} == {"[rank0]", "[rank1]"}, full
    assert any("wait_for_the_others (rank.py:" in line for line in full), full

    # On node 1, by its launcher's pid: its own ranks, and where the whole job is.
    lines = _on_node_1(job, "stacks")
    assert {line.split(":")[0] for line in lines[1:]} == {"[rank2]", "[rank3]"}, lines
    assert any("load_batch (rank.py:" in line for line in lines if line.startswith("[rank3]"))


def _on_node_1(job: TwoNodes, command: str) -> list[str]:
    """``rankrun <command>`` on node 1 by its launcher's pid: its own ranks, after a line
    that says where the whole job is."""
    there = job.command(1, command, str(job.entries[1].pid))
    assert there.returncode == 0, there.stderr
    lines = there.stdout.splitlines()
    assert lines[0] == (
        f"node 1 of job j19's 2 nodes: node 0 (host {job.addr}) has the whole job "
        f"(rankrun {command} j19 there); this node's ranks:"
    )
    return lines


def _node_rows(job: TwoNodes) -> list[list[str]]:
    node0, node1 = job.entries
    shown = job.command(0, "status", "j19")
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    assert lines[0].startswith(f"run j19: launcher pid {node0.pid} on {node0.host}, node 0")
    at = lines.index(f"job j19: 2 nodes, whose store node 0 hosts at {node0.job_store}")
    assert lines[at + 1].split() == ["NODE", "HOST", "AGENT", "PID", "QUIET", "AT", "LAST", "BEAT"]
    rows = [re.split(r" {2,}", line) for line in lines[at + 2 :]]
    assert [row[:3] for row in rows] == [
        ["0", node0.host, str(node0.pid)], ["1", node1.host, str(node1.pid)],
    ]  # fmt: skip
    return rows


def _check_status(job: TwoNodes) -> None:
    """Each node's quiet time, once it has beaten with its ranks running."""

    def beaten() -> list[list[str]] | None:
        rows = _node_rows(job)
        return rows if all(re.fullmatch(r"\d+\.\d s", row[3]) for row in rows) else None

    wait_until(beaten, 30, "every node's quiet time in the status", every=0.5)
    node1 = job.entries[1]
    lines = _on_node_1(job, "status")
    assert lines[1].startswith(f"run j19: launcher pid {node1.pid} on {node1.host}, node 1")
    assert [line.split()[0] for line in lines[3:]] == ["2", "3"], lines


@needs_py_spy
@pytest.mark.slow
def test_stacks_on_node_0_groups_every_nodes_ranks(
    runs: Runs, two_nodes: Callable[..., TwoNodes]
) -> None:
    job = two_nodes()
    _check_status(job)  # first: a question leaves a beat key holding it until the next beat
    _check_stacks(job, os.uname().nodename)
    (code0, err0), (code1, err1) = job.end()
    assert code0 == 128 + signal.SIGTERM, err0[-2000:]
    asked = "reading every rank's stack for node 0's verdict (rankrun stacks, pid "
    assert asked in err0 and asked in err1


@needs_py_spy
@pytest.mark.slow
def test_a_node_that_does_not_answer_is_named(
    runs: Runs, two_nodes: Callable[..., TwoNodes]
) -> None:
    job = two_nodes()
    os.kill(job.agents[1].pid, signal.SIGSTOP)
    try:
        shown = job.command(0, "stacks", "j19", "--wait", "6")
    finally:
        os.kill(job.agents[1].pid, signal.SIGCONT)
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    assert lines[0] == "stacks of job j19 (2 ranks on 1 node)", shown.stdout
    assert "  node 1: no stacks within 6 s" in lines, lines


@needs_py_spy
@pytest.mark.slow
def test_across_network_namespaces(
    runs: Runs, two_nodes: Callable[..., TwoNodes], make_hosts: Callable[..., Hosts]
) -> None:
    job = two_nodes(make_hosts(2))
    _check_stacks(job, os.uname().nodename)  # a namespace shares the host's name
