"""rankrun.job.control against real TCPStores: agents as processes, or as threads where the point
is the store protocol; and two hosts in network namespaces for a pulled cable."""

from __future__ import annotations

import json
import os
import queue
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import Runs, wait_until
from netns import Hosts, make_hosts_fixture  # noqa: F401

from rankrun.job import control
from rankrun.output.outcome import Ending, RankResult
from rankrun.plan.ports import free_port

pytest.importorskip("torch.distributed")

AGENT = Path(__file__).with_name("control_agent.py")


# --- agents as processes -----------------------------------------------------------------------


class Agent:
    """A control_agent.py process, and the JSON lines it prints."""

    def __init__(self, runs: Runs, settings: dict[str, Any], wrap: list[str] | None = None):
        argv = [sys.executable, str(AGENT), json.dumps(settings)]
        self.proc = subprocess.Popen(
            (wrap or []) + argv, env=runs.env, stdout=subprocess.PIPE, text=True
        )
        self.lines: queue.SimpleQueue[dict[str, Any]] = queue.SimpleQueue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(json.loads(line))

    def expect(self, *keys: str, timeout: float = 30) -> dict[str, Any]:
        """The next line that has one of ``keys``."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"agent {self.proc.pid}: no {keys} in {timeout} s") from None
            if any(k in line for k in keys):
                return line

    def end(self) -> None:
        self.proc.kill()  # SIGKILL ends a stopped process too
        self.proc.wait(10)


@pytest.fixture
def agents(runs: Runs) -> Iterator[Callable[..., Agent]]:
    started: list[Agent] = []

    def start(settings: dict[str, Any], wrap: list[str] | None = None) -> Agent:
        started.append(Agent(runs, settings, wrap))
        return started[-1]

    yield start
    for a in started:
        a.end()
    # the runs fixture then checks that no process carrying the test's tag is alive


def start_job(
    agents: Callable[..., Agent], nnodes: int, per_node: Callable[[int], dict[str, Any]]
) -> list[Agent]:
    """Node 0 hosts on a free port; the others connect once it has said which."""
    first = agents({"node_rank": 0, "nnodes": nnodes, "port": 0, **per_node(0)})
    port = first.expect("port", "error")["port"]
    rest = [
        agents({"node_rank": r, "nnodes": nnodes, "port": port, **per_node(r)})
        for r in range(1, nnodes)
    ]
    return [first, *rest]


@pytest.mark.slow
def test_three_agents_join_and_agree(agents: Callable[..., Agent]) -> None:
    job = start_job(agents, 3, lambda r: {"run_id": "job-ok"})
    seen = [a.expect("joined", "error") for a in job]
    assert all("joined" in s for s in seen), seen
    pids = [a.proc.pid for a in job]
    # node 0 read every claim; the others know node 0 and themselves, from its verdict
    assert [n["pid"] for n in seen[0]["joined"]] == pids
    for r, s in enumerate(seen[1:], 1):
        assert [n["node_rank"] for n in s["joined"]] == [0, r]
        assert [n["pid"] for n in s["joined"]] == [pids[0], pids[r]]
    assert {n["run_id"] for s in seen for n in s["joined"]} == {"job-ok"}


@pytest.mark.slow
def test_nproc_mismatch_is_the_same_message_on_every_agent(
    agents: Callable[..., Agent],
) -> None:
    job = start_job(agents, 3, lambda r: {"run_id": "job-mm", "nproc_per_node": 4 if r == 2 else 8})
    seen = [a.expect("joined", "error") for a in job]
    assert {s.get("error") for s in seen} == {"Mismatch"}, seen
    assert {s["message"] for s in seen} == {
        "--nproc-per-node: node 0 has 8, node 2 has 4: start every node with the same settings"
    }


@pytest.mark.slow
def test_node_0_dying_while_the_others_join_is_one_line_on_each(
    agents: Callable[..., Agent],
) -> None:
    first = agents({"node_rank": 0, "nnodes": 3, "port": 0, "run_id": "job-gone"})
    port = first.expect("port", "error")["port"]
    second = agents({"node_rank": 1, "nnodes": 3, "port": port, "run_id": "job-gone"})
    watcher = control.connect("127.0.0.1", port, timeout=10)
    claim = control.JobStore(watcher, "job-gone").keys.claim(1)
    # until node 1 waits for node 2, which never comes
    wait_until(lambda: watcher.check([claim]), 30, "node 1's claim to join", every=0.05)
    first.end()
    seen = second.expect("joined", "error")
    assert seen.get("error") == "Unresponsive", seen
    assert seen["message"].startswith("node 0's store closed while"), seen


@pytest.mark.slow
def test_a_stopped_agent_is_declared_lost_by_node_0_and_every_agent_hears(
    agents: Callable[..., Agent],
) -> None:
    beat = {"run_id": "job-hb", "heartbeat": [0.2, 2.0]}
    job = start_job(agents, 3, lambda r: beat)
    assert all("joined" in a.expect("joined", "error") for a in job)
    assert all("beating" in a.expect("beating", "error") for a in job)
    os.kill(job[2].proc.pid, signal.SIGSTOP)
    stopped = time.monotonic()
    for a in job[:2]:
        heard = a.expect("halted", timeout=6)
        assert heard["lost"] == [2] and "node 2 (" in heard["halted"], heard
        assert "no heartbeat for 2 s" in heard["halted"], heard
        elapsed = time.monotonic() - stopped
        assert 1.5 < elapsed < 4.0, elapsed


@pytest.mark.slow
def test_pulled_cable_both_sides_know(
    agents: Callable[..., Agent], make_hosts: Callable[..., Hosts]
) -> None:
    hosts = make_hosts(2)
    beat = {"run_id": "job-net", "heartbeat": [0.2, 2.0], "addr": hosts.addrs[0]}
    a = agents({"node_rank": 0, "nnodes": 2, "port": 29400, **beat}, hosts.argv(0, []))
    assert a.expect("port", "error") == {"port": 29400}
    b = agents({"node_rank": 1, "nnodes": 2, "port": 29400, **beat}, hosts.argv(1, []))
    assert "joined" in a.expect("joined", "error")
    assert "joined" in b.expect("joined", "error")
    assert all("beating" in agent.expect("beating", "error") for agent in (a, b))
    hosts.link_down(1)
    pulled = time.monotonic()
    assert a.expect("halted", timeout=6)["lost"] == [1]
    assert time.monotonic() - pulled < 4.0
    cut = b.expect("halted", timeout=6)
    assert cut["cut_off"] is True and cut["quiet_for"] > 2.0, cut
    assert time.monotonic() - pulled < 4.0


# --- agents as threads, for the store protocol ------------------------------------------------


class Job:
    """A store hosted in this process for one run, and agents that join it from threads."""

    def __init__(self, nnodes: int, run_id: str = "job-t") -> None:
        self.server = control.serve("127.0.0.1", 0)
        self.port: int = self.server.port
        self.run_id = run_id
        self.info = control.JobInfo(run_id, "hostA", self.port, "12:00", nnodes, "-")
        control.announce(self.server, self.info)

    def client(self) -> Any:
        return control.connect("127.0.0.1", self.port, timeout=10)

    def store(self, run_id: str | None = None) -> control.JobStore:
        return control.JobStore(self.client(), run_id or self.run_id)

    def snapshot(self) -> dict[str, bytes]:
        return {k: self.server.get(k) for k in self.server.list_keys()}


def node(
    r: int, nnodes: int, run_id: str = "job-t", hostname: str = "", pid: int = 0
) -> control.NodeInfo:
    return control.NodeInfo(r, hostname or f"host{r}", pid or 100 + r, nnodes, 8, run_id, "1", "c")


def join_all(job: Job, infos: list[control.NodeInfo]) -> list[Any]:
    """Each info joins from a thread of its own; returns each one's nodes or exception."""
    out: list[Any] = [None] * len(infos)

    def one(i: int) -> None:
        try:
            out[i] = control.join(job.store(infos[i].run_id), infos[i], timeout=20)
        except control.ControlError as e:
            out[i] = e

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(infos))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return out


def test_duplicate_node_rank_is_named_on_every_agent() -> None:
    job = Job(3)
    infos = [node(0, 3), node(1, 3, hostname="a", pid=1), node(1, 3, hostname="b", pid=2)]
    out = join_all(job, infos)
    assert all(isinstance(e, control.DuplicateNodeRank) for e in out), out
    messages = {str(e) for e in out}
    assert len(messages) == 1, messages
    (message,) = messages
    assert message in (
        f"--node-rank 1 is claimed by two agents (host {x} pid {p}, host {y} pid {q}): "
        "give each node its own --node-rank"
        for x, p, y, q in (("a", 1, "b", 2), ("b", 2, "a", 1))
    )


def test_stranger_is_told_and_changes_nothing() -> None:
    job = Job(2, "job-a")
    assert all(
        isinstance(n, control.Joined)
        for n in join_all(job, [node(0, 2, "job-a"), node(1, 2, "job-a")])
    )
    before = job.snapshot()

    with pytest.raises(control.Stranger) as other:
        control.join(job.store("job-b"), node(1, 2, "job-b"), timeout=5)
    assert str(other.value) == (
        f"port {job.port} on hostA is held by rankrun job job-a (started 12:00); "
        "this is job job-b: use another --master-port"
    )
    with pytest.raises(control.Stranger) as late:
        control.join(job.store("job-a"), node(1, 2, "job-a", hostname="late"), timeout=5)
    assert "its 2 nodes have all joined, and this agent (--node-rank 1 on late)" in str(late.value)
    # node 0 of another job whose --master-addr reaches this one's store
    with pytest.raises(control.Stranger, match="held by rankrun job job-a"):
        control.announce(job.client(), job.info._replace(run_id="job-c"))
    assert job.snapshot() == before


def test_different_commands_are_shown_as_command_lines() -> None:
    job = Job(3)
    common = "train.py --config configs/r50_deformable_detr.yaml --output-dir /shared/out"
    lines = {0: f"{common} --lr 2e-4", 1: f"{common} --lr 2e-4", 2: f"{common} --lr 2e-5 --x"}
    infos = [node(r, 3)._replace(command_hash=lines[r][-9:]) for r in range(3)]
    out: list[Any] = [None] * 3

    def one(r: int) -> None:
        try:
            out[r] = control.join(job.store(), infos[r], timeout=20, command=lines[r])
        except control.ControlError as e:
            out[r] = e

    threads = [threading.Thread(target=one, args=(r,)) for r in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert {str(e) for e in out} == {
        "the training command differs: "
        'node 0 runs ".../r50_deformable_detr.yaml --output-dir /shared/out --lr 2e-4", '
        'node 2 runs "..._deformable_detr.yaml --output-dir /shared/out --lr 2e-5 --x": '
        "start every node with the same settings"
    }, out


@pytest.mark.slow
def test_node_0_names_the_missing_and_every_agent_gets_its_verdict() -> None:
    job = Job(3)
    notes: dict[int, list[str]] = {0: [], 1: []}
    out: list[Any] = [None] * 2

    def one(r: int) -> None:
        try:
            control.join(job.store(), node(r, 3), 1.6, notes[r].append, every=0.5)
        except control.ControlError as e:
            out[r] = e

    threads = [threading.Thread(target=one, args=(r,)) for r in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert notes[0] and set(notes[0]) == {"waiting for node 2 to join (1 of 3 missing)"}
    assert set(notes[1]) <= {"waiting for 1 of 3 nodes to join (node 0 names them)"}, notes
    assert all(isinstance(e, control.JoinTimeout) for e in out), out
    assert {str(e) for e in out} == {
        "node 2 did not join within the timeout: is rankrun started on every node?"
    }


def test_agents_without_a_node_rank_take_tickets_in_join_order() -> None:
    job = Job(3)
    out: dict[str, Any] = {}

    def one(name: str, info: control.NodeInfo, ticketed: bool) -> None:
        try:
            out[name] = control.join(job.store(), info, timeout=20, ticketed=ticketed)
        except control.ControlError as e:
            out[name] = e

    threads = []
    for name, info, ticketed in (("host", node(0, 3), False), ("first", node(0, 3, hostname="a"),
                                 True), ("second", node(0, 3, hostname="b"), True)):  # fmt: skip
        threads.append(threading.Thread(target=one, args=(name, info, ticketed)))
        threads[-1].start()
        keys = control.JobStore(job.server, job.run_id).keys
        claims = [keys.claim(r) for r in range(len(threads))]
        wait_until(lambda: job.server.check(claims), 30, f"{name}'s claim", every=0.02)  # noqa: B023
    for t in threads:
        t.join(60)
    assert [out[n].node_rank for n in ("host", "first", "second")] == [0, 1, 2], out
    assert {r: n.hostname for r, n in out["host"].nodes.items()} == {0: "host0", 1: "a", 2: "b"}
    before = job.snapshot()
    with pytest.raises(control.Stranger, match=r"this agent \(no --node-rank on late\)"):
        control.join(job.store(), node(0, 3, hostname="late"), timeout=5, ticketed=True)
    assert job.snapshot() == before, "a late agent takes no ticket"


def test_too_many_nodes_for_the_job_is_a_mismatch() -> None:
    job = Job(2)
    out = join_all(job, [node(0, 2), node(2, 3)])
    assert {str(e) for e in out} == {
        "--nnodes: node 0 has 2, node 2 has 3: start every node with the same settings"
    }, out


@pytest.mark.slow
def test_garbage_on_the_port_does_not_break_the_store() -> None:
    job = Job(1)
    client = job.client()
    client.set("k", "v")
    junk = [b"GET / HTTP/1.0\r\n\r\n", b"\x00" + (2**62).to_bytes(8, "little"), b""]
    rng = random.Random(7)
    junk += [rng.randbytes(rng.randint(1, 4000)) for _ in range(20)]
    for data in junk:
        with socket.create_connection(("127.0.0.1", job.port), timeout=2) as s:
            s.sendall(data)
    # The server may stall for a reverse DNS lookup of the junk's sender (5 s where DNS is
    # unreachable, as in a sandbox); then it carries on.
    assert client.get("k") == b"v"
    assert job.client().get("k") == b"v"
    assert control.join(job.store(), node(0, 1), timeout=5).nodes[0].node_rank == 0


@pytest.mark.slow
def test_first_failure_is_the_first_add() -> None:
    job = Job(2)
    a, b = job.store(), job.store()
    assert control.first_failure(a, 0) is None
    fa = control.FailureFact(0, "hostA", 1, 1, 11, 3, None, "boom", 1.5)
    fb = control.FailureFact(1, "hostB", 5, 1, 22, None, 9, "", 1.6)
    assert control.publish_failure(a, 0, fa) == 1
    assert control.publish_failure(b, 0, fb) == 2
    assert control.first_failure(b, 0) == fa
    assert control.failures(a, 0) == [(1, fa), (2, fb)]
    long = fa._replace(error_text="x" * 10**6 + "the end")
    assert control.publish_failure(a, 2, long) == 1
    kept = control.first_failure(b, 2)
    assert kept is not None and kept.error_text.endswith("the end")
    assert len(kept.error_text) == control.ERROR_TEXT_MAX

    # at the same moment: exactly one is first, whatever the clocks say
    start, orders = threading.Barrier(2), {}

    def publish(store: control.JobStore, fact: control.FailureFact) -> None:
        start.wait()
        orders[fact.hostname] = control.publish_failure(store, 1, fact)

    threads = [threading.Thread(target=publish, args=p) for p in ((a, fa), (b, fb))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(orders.values()) == [1, 2]
    winner = fa if orders["hostA"] == 1 else fb
    assert control.first_failure(a, 1) == winner


def test_attempt_end_first_reason_holds_and_wakes_every_waiter() -> None:
    job = Job(3)
    a, b = job.store(), job.store()
    waiters = [job.store() for _ in range(3)]
    heard: list[Any] = [None] * 3

    def wait(i: int) -> None:
        heard[i] = control.await_end(waiters[i], 0, timeout=20)

    threads = [threading.Thread(target=wait, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    assert control.attempt_ended(a, 0) is None
    failed = control.AttemptEnd(control.EndKind.FAILURE, "rank 3 failed on node 1", 7, 1)
    signalled = control.AttemptEnd(control.EndKind.INTERRUPT, "interrupted on node 0", 130, 0, 2)
    assert control.end_attempt(a, 0, failed) == failed
    assert control.end_attempt(b, 0, signalled) == failed
    for t in threads:
        t.join(20)
    assert heard == [failed] * 3
    assert control.attempt_ended(b, 0) == failed
    assert control.attempt_ended(b, 1) is None
    assert control.await_end(b, 1, timeout=0.2) is None
    assert failed.halts(0) and not failed.halts(1)


def test_the_last_result_concludes_the_attempt_and_lost_nodes_do_too() -> None:
    job = Job(3)
    stores = [job.store() for _ in range(3)]
    rows = (RankResult(0, 0, 10, 1.0, Ending(0, None, 2.0)),)
    for r in (0, 1):
        control.publish_result(stores[r], 0, control.NodeResult(r, f"h{r}", 10 + r, 0, rows), 3)
    assert control.await_over(stores[0], 0, timeout=0.2) is None
    control.publish_result(stores[2], 0, control.NodeResult(2, "h2", 12, 0, rows), 3)
    assert control.await_over(stores[1], 0, timeout=5) == ()
    assert control.attempt_ended(stores[1], 0) == control.AttemptEnd(
        control.EndKind.DONE, "every node finished", 0, 2
    )
    # attempt 1: node 1 is lost before it publishes; node 0 says so
    control.publish_result(stores[0], 1, control.NodeResult(0, "h0", 10, 0, rows), 3)
    lost = control.AttemptEnd(control.EndKind.LOST, "node 1 lost", 1, 0, lost=(1,))
    assert control.declare_lost(stores[0], 1, lost) == lost
    assert control.await_over(stores[2], 1, timeout=5) == (1,)
    assert lost.halts(0) and lost.halts(2)


def test_barrier_and_results() -> None:
    job = Job(3)
    stores = [job.store() for _ in range(3)]
    errors: list[BaseException] = []
    opened: list[str] = [""] * 3

    def arrive(r: int) -> None:
        time.sleep(0.1 * r)
        try:
            opening = (lambda: "port 4242") if r == 0 else (lambda: "not node 0's")
            opened[r] = control.barrier(stores[r], "restart-1", r, 3, 10, opening)
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=arrive, args=(r,)) for r in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    assert not errors
    assert opened == ["port 4242"] * 3
    with pytest.raises(control.BarrierTimeout, match="node 1, 2 did not reach restart-2"):
        control.barrier(stores[0], "restart-2", 0, 3, timeout=0.5)
    t0 = time.monotonic()  # a node lost, a signal: the barrier is left at once
    with pytest.raises(control.Abandoned, match="node 2 lost"):
        control.barrier(stores[0], "restart-3", 0, 3, timeout=30, given_up=lambda: "node 2 lost")
    assert time.monotonic() - t0 < 5

    rows = (RankResult(0, 0, 10, 1.0, Ending(0, None, 2.0)),)
    control.publish_result(stores[0], 1, control.NodeResult(0, "h0", 10, 0, rows), 3)
    control.publish_result(stores[2], 1, control.NodeResult(2, "h2", 12, 1, rows), 3)
    t0 = time.monotonic()
    got = control.gather_results(stores[0], 1, 3, timeout=5, skip=[1])
    assert time.monotonic() - t0 < 1
    assert sorted(got) == [0, 2] and got[2].exit_code == 1 and got[2].ranks == rows


@pytest.mark.slow
def test_connect_waits_for_node_0_and_says_so() -> None:
    port = free_port()
    notes: list[str] = []
    with pytest.raises(control.Unresponsive, match=f"node 0's store at 127.0.0.1:{port}"):
        control.connect("127.0.0.1", port, timeout=1.6, on_wait=notes.append, every=0.5)
    assert notes and all(
        n == f"waiting for node 0 at 127.0.0.1:{port} (nothing answers there yet)" for n in notes
    )

    later: list[Any] = []
    threading.Timer(1.0, lambda: later.append(control.serve("127.0.0.1", port))).start()
    client = control.connect("127.0.0.1", port, timeout=20)
    client.set("k", "v")
    assert later[0].get("k") == b"v"


@pytest.mark.slow
@pytest.mark.parametrize("reply", [b"HTTP/1.1 400 Bad Request\r\n\r\n", b""])
def test_connect_says_that_something_else_answers_at_node_0s_address(reply: bytes) -> None:
    # Another program holds the port: it answers with what it speaks, or closes at once.
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def answer() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return  # the test closed the listener
            with conn:
                conn.sendall(reply)

    threading.Thread(target=answer, daemon=True).start()
    notes: list[str] = []
    try:
        with pytest.raises(control.Unresponsive) as e:
            control.connect("127.0.0.1", port, timeout=3.5, on_wait=notes.append, every=1.0)
    finally:
        listener.close()
    said = "something else answers there, not a rankrun node 0: another program's port?"
    # The first note may come before any try has met the listener, on a loaded machine.
    expected = f"waiting for node 0 at 127.0.0.1:{port} ({said})"
    assert len(notes) >= 2 and all(n == expected for n in notes[1:]), notes
    assert f"did not answer within 3.5 s ({said})" in str(e.value)


class Broken:
    """A client whose server is gone."""

    def __getattr__(self, name: str) -> Any:
        def fail(*args: Any) -> Any:
            raise RuntimeError("Broken pipe")

        return fail


def test_heartbeat_rules_on_a_fake_clock() -> None:
    job = Job(3)
    now = [0.0]
    beats = [
        control.Heartbeat(job.store(), r, 3, timeout=2, clock=lambda: now[0]) for r in (0, 1, 2)
    ]
    for r in (0, 1, 2):  # join makes these; multi_get would wait for a missing one
        job.server.add(job.store().keys.heartbeat(r), 0)
    beats[2].tick()  # node 2 beats once, then falls silent
    for t in (0.5, 1.5, 2.5):
        now[0] = t
        assert beats[0].tick() == [] and beats[1].tick() == []
    now[0] = 2.6  # node 2's counter last changed at 0.5, as node 0 saw it
    assert beats[0].tick() == [2]
    assert beats[1].tick() == []  # only node 0 reads the others

    cut = control.Heartbeat(
        control.JobStore(Broken(), "job-t"), 1, 3, timeout=2, clock=lambda: now[0]
    )
    now[0] = 4.0
    assert cut.tick() == [] and cut.error == "Broken pipe" and not cut.cut_off()
    now[0] = 4.7
    assert cut.tick() == [] and cut.cut_off() and cut.quiet_for() == pytest.approx(2.1)


def test_the_beat_is_paced_at_thousands_of_nodes_and_a_live_node_is_still_never_lost() -> None:
    assert control.beat_interval(10, 16) == 2.0  # a fifth of the timeout, at most 2 s
    assert control.beat_interval(0.2, 2) == 0.1
    assert control.beat_interval(30, 1024) == 2.0
    assert control.beat_interval(30, 4096) == pytest.approx(4.096)  # node 0: 1,000 beats/s
    assert control.beat_interval(10, 4096) == 2.5  # no more than a quarter of the timeout
    interval = control.beat_interval(30, 100_000)
    job = Job(2)
    now = [0.0]
    node0, node1 = (control.Heartbeat(job.store(), r, 2, interval=interval, timeout=30,
                                      clock=lambda: now[0]) for r in (0, 1))  # fmt: skip
    job.server.add(job.store().keys.heartbeat(1), 0)
    for k in range(12):  # node 1 beats just after node 0 looks, late by up to an interval
        now[0] = k * interval
        assert node0.tick() == []
        now[0] += 0.01 + (interval if k % 3 == 2 else 0.0)
        node1.tick()
    assert node0.tick() == []  # node 1's last beat: silent from here, lost past 30 s
    lost = []
    for _ in range(5):
        now[0] += interval
        lost.append(node0.tick())
    assert lost == [[], [], [], [], [1]]


def test_a_question_rides_the_next_beat_and_node_0_gets_every_answer() -> None:
    job = Job(3)
    for r in (0, 1, 2):
        job.server.add(job.store().keys.heartbeat(r), 1)  # as the join leaves them
    quiet = {0: 7.0, 1: 9.5, 2: None}
    beats = [
        control.Heartbeat(job.store(), r, 3, timeout=5, quiet=lambda r=r: quiet[r])
        for r in (0, 1, 2)
    ]
    for _ in range(2):  # the first beat meets the join's counter, the second writes
        for b in beats:
            b.tick()
    assert beats[0].job_quiet() is None  # node 2 runs no ranks
    quiet[2] = 8.0
    for b in beats[::-1]:  # node 0 reads last: the others' new beats are there
        b.tick()
    assert beats[0].job_quiet() == pytest.approx(7.0, abs=0.5)
    assert beats[1].job_quiet() == pytest.approx(9.5)  # others know only their own

    number = control.ask(beats[0].store, "stacks", "stalled", [0, 1, 2])
    for b in beats:
        b.tick()
    assert [b.asked for b in beats] == [number] * 3
    assert control.question(beats[1].store, number) == control.Ask(number, "stacks", "stalled")
    assert beats[0].lost() == []  # node 0's own write over a beat is not a beat
    for r in (0, 2):
        control.answer(beats[r].store, number, r, f'{{"node": {r}}}')
    got = control.await_answers(beats[0].store, number, [0, 1, 2], timeout=0.5)
    assert got == {0: b'{"node": 0}', 2: b'{"node": 2}'}


class StoppedInCall:
    """A real client, in a process that is stopped (SIGSTOP) for ``pause`` seconds of the
    fake clock while its next beat (``compare_set``) is under way."""

    def __init__(self, client: Any, now: list[float]) -> None:
        self.client, self.now, self.pause = client, now, 0.0

    def __getattr__(self, name: str) -> Any:
        call = getattr(self.client, name)

        def stopped_in(*args: Any) -> Any:
            if name == "compare_set" and self.pause:
                self.now[0] += self.pause
                self.pause = 0.0
            return call(*args)

        return stopped_in


def test_node_0_stopped_in_a_heartbeat_call_knows_it_was_stopped_and_blames_no_one() -> None:
    job = Job(2)
    now = [0.0]
    for r in (0, 1):
        job.server.add(job.store().keys.heartbeat(r), 0)
    stopping = StoppedInCall(job.client(), now)
    beat0 = control.Heartbeat(
        control.JobStore(stopping, "job-t"), 0, 2, timeout=2, clock=lambda: now[0]
    )
    beat1 = control.Heartbeat(job.store(), 1, 2, timeout=2, clock=lambda: now[0])
    for t in (0.5, 1.0):
        now[0] = t
        assert beat1.tick() == [] and beat0.tick() == []
    stopping.pause = 5.0  # past the timeout: node 1 has given node 0 up by the time it runs
    now[0] = 1.5
    assert beat0.tick() == [], "node 0 was the one stopped, not node 1"
    assert beat0.frozen_for == pytest.approx(5.0) and beat0.cut_off()


def test_node_0_says_when_the_listen_queue_is_short_of_the_burst_and_what_to_raise() -> None:
    limit = int(Path("/proc/sys/net/core/somaxconn").read_text())
    assert control.listen_queue_note(limit // 2) is None  # two connections per agent fit
    nnodes = limit  # 2 * limit connections: twice the queue
    note = control.listen_queue_note(nnodes)
    assert note is not None and f"(net.core.somaxconn) is {limit}," in note
    wanted = 1 << (2 * nnodes - 1).bit_length()
    assert note.endswith(f"sysctl -w net.core.somaxconn={wanted}") and wanted >= 2 * nnodes


def test_connects_back_off_with_jitter_up_to_two_seconds() -> None:
    first = [control.backoff(1) for _ in range(200)]
    assert all(0.05 <= s <= 0.1 for s in first) and len(set(first)) > 100
    assert all(1.0 <= control.backoff(n) <= 2.0 for n in (6, 7, 50))


def test_node_0_holds_its_port_before_torch_and_a_taken_port_is_one_line() -> None:
    port = free_port()
    held = control.hold(port)
    with pytest.raises(control.PortInUse, match=f"--master-port {port} is in use"):
        control.hold(port)
    with socket.create_connection(("127.0.0.1", port), timeout=2):
        pass  # an agent that dials before the store is up waits in the queue, not refused
    store = control.serve("127.0.0.1", port, held=held)  # the store takes the socket over
    store.set("k", "v")
    assert control.connect("127.0.0.1", port, timeout=10).get("k") == b"v"


def test_an_agents_first_beat_changes_its_key() -> None:
    job = Job(2)
    key = job.store().keys.heartbeat(1)
    job.server.add(key, 1)  # as the join leaves it
    control.Heartbeat(job.store(), 1, 2, timeout=5).tick()
    assert job.server.get(key) == b"0:-"  # node 0 sees it beat at once
