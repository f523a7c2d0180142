"""The job layer at scale: rankrun's real control plane, simulated up to 4,096 nodes on one host.

    python bench/scale.py                # N = 16 .. 4,096, the old design's replay, DNS runs
    python bench/scale.py --quick        # N = 16, 256; --node-timeout 2; short windows; no DNS
    python bench/scale.py --sizes 64,1024 --no-old --no-dns

Every simulated agent runs rankrun's own code: ``control.connect``, ``control.read_job``,
``control.join`` and a real ``Link`` with its three threads; node 0 runs ``control.serve``,
``announce`` and the join's ``_decide`` as ``Agent._join`` does, and its Link reads every
heartbeat and declares the lost. The gangs are stand-ins: an agent fails by calling
``link.failed(RankResult)``, as the gang's loop would, and a loop per process waits on every
link's pipe, as the gang's loop waits on one. Agents are spread over 8 processes, up to 128 to
a process (threads inside); node 0 has a process of its own, and node N-1 one of its own, so
that it can be stopped alone (the lost node) and its CPU and memory read (one agent's idle
cost).

Figures for each N:
- join: the last agent started -> every agent has the verdict (``control.join`` returned);
- fan-out: ``link.failed`` on a random node -> the Halted event at every other agent's pipe;
- lost: SIGSTOP node N-1's process -> every other agent has the LOST end;
- the store's share of a fan-out: from its thread's read of the end's ``compare_set`` to its
  last wake-up write, as ``io_clock.c`` (built with the host's C compiler, preloaded into node
  0's process) notes them;
- idle: node 0's store thread CPU (comm ``pt_tcpstore_uv``, /proc schedstat), store requests
  per second (every client wrapped in a counting proxy), node N-1's process CPU and RSS.
All processes share one host, so ``time.monotonic()`` (CLOCK_MONOTONIC) is one clock. The
packed processes raise Python's switch interval (``--switch-interval``, 20 ms): every thread
that waits for the GIL wakes once per interval, and at 4,096 agents the 5 ms default made
those wake-ups take the cores from the store (the join took 30 s, or did not end in 300).

The old design (rankrun 0.3 before the push rewrite) is replayed beside it against a real
store: per agent, ``add`` + ``check`` every 50 ms and ``add`` + ``multi_get`` of the N-1 other
heartbeats every 2 s. Python clients on two cores cannot issue that load past a few hundred
nodes, so the table also gives the store work it would need, from per-request costs measured
on the same store.

Writes results/scale.json, results/scale.md and, with matplotlib, results/scale.png (--quick:
results/quick/).
"""

from __future__ import annotations

import argparse
import json
import mmap
import os
import platform
import queue
import random
import resource
import select
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
FULL_SIZES = [16, 64, 256, 1024, 4096]
QUICK_SIZES = [16, 256]
PER_PROCESS = 128  # at most, simulated agents a process (4,096 agents: 32 processes of torch)
PACKS = 8  # processes the agents are spread over, while they fit in them
BIG = 1024  # from here on, --big-node-timeout: see parse_args
ADDR = "127.0.0.1"
LOOP_COMM = "pt_tcpstore_uv"  # the thread of torch's libuv store that serves every request
OLD_POLL, OLD_INTERVAL = 0.05, 2.0  # the old link's poll and heartbeat interval (timeout 10 s)
DNS_SIZES = [64, 512]
SPEC_ENV = "SCALE_BENCH_SPEC"


# -- In the simulated agents' processes ---------------------------------------------------


class Tally:
    """Store calls of one process, by operation; calls on a clone count as ``clone.<op>``."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.calls: dict[str, int] = {}
        self.woke: dict[int, float] = {}
        """By node rank: when its news thread's last ``wait`` returned (the store's push)."""
        self.waited: dict[int, float] = {}
        """By node rank: when its own client's last ``wait`` returned (the join's verdict)."""
        self.errors: dict[str, int] = {}
        """Store calls that raised, by ``op: first line of the error``."""

    def failed(self, name: str, error: BaseException) -> None:
        what = f"{name}: {str(error).splitlines()[0][:120] if str(error) else type(error).__name__}"
        with self.lock:
            self.errors[what] = self.errors.get(what, 0) + 1

    def count(self, name: str) -> None:
        with self.lock:
            self.calls[name] = self.calls.get(name, 0) + 1

    def get(self, name: str) -> int:
        with self.lock:
            return self.calls.get(name, 0)


class Counted:
    """A real store client whose calls are counted, and whose clones are too."""

    def __init__(self, client: Any, tally: Tally, rank: int, prefix: str = "") -> None:
        self._client, self._tally, self._rank, self._prefix = client, tally, rank, prefix

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._client, name)
        if not callable(attr):
            return attr
        tally, label, rank = self._tally, self._prefix + name, self._rank

        def call(*args: Any, **kwargs: Any) -> Any:
            tally.count(label)
            try:
                value = attr(*args, **kwargs)
            except Exception as e:
                tally.failed(label, e)
                raise
            if label == "clone.wait":
                tally.woke[rank] = time.monotonic()
            elif label == "wait":
                tally.waited[rank] = time.monotonic()
            return value

        return call

    def clone(self) -> Counted:
        self._tally.count("connect")
        try:
            return Counted(self._client.clone(), self._tally, self._rank, "clone.")
        except Exception as e:
            self._tally.failed("clone", e)
            raise


class Sim:
    """The agents of one process, the loop that waits on their links, and its commands."""

    def __init__(self, spec: dict[str, Any]) -> None:
        self.spec, self.n = spec, spec["nnodes"]
        self.tally = Tally()
        self.lock = threading.Lock()
        self.links: dict[int, Any] = {}
        self.joined: list[list[float]] = []
        self.errors = 0
        self.epoll = select.epoll()
        self.by_fd: dict[int, tuple[int, Any]] = {}

    def say(self, **fields: Any) -> None:
        with self.lock:
            sys.stdout.write(json.dumps(fields) + "\n")
            sys.stdout.flush()

    def info(self, rank: int, run_id: str) -> Any:
        from rankrun.base.version import VERSION
        from rankrun.job import control

        return control.NodeInfo(rank, socket.gethostname(), os.getpid(), self.n, 1, run_id,
                                VERSION, control.command_hash("train.py", []))  # fmt: skip

    def join(self, rank: int, client: Any, run_id: str, started: float) -> None:
        """What Agent._join and Agent.__init__ do once connected: join, then the Link."""
        from rankrun.job import control
        from rankrun.job.link import Link

        try:
            store = control.JobStore(client, run_id)
            command = control.command_line("train.py", [])
            opening = self.opening if rank == 0 else (lambda: "")
            timeout = self.spec["join_timeout"]
            joined = control.join(store, self.info(rank, run_id), timeout, command=command,
                                  opening=opening)  # fmt: skip
            done = time.monotonic()
            link = Link(store, joined.nodes, rank, self.n, self.spec["node_timeout"])
        except Exception as e:
            with self.lock:
                self.errors += 1
            self.say(error=rank, message=f"{type(e).__name__}: {e}"[:300])
            self._report_joined()
            return
        with self.lock:
            self.links[rank] = link
            self.by_fd[link.fd] = (rank, link)
            self.joined.append([rank, started, done, self.tally.waited.get(rank, done)])
        self.epoll.register(link.fd, select.EPOLLIN)
        self._report_joined()

    def opening(self) -> str:
        """Node 0's, as the real agent's: the first attempt's workers' store."""
        from rankrun.job import control

        self.workers = control.serve(ADDR, 0)
        return str(self.workers.port)

    def _report_joined(self) -> None:
        with self.lock:
            whole = len(self.joined) + self.errors == len(self.spec["ranks"])
            rows = list(self.joined)
        if whole:
            self.say(joined=rows)
            threading.Thread(target=self._await_linked, daemon=True).start()

    def _await_linked(self) -> None:
        """Every link's news thread waits on its own clone: the job is idle from here."""
        while self.tally.get("clone.wait") < len(self.links):
            time.sleep(0.02)
        self.say(linked=time.monotonic())

    def loop(self) -> None:
        """The gangs' loops: wait on every link's pipe; note each Halted as it arrives."""
        while True:
            ready = self.epoll.poll()
            now = time.monotonic()
            heard = []
            for fd, _ in ready:
                rank, link = self.by_fd[fd]
                for event in link.take():
                    woke = self.tally.woke.get(rank)
                    heard.append([rank, now, getattr(event, "reason", "")[:80], woke])
            if heard:
                self.say(heard=heard)

    def command(self, words: list[str]) -> None:
        from rankrun.job import control
        from rankrun.output.outcome import Ending, RankResult

        if words[0] == "fail":
            rank = int(words[1])
            now = time.time()
            result = RankResult(0, 0, 4242, now - 1, Ending(1, None, now))
            started = time.monotonic()
            self.links[rank].failed(result)
            self.say(failed=rank, t=started)
        elif words[0] == "attempt":  # every node's result of the last attempt, then the next
            number = int(words[1])
            for rank, link in sorted(self.links.items()):
                done = control.NodeResult(rank, "sim", os.getpid(), 0, ())
                control.publish_result(link.store, number - 1, done, self.n)
                link.attempt_number = number
            while not all(number - 1 in link.overs for link in self.links.values()):
                time.sleep(0.01)
            self.say(over=number - 1)
        elif words[0] == "counts":
            with self.tally.lock:
                calls, errors = dict(self.tally.calls), dict(self.tally.errors)
            self.say(counts=calls, errors=errors, t=time.monotonic())
        elif words[0] == "quit":
            os._exit(0)

    def serve_commands(self) -> None:
        threading.Thread(target=self.loop, daemon=True).start()
        for line in sys.stdin:
            if line.split():
                self.command(line.split())
        os._exit(0)  # the coordinator is gone


def prepare_process(spec: dict[str, Any]) -> None:
    """As a real agent: name lookups bounded (unless the run says not), files enough."""
    from rankrun.job.agent import _bound_name_lookups

    if spec.get("res", "set") == "set":
        _bound_name_lookups()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    # Each thread waiting for the GIL wakes every switch interval while another holds it:
    # with 128 agents to a process and 34 processes to 2 cores, the holder is often off the
    # cores, and the waiters' wake-ups (128 every 5 ms) take the cores from everyone.
    sys.setswitchinterval(spec.get("switch_interval", 0.02))


def role_node0(spec: dict[str, Any]) -> None:
    """Node 0 as Agent._join runs it: serve, announce, join (``_decide``), then its Link."""
    prepare_process(spec)
    from rankrun.job import control

    sim = Sim(spec)
    control.open_files_for(2 * sim.n)
    server = control.serve(ADDR, 0)
    loop_tid = next(t for t in os.listdir("/proc/self/task") if comm(os.getpid(), t) == LOOP_COMM)
    client = Counted(server, sim.tally, 0)
    run_id = spec["run_id"]
    control.announce(client, control.JobInfo(run_id, socket.gethostname(), server.port, "now",
                                             sim.n, ""))  # fmt: skip
    sim.say(port=server.port, loop_tid=int(loop_tid), pid=os.getpid())
    threading.Thread(target=sim.join, args=(0, client, run_id, time.monotonic()),
                     daemon=True).start()  # fmt: skip
    sim.serve_commands()


def role_agents(spec: dict[str, Any]) -> None:
    """Nodes ``spec["ranks"]``: on "go", each connects and joins in a thread of its own."""
    prepare_process(spec)
    from rankrun.job import control

    control.torch_distributed()
    sim = Sim(spec)
    sim.say(ready=os.getpid())
    line = sys.stdin.readline()
    if line.strip() != "go":
        os._exit(0)

    def agent(rank: int) -> None:
        started = time.monotonic()
        try:
            raw = control.connect(ADDR, spec["port"], timeout=spec["join_timeout"])
            client = Counted(raw, sim.tally, rank)
            job = control.read_job(client)
        except Exception as e:
            with sim.lock:
                sim.errors += 1
            sim.say(error=rank, message=f"{type(e).__name__}: {e}"[:300])
            sim._report_joined()
            return
        sim.join(rank, client, job.run_id, started)

    for rank in spec["ranks"]:
        threading.Thread(target=agent, args=(rank,), daemon=True).start()
    sim.serve_commands()


def comm(pid: int, tid: str) -> str:
    """A thread's name; "" for one that ended while its task directory was listed."""
    try:
        with open(f"/proc/{pid}/task/{tid}/comm") as f:
            return f.read().strip()
    except OSError:
        return ""


# -- The old design's replay -----------------------------------------------------------------


def role_old_store(spec: dict[str, Any]) -> None:
    """A plain TCPStore, as node 0 of the old design hosted it."""
    prepare_process(spec)
    from rankrun.job import control

    server = control.serve(ADDR, 0)
    tid = next(t for t in os.listdir("/proc/self/task") if comm(os.getpid(), t) == LOOP_COMM)
    print(json.dumps({"port": server.port, "loop_tid": int(tid), "pid": os.getpid()}), flush=True)
    sys.stdin.read()
    os._exit(0)


def role_old_clients(spec: dict[str, Any]) -> None:
    """Agents ``spec["ranks"]`` of the old design, spread over a few connections: every 50 ms
    each asks ``add(results, 0)`` and ``check([end])``; every 2 s it bumps its heartbeat and
    reads the N-1 others. Runs ``spec["seconds"]``, then prints the requests it made."""
    prepare_process(spec)
    from datetime import timedelta

    from rankrun.job import control

    dist = control.torch_distributed()
    n, ranks = spec["nnodes"], spec["ranks"]
    conns = min(len(ranks), spec["connections"])
    groups = [ranks[i::conns] for i in range(conns)]
    made = [0] * conns
    clients = [dist.TCPStore(ADDR, spec["port"], None, False, timedelta(seconds=60))
               for _ in range(conns)]  # fmt: skip
    print(json.dumps({"ready": os.getpid()}), flush=True)
    start = float(sys.stdin.readline())
    end = start + spec["seconds"]

    def replay(i: int) -> None:
        client = clients[i]
        hb = [f"old/hb/{r}" for r in range(n)]
        ticks_per_beat = round(OLD_INTERVAL / OLD_POLL)
        while time.monotonic() < start:
            time.sleep(0.001)
        tick = 0
        while time.monotonic() < end:
            for r in groups[i]:
                client.add("old/results", 0)
                client.check(["old/end"])
                made[i] += 2
                if r % ticks_per_beat == tick % ticks_per_beat:
                    client.add(hb[r], 1)
                    client.multi_get(hb[:r] + hb[r + 1 :])
                    made[i] += 2
            tick += 1
            time.sleep(max(0.0, start + tick * OLD_POLL - time.monotonic()))

    threads = [threading.Thread(target=replay, args=(i,)) for i in range(conns)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    print(json.dumps({"made": sum(made)}), flush=True)
    os._exit(0)


# -- The coordinator -------------------------------------------------------------------------


class Child:
    """A process of the bench: JSON lines out (to a queue), command lines in."""

    def __init__(self, role: str, spec: dict[str, Any], env: dict[str, str],
                 wrap: list[str] | None = None) -> None:  # fmt: skip
        argv = [sys.executable, str(Path(__file__).resolve()), "--role", role]
        env = {**env, SPEC_ENV: json.dumps(spec)}  # not in argv: ps stays readable
        self.proc = subprocess.Popen([*(wrap or []), *argv], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True, env=env)  # fmt: skip
        self.pid = self.proc.pid
        self.messages: queue.SimpleQueue[dict[str, Any]] = queue.SimpleQueue()
        self.unasked: list[dict[str, Any]] = []
        """News that arrived while the coordinator waited for something else."""
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            try:
                self.messages.put(json.loads(line))
            except json.JSONDecodeError:
                pass

    def send(self, line: str) -> None:
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write(line + "\n")
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError):
            pass

    def expect(self, key: str, timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            try:
                message = self.messages.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                raise TimeoutError(f"pid {self.pid}: no {key!r} within {timeout:g} s") from None
            if key in message:
                return message
            if "heard" in message:
                self.unasked.append(message)
            if "error" in message:
                print(f"  agent {message['error']}: {message['message']}", file=sys.stderr)

    def end(self) -> None:
        self.send("quit")
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()  # a stopped one (the lost node) ends only so
            try:
                self.proc.wait(60)  # thousands of threads to end, on a saturated host
            except subprocess.TimeoutExpired:
                print(f"  pid {self.pid} not ended 60 s after SIGKILL", file=sys.stderr)


def gather(children: list[Child], key: str, timeout: float) -> list[dict[str, Any]]:
    return [c.expect(key, timeout) for c in children]


def thread_cpu_ns(pid: int, tid: int) -> int:
    """A thread's run time, ns (schedstat's first field: finer than stat's clock ticks)."""
    with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
        return int(f.read().split()[0])


def process_cpu_ns(pid: int) -> int:
    total = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            total += thread_cpu_ns(pid, int(tid))
        except (OSError, ValueError):
            pass  # a thread that ended meanwhile
    return total


def rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def quantiles(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    if not ordered:
        return {"p50": float("nan"), "p99": float("nan"), "max": float("nan"), "count": 0}

    def at(q: float) -> float:
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    return {"p50": at(0.5), "p99": at(0.99), "max": ordered[-1], "count": len(ordered)}


class Job:
    """One simulated job of N nodes: node 0, the packed agents, and node N-1 alone."""

    def __init__(self, n: int, args: argparse.Namespace, env: dict[str, str],
                 wrap: list[str] | None = None) -> None:  # fmt: skip
        self.n, self.args = n, args
        self.node_timeout = args.node_timeout if n < BIG else args.big_node_timeout
        base = {"nnodes": n, "node_timeout": self.node_timeout, "res": args.res,
                "switch_interval": args.switch_interval,
                "join_timeout": args.join_timeout, "run_id": f"scale{n}"}  # fmt: skip
        self.clock_file = f"{args.work}/io-{n}.bin" if args.io_clock else None
        clocked = {"LD_PRELOAD": args.io_clock, "IO_CLOCK_FILE": self.clock_file}
        self.node0 = Child("node0", {**base, "ranks": [0]},
                           {**env, **clocked} if self.clock_file else env, wrap)  # fmt: skip
        hello = self.node0.expect("port", 120)
        self.clock = IoClock(self.clock_file) if self.clock_file else None
        self.port, self.loop_tid, self.node0_pid = hello["port"], hello["loop_tid"], hello["pid"]
        packed = list(range(1, n - 1))
        count = pack_count(n, args.per_process)
        spec = {**base, "port": self.port}
        self.groups = [packed[i::count] for i in range(count)]
        self.packs = [Child("agents", {**spec, "ranks": g}, env, wrap) for g in self.groups]
        self.lone = Child("agents", {**spec, "ranks": [n - 1]}, env, wrap)
        self.agents = [*self.packs, self.lone]
        self.owner = {0: self.node0, n - 1: self.lone}
        for child, group in zip(self.packs, self.groups, strict=True):
            self.owner.update(dict.fromkeys(group, child))
        self.everyone = [self.node0, *self.agents]

    def patience(self, seconds: float) -> float:
        """A wait's limit: at thousands of agents per core their threads answer slowly."""
        return seconds + self.n / 8

    def join(self) -> dict[str, float]:
        gather(self.agents, "ready", 180)
        cpu0 = thread_cpu_ns(self.node0_pid, self.loop_tid)
        went = time.monotonic()
        for child in self.agents:
            child.send("go")
        try:
            rows = [r for c in self.everyone
                    for r in c.expect("joined", self.args.join_timeout + 60)["joined"]]  # fmt: skip
        except TimeoutError:
            raise RuntimeError(f"join not done {time.monotonic() - went:.0f} s after go: "
                               f"{self.store_says()}") from None  # fmt: skip
        if len(rows) != self.n:
            raise RuntimeError(f"{self.n - len(rows)} of {self.n} agents did not join: "
                               f"{self.store_says()}")  # fmt: skip
        cpu1 = thread_cpu_ns(self.node0_pid, self.loop_tid)
        last_start = max(r[1] for r in rows if r[0] != 0)
        last_verdict = max(r[2] for r in rows)
        decided = next(r[2] for r in rows if r[0] == 0)
        woke = sorted(r[3] - decided for r in rows if r[0] != 0)
        return {"join_s": last_verdict - last_start, "join_from_go_s": last_verdict - went,
                "verdict_spread_s": last_verdict - decided,
                "verdict_woke_s": quantiles(woke),
                "starts_spread_s": last_start - went,
                "join_store_cpu_s": (cpu1 - cpu0) / 1e9}  # fmt: skip

    def store_says(self) -> str:
        """How far the join got, as node 0's store holds it: claims, verdict, connections."""
        from datetime import timedelta

        from rankrun.job import control
        from rankrun.job.control.keys import Keys

        dist = control.torch_distributed()
        keys = Keys(f"scale{self.n}")
        try:
            client = dist.TCPStore(ADDR, self.port, None, False, timedelta(seconds=20))
            claimed = int(client.add(keys.joined(), 0))
            verdict = client.get(keys.verdict())[:100] if client.check([keys.verdict()]) else None
        except RuntimeError as e:
            return f"the store did not answer: {str(e)[:100]}"
        tables = [Path(f"/proc/net/{t}").read_text().splitlines()[1:] for t in ("tcp", "tcp6")]
        conns = sum(
            1
            for table in tables
            for line in table
            if line.split()[1].endswith(f":{self.port:04X}") and line.split()[3] == "01"
        )
        return (f"{claimed} of {self.n} claimed, verdict {verdict!r}, {conns} connections "
                f"established to the store")  # fmt: skip

    def linked(self) -> None:
        gather(self.everyone, "linked", self.patience(120))
        self.still()

    def still(self) -> None:
        """Raise if any agent has heard news before the bench made any: node 0 declared
        nodes lost that were not (their beats came too late), and every figure would lie."""
        early = [h for c in self.everyone for m in c.unasked for h in m["heard"]]
        if early:
            raise RuntimeError(f"{len(early)} agents heard an end nobody asked for: "
                               f"{early[0][2]!r}")  # fmt: skip

    def counts(self) -> tuple[dict[str, int], float]:
        for c in self.everyone:
            c.send("counts")
        total: dict[str, int] = {}
        self.store_errors: dict[str, int] = {}
        for m in gather(self.everyone, "counts", self.patience(30)):
            for op, k in m["counts"].items():
                total[op] = total.get(op, 0) + k
            for what, k in m.get("errors", {}).items():
                self.store_errors[what] = self.store_errors.get(what, 0) + k
        return total, time.monotonic()

    def idle(self, seconds: float) -> dict[str, Any]:
        time.sleep(2.0)  # settle: the links' first beats, node 0's first reads
        calls0, t0 = self.counts()
        store0 = thread_cpu_ns(self.node0_pid, self.loop_tid)
        node0_0, lone0 = process_cpu_ns(self.node0_pid), process_cpu_ns(self.lone.pid)
        packs0 = sum(process_cpu_ns(c.pid) for c in self.packs)
        w0 = time.monotonic()
        time.sleep(seconds)
        wall = time.monotonic() - w0
        store1 = thread_cpu_ns(self.node0_pid, self.loop_tid)
        node0_1, lone1 = process_cpu_ns(self.node0_pid), process_cpu_ns(self.lone.pid)
        packs1 = sum(process_cpu_ns(c.pid) for c in self.packs)
        calls1, t1 = self.counts()
        ops = {op: (calls1.get(op, 0) - calls0.get(op, 0)) / (t1 - t0) for op in calls1}
        ops = {op: round(rate, 1) for op, rate in ops.items() if rate and op != "connect"}
        return {
            "idle_s": round(wall, 1),
            "store_cpu_pct": 100 * (store1 - store0) / 1e9 / wall,
            "node0_process_cpu_pct": 100 * (node0_1 - node0_0) / 1e9 / wall,
            "requests_per_s": sum(ops.values()),
            "requests_by_op": ops,
            "agent_cpu_pct": 100 * (lone1 - lone0) / 1e9 / wall,
            "agent_rss_mib": rss_mib(self.lone.pid),
            "agent_threads": len(os.listdir(f"/proc/{self.lone.pid}/task")),
            "packed_agents_cpu_pct": 100 * (packs1 - packs0) / 1e9 / wall,
        }

    def fan_out(self, attempt: int) -> dict[str, Any]:
        """``link.failed`` on a random node (not N-1, kept for the lost-node run)."""
        if attempt:
            for c in self.everyone:
                c.send(f"attempt {attempt}")
            gather(self.everyone, "over", self.patience(60))
        rank = random.randrange(0, self.n - 1)
        since = self.clock.mark() if self.clock else 0
        cpu0 = thread_cpu_ns(self.node0_pid, self.loop_tid)
        self.owner[rank].send(f"fail {rank}")
        failed = self.owner[rank].expect("failed", self.patience(30))["t"]
        heard = self.hear(self.n - 1, self.patience(60), {rank})
        cpu1 = thread_cpu_ns(self.node0_pid, self.loop_tid)
        latencies = [1000 * (t - failed) for t, _ in heard.values()]
        pushed = [1000 * (w - failed) for _, w in heard.values() if w is not None]
        out: dict[str, Any] = {"node": rank, "store_cpu_ms": (cpu1 - cpu0) / 1e6,
                               "latencies_ms": latencies, "push_ms": pushed}  # fmt: skip
        if self.clock is not None:
            out["store_share"] = self.clock.share(since, self.loop_tid)
        return out

    def hear(self, count: int, timeout: float, exclude: set[int]) -> dict[int, tuple[float, Any]]:
        """The first Halted at each agent but ``exclude``, until ``count`` have one: when it
        reached the pipe's loop, and when the agent's ``wait`` returned."""
        heard: dict[int, tuple[float, Any]] = {}
        deadline = time.monotonic() + timeout
        while len(heard) < count and time.monotonic() < deadline:
            for c in self.everyone:
                while True:
                    try:
                        m = c.messages.get_nowait()
                    except queue.Empty:
                        break
                    for rank, t, _, woke in m.get("heard", ()):
                        if rank not in exclude:
                            heard.setdefault(rank, (t, woke))
            time.sleep(0.005)
        if len(heard) < count:
            self.counts()
            raise RuntimeError(f"only {len(heard)} of {count} agents heard within {timeout:g} s;"
                               f" store errors: {self.store_errors}")  # fmt: skip
        return heard

    def lost(self, attempt: int) -> dict[str, float]:
        for c in self.everyone:
            c.send(f"attempt {attempt}")
        gather(self.everyone, "over", self.patience(60))
        from rankrun.job.control import beat_interval

        time.sleep(2 * beat_interval(self.node_timeout, self.n))  # a beat of each
        stopped = time.monotonic()
        os.kill(self.lone.pid, signal.SIGSTOP)
        limit = 3 * self.node_timeout + self.patience(30)
        heard = self.hear(self.n - 1, limit, {self.n - 1})
        times = [t for t, _ in heard.values()]
        last = max(times) - stopped
        return {"lost_s": last, "lost_over_timeout": last / self.node_timeout,
                "node_timeout": self.node_timeout,
                "lost_first_s": min(times) - stopped}  # fmt: skip

    def end(self) -> None:
        for c in self.everyone:
            c.end()
        if self.clock is not None:
            self.clock.map.close()
        if self.clock_file and os.path.exists(self.clock_file):
            os.unlink(self.clock_file)


class IoClock:
    """Node 0's reads and writes, as ``io_clock.c`` notes them in a shared file: when its
    store thread read the end's ``compare_set`` and when it wrote each wake-up."""

    HEAD, NOTE = struct.Struct("<qq"), struct.Struct("<diiq8s")

    def __init__(self, path: str) -> None:
        fd = os.open(path, os.O_RDONLY)
        try:
            self.map = mmap.mmap(fd, 0, prot=mmap.PROT_READ)
        finally:
            os.close(fd)

    def mark(self) -> int:
        """The number of notes so far."""
        return int(self.HEAD.unpack_from(self.map, 0)[0])

    def notes(self, since: int, tid: int) -> list[tuple[float, str, int]]:
        """Thread ``tid``'s notes from note ``since``: (time, "r" or "w", bytes)."""
        slots = self.HEAD.unpack_from(self.map, 0)[1]
        upto = min(self.mark(), slots)
        rows = (self.NOTE.unpack_from(self.map, self.HEAD.size + i * self.NOTE.size)
                for i in range(since, upto))  # fmt: skip
        return [(t, chr(op), size) for t, who, op, size, _ in rows if who == tid]

    def share(self, since: int, tid: int) -> dict[str, Any]:
        """From the read that woke the waiters to the last of the wake-ups: the run of 1-byte
        writes, which the server makes in one pass before it answers the ``compare_set``."""
        notes = self.notes(since, tid)
        first = next((i for i, (_, op, size) in enumerate(notes) if op == "w" and size == 1),
                     None)  # fmt: skip
        if first is None:
            return {"error": "no wake-ups seen", "notes": len(notes)}
        read = next((i for i in range(first, -1, -1) if notes[i][1] == "r"), None)
        if read is None:
            return {"error": "no read before the wake-ups", "notes": len(notes)}
        last = first
        while last + 1 < len(notes) and notes[last + 1][1:] == ("w", 1):
            last += 1
        t0 = notes[read][0]
        times = [t for t, _, _ in notes[first : last + 1]]
        gaps = [1e6 * (b - a) for a, b in zip(times, times[1:], strict=False)]
        quarter = max(1, len(gaps) // 4)
        return {"share_ms": 1000 * (notes[last][0] - t0), "wakeups": last - first + 1,
                "first_wake_ms": 1000 * (notes[first][0] - t0),
                "gap_us": quantiles(gaps), "gap_us_first_quarter": quantiles(gaps[:quarter])["p50"],
                "gap_us_last_quarter": quantiles(gaps[-quarter:])["p50"]}  # fmt: skip


def write_floor_ms(n: int) -> float:
    """What ``n`` 1-byte writes to ``n`` loopback TCP connections cost one thread on this host:
    the floor under the store's share of a fan-out to ``n`` waiters (median of 3 passes)."""
    listener = socket.create_server((ADDR, 0), backlog=n)
    clients, served = [], []
    try:
        for _ in range(n):
            clients.append(socket.create_connection(listener.getsockname()))
            served.append(listener.accept()[0])
        fds = [c.fileno() for c in served]
        passes = []
        for _ in range(3):
            started = time.perf_counter()
            for fd in fds:
                os.write(fd, b"\0")
            passes.append(1000 * (time.perf_counter() - started))
            for c in clients:
                c.recv(16)
        return sorted(passes)[1]
    finally:
        for sock in (*clients, *served, listener):
            sock.close()


def build_io_clock(out: Path) -> str | None:
    """``io_clock.c`` built into ``out``, or None where there is no C compiler."""
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        return None
    lib = out / "io_clock.so"
    built = subprocess.run([cc, "-O2", "-shared", "-fPIC", "-o", str(lib),
                            str(HERE / "io_clock.c"), "-ldl"], capture_output=True)  # fmt: skip
    return str(lib) if built.returncode == 0 else None


def measure_new(n: int, args: argparse.Namespace, env: dict[str, str]) -> dict[str, Any]:
    load_before = os.getloadavg()
    job = Job(n, args, env)
    try:
        row: dict[str, Any] = {"n": n, **job.join()}
        print(f"  N={n}: joined in {row['join_s']:.2f} s", file=sys.stderr)
        job.linked()
        row.update(job.idle(args.idle))
        trials = [job.fan_out(a) for a in range(args.fanouts)]
        samples = [ms for t in trials for ms in t["latencies_ms"]]
        row["fanout_ms"] = quantiles(samples)
        row["push_ms"] = quantiles([ms for t in trials for ms in t["push_ms"]])
        row["fanout_trials"] = [{**quantiles(t["latencies_ms"]), "node": t["node"],
                                 "store_cpu_ms": t["store_cpu_ms"],
                                 "store_share": t.get("store_share")} for t in trials]  # fmt: skip
        shares = [t["store_share"]["share_ms"] for t in trials
                  if "share_ms" in t.get("store_share", {})]  # fmt: skip
        if shares:
            row["store_share_ms"] = quantiles(shares)
            gaps = [t["store_share"]["gap_us"]["p50"] for t in trials
                    if "gap_us" in t.get("store_share", {})]  # fmt: skip
            row["wake_gap_us"] = quantiles(gaps)["p50"]
            row["write_floor_ms"] = write_floor_ms(n)
        attempt = args.fanouts
        row.update(job.lost(attempt))
    finally:
        job.end()
    row["loadavg_before"] = load_before
    row["loadavg_after"] = os.getloadavg()
    return row


def measure_join_only(n: int, args: argparse.Namespace, env: dict[str, str],
                      wrap: list[str] | None = None) -> dict[str, Any]:  # fmt: skip
    load_before = os.getloadavg()
    job = Job(n, args, env, wrap)
    try:
        row: dict[str, Any] = {"n": n, **job.join()}
    except (RuntimeError, TimeoutError) as e:
        row = {"n": n, "join_s": None, "error": str(e)[:200]}
    finally:
        job.end()
    row["loadavg_before"] = load_before
    return row


def measure_old(n: int, args: argparse.Namespace, env: dict[str, str]) -> dict[str, Any]:
    """Replay the old design's idle pattern at N; measure per-request costs on the same store."""
    from datetime import timedelta

    from rankrun.job import control

    dist = control.torch_distributed()
    store = Child("oldstore", {"res": "set"}, env)
    hello = store.expect("port", 60)
    port, pid, tid = hello["port"], hello["pid"], hello["loop_tid"]
    try:
        client = dist.TCPStore(ADDR, port, None, False, timedelta(seconds=60))
        hb = [f"old/hb/{r}" for r in range(n)]
        claims = [f"old/claim/{r}" for r in range(n)]
        claim = json.dumps({"node_rank": 1234, "hostname": "node-0123.cluster.example",
                            "pid": 123456, "nnodes": n, "nproc_per_node": 8,
                            "run_id": "scale", "version": "0.3.0",
                            "command_hash": "0123456789ab"})  # fmt: skip
        for r in range(n):
            client.add(hb[r], 1)
            client.set(claims[r], claim)
        client.add("old/results", 0)
        pair = cost(pid, tid, 2000, lambda: (client.add("old/results", 0),
                                             client.check(["old/end"])))  # fmt: skip
        reps = max(5, min(200, 20000 // n))
        beat = cost(pid, tid, reps, lambda: client.multi_get(hb[1:]))
        read_claims = cost(pid, tid, reps, lambda: client.multi_get(claims))
        demanded = n * (2 / OLD_POLL + 2 / OLD_INTERVAL)
        floor = n * (pair / OLD_POLL + (pair / 2 + beat) / OLD_INTERVAL)
        row: dict[str, Any] = {
            "n": n,
            "cost_us": {
                "add+check": pair * 1e6,
                "multi_get_hb": beat * 1e6,
                "multi_get_claims": read_claims * 1e6,
            },  # fmt: skip
            "demanded_requests_per_s": demanded,
            "store_cpu_floor_pct": 100 * floor,
            "join_claims_store_s": n * read_claims,
        }
        row.update(replay_old(n, port, pid, tid, args, env))
        # Requests spread over many connections cost the store more than back-to-back ones:
        # scale what the replay cost to the load the old agents would have made.
        scaled = row["replay_store_cpu_pct"] * demanded / row["replay_requests_per_s"]
        row["store_cpu_needed_pct"] = max(scaled, row["store_cpu_floor_pct"])
    finally:
        store.send("")
        store.proc.kill()
        store.proc.wait(5)
    return row


def cost(pid: int, tid: int, reps: int, call: Callable[[], object]) -> float:
    """The store thread's CPU seconds per ``call()``."""
    before = thread_cpu_ns(pid, tid)
    for _ in range(reps):
        call()
    return (thread_cpu_ns(pid, tid) - before) / 1e9 / reps


def replay_old(n: int, port: int, pid: int, tid: int, args: argparse.Namespace,
               env: dict[str, str]) -> dict[str, Any]:  # fmt: skip
    seconds = args.old_seconds
    ranks = list(range(n))
    procs = [Child("oldclients", {"nnodes": n, "ranks": ranks[i::2], "port": port,
                                  "seconds": seconds, "res": "set", "connections": 32}, env)
             for i in range(2)]  # fmt: skip
    gather(procs, "ready", 120)
    start = time.monotonic() + 0.2
    for p in procs:
        p.send(repr(start))
    time.sleep(max(0.0, start + 0.5 - time.monotonic()))
    cpu0, w0 = thread_cpu_ns(pid, tid), time.monotonic()
    time.sleep(max(0.5, seconds - 1.0))
    cpu1, w1 = thread_cpu_ns(pid, tid), time.monotonic()
    made = sum(m["made"] for m in gather(procs, "made", seconds + 120))
    for p in procs:
        p.proc.wait(10)
    return {"replay_s": seconds, "replay_requests_per_s": made / seconds,
            "replay_store_cpu_pct": 100 * (cpu1 - cpu0) / 1e9 / (w1 - w0)}  # fmt: skip


# -- Names: the simultaneous-connect stall ------------------------------------------------------


def dns_checks(env: dict[str, str]) -> dict[str, Any]:
    """In a private mount namespace whose resolv.conf names a resolver that never answers
    (options timeout:2 attempts:1): how long a reverse lookup takes in each case."""
    with tempfile.NamedTemporaryFile("w", suffix=".resolv", delete=False) as conf:
        conf.write("nameserver 192.0.2.99\noptions timeout:2 attempts:1\n")
    script = f"mount --bind {conf.name} /etc/resolv.conf && exec {sys.executable} {__file__} "
    out: dict[str, Any] = {"resolver": "192.0.2.99 (never answers), options timeout:2 attempts:1"}
    for case in ("threads", "latch"):
        try:
            done = subprocess.run(["unshare", "-m", "sh", "-c", script + f"--role dns-{case}"],
                                  capture_output=True, text=True, env=env, timeout=120)  # fmt: skip
            out[case] = json.loads(done.stdout.strip().splitlines()[-1])
        except (subprocess.SubprocessError, IndexError, json.JSONDecodeError) as e:
            out[case] = {"error": str(e)[:200]}
    os.unlink(conf.name)
    return out


def lookup_s() -> float:
    started = time.monotonic()
    try:
        socket.getnameinfo(("::ffff:127.0.0.1", 80, 0, 0), socket.NI_NUMERICSERV)
    except OSError:
        pass
    return time.monotonic() - started


def in_thread(fn: Callable[[], float]) -> float:
    box: list[float] = []
    t = threading.Thread(target=lambda: box.append(fn()))
    t.start()
    t.join()
    return box[0]


def role_dns_threads(spec: dict[str, Any]) -> None:
    """Whether RES_OPTIONS set after a first lookup reaches a thread that resolves later."""
    os.environ.pop("RES_OPTIONS", None)
    first = in_thread(lookup_s)
    os.environ["RES_OPTIONS"] = "timeout:1 attempts:1"
    later_new_thread = in_thread(lookup_s)
    later_same_thread = lookup_s()
    print(json.dumps({"without_s": first, "set_after_first_lookup_new_thread_s": later_new_thread,
                      "set_after_first_lookup_main_thread_s": later_same_thread}))  # fmt: skip


def role_dns_latch(spec: dict[str, Any]) -> None:
    """Connect times to a store in this process: the first pays its lookups, the next not."""
    os.environ["RES_OPTIONS"] = "timeout:1 attempts:1"
    from datetime import timedelta

    from rankrun.job import control

    dist = control.torch_distributed()
    started = time.monotonic()
    server = dist.TCPStore(ADDR, 0, None, True, timedelta(seconds=30), wait_for_workers=False)
    times = [time.monotonic() - started]
    for _ in range(4):
        started = time.monotonic()
        dist.TCPStore(ADDR, server.port, None, False, timedelta(seconds=30))
        times.append(time.monotonic() - started)
    print(json.dumps({"serve_then_connects_s": times, "lookup_after_s": lookup_s()}))


def dns_joins(args: argparse.Namespace, env: dict[str, str]) -> list[dict[str, Any]]:
    """Join at DNS_SIZES with RES_OPTIONS unset, set (rankrun's default), and unset but with
    ``::ffff:127.0.0.1`` in /etc/hosts (a private mount namespace)."""
    with tempfile.NamedTemporaryFile("w", suffix=".hosts", delete=False) as hosts:
        hosts.write(Path("/etc/hosts").read_text() + "\n::ffff:127.0.0.1 localhost-v4mapped\n")
    rows = []
    sizes = [s for s in args.dns_sizes]
    for n in sizes:
        for variant in ("set", "unset", "hosts"):
            sub = argparse.Namespace(**{**vars(args), "res": "set" if variant == "set" else "unset",
                                        "join_timeout": args.dns_cap})  # fmt: skip
            wrap = None
            if variant == "hosts":
                wrap = ["unshare", "-m", "sh", "-c",
                        f'mount --bind {hosts.name} /etc/hosts && exec "$@"', "sh"]  # fmt: skip
            unset_env = {k: v for k, v in env.items() if k != "RES_OPTIONS"}
            row = measure_join_only(n, sub, unset_env, wrap)
            row["variant"] = variant
            print(f"  DNS {variant} N={n}: join {row['join_s']}", file=sys.stderr)
            rows.append(row)
    os.unlink(hosts.name)
    return rows


# -- Output ----------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    import torch

    with open("/proc/cpuinfo") as f:
        model = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), "")
    return {"cpus": os.cpu_count(), "cpu_model": model, "kernel": platform.release(),
            "python": platform.python_version(), "torch": torch.__version__,
            "somaxconn": Path("/proc/sys/net/core/somaxconn").read_text().strip(),
            "nofile_hard": resource.getrlimit(resource.RLIMIT_NOFILE)[1],
            "mem_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
            "resolv_conf": Path("/etc/resolv.conf").read_text().strip()}  # fmt: skip


def fmt(value: Any, digits: int = 1) -> str:
    if value is None:
        return "-"
    if isinstance(value, float) and value != value:
        return "-"
    return f"{value:,.{digits}f}"


LEGEND = [
    "join: the last agent's start -> every agent has the verdict; in brackets, node 0's verdict",
    "-> the last agent's. fan-out: `link.failed` on a random node -> the Halted at every other",
    "agent's pipe loop; push: -> that agent's `wait` returned (the store's part and the wake-up).",
    "lost: SIGSTOP of one agent -> every other agent has the end. load: the 1-minute load",
    "average before the N started (it still holds the previous N's threads).",
    "",
    "What the simulation shares with a real job: the code (connect, join, Link with its three",
    "threads, node 0's serve/announce/decide), one real TCPStore served by node 0's process,",
    "the request pattern. What it does not: every agent here shares the same 2 cores, and up to",
    "128 agents share one process and its GIL (switch interval 20 ms), where each real agent",
    "has a host of its own. So the wake-up-to-loop time, the verdict spread and the join are",
    "upper bounds of the real ones, and the store's share competes with the agents' threads for",
    "the cores.",
    "",
]


def targets(data: dict[str, Any]) -> list[str]:
    """Each target: met or missed, by how much; or not measured."""
    rows = {r["n"]: r for r in data["new"]}

    def judged(what: str, n: int, get: Callable[[dict[str, Any]], Any], limit: float,
               unit: str) -> str:  # fmt: skip
        row = rows.get(n)
        value = None if row is None else get(row)
        if value is None:
            return f"- {what} at N={n:,} <= {limit:g} {unit}: not measured (did not complete)"
        verdict = "met" if value <= limit else f"MISSED by {value - limit:,.2f} {unit}"
        return f"- {what} at N={n:,} <= {limit:g} {unit}: {value:,.2f} {unit}, {verdict}"

    agent = max((r["agent_cpu_pct"] for r in data["new"]), default=None)
    return [
        judged("join", 4096, lambda r: r["join_s"], 30, "s"),
        judged("fan-out p99", 64, lambda r: r["fanout_ms"]["p99"], 10, "ms"),
        judged("fan-out p99", 1024, lambda r: r["fanout_ms"]["p99"], 100, "ms"),
        judged(
            "store's share of a fan-out (max)",
            4096,
            lambda r: r.get("store_share_ms", {}).get("max"),
            20,
            "ms",
        ),  # fmt: skip
        judged("node 0's idle store CPU", 4096, lambda r: r["store_cpu_pct"], 5, "%"),
        f"- an agent's idle CPU <= 0.2 %: at most {fmt(agent, 3)} % over every N, "
        f"{'met' if agent is not None and agent <= 0.2 else 'MISSED'}",
    ]


def pack_count(n: int, most: int) -> int:
    """The processes that hold nodes 1 to N-2: ``PACKS`` while ``most`` fit in each."""
    packed = n - 2
    return max(min(PACKS, packed), -(-packed // most), 1)


def packs_said(data: dict[str, Any]) -> str:
    """How many processes held the agents, at each N: as ``Job`` spreads them."""
    most = data.get("per_process", PER_PROCESS)
    counts = [f"{n:,}: {pack_count(n, most)}" for n in data["sizes"]]
    return f"processes of at most {most} (N: processes {', '.join(counts)})"


def share_lines(data: dict[str, Any]) -> list[str]:
    """The store's share of a fan-out at each N, beside what its wake-ups cost at the median
    pace and what N plain writes cost here."""
    rows = [r for r in data["new"] if "store_share_ms" in r]
    if not rows:
        return []
    lines = ["", "Store's share of a fan-out (`io_clock.c` in node 0's process: its store "
             "thread's read of the end's compare_set -> its last wake-up write; median / max of "
             "the fan-outs), beside N wake-ups at their median pace, and N 1-byte socket writes "
             "from Python on this host. The difference is the store thread waiting for a core, "
             "which the agents it woke first are using.", "",
             "| N | share ms | wake-up every us (median) | N at that pace ms | N writes ms |",
             "|---:|---|---:|---:|---:|"]  # fmt: skip
    for r in rows:
        share, gap = r["store_share_ms"], r.get("wake_gap_us", float("nan"))
        lines.append(f"| {r['n']:,} | {fmt(share['p50'])} / {fmt(share['max'])} | {fmt(gap)} | "
                     f"{fmt(gap * r['n'] / 1000)} | {fmt(r.get('write_floor_ms'))} |")  # fmt: skip
    return lines


def write_md(path: Path, data: dict[str, Any]) -> None:
    old = {r["n"]: r for r in data["old"]}
    lines = [
        "# bench/scale.py: rankrun's control plane at N simulated nodes",
        "",
        *LEGEND,
        "",
        f"{data['started']}, {data['machine']['cpus']} cores, torch {data['machine']['torch']};"
        f" --node-timeout {data['node_timeout']:g} s (from N={BIG:,}: "
        f"{data.get('big_node_timeout', data['node_timeout']):g} s); "
        f"agents spread over {packs_said(data)} (node 0 and node N-1 alone); Python switch "
        f"interval "
        f"{1000 * data.get('switch_interval', 0.005):g} ms; "
        f"sweep took {data['sweep_s']:.0f} s.",
        "",
        "| N | join s (verdict spread) | fan-out p50 / p99 / max ms | push p50 / p99 ms | "
        "lost s (x timeout) | store CPU % idle (old: needed) | store req/s idle (old) | "
        "agent CPU % | agent RSS MiB | load 1-min |",
        "|---:|---|---|---|---|---|---|---:|---:|---:|",
    ]
    for r in data["new"]:
        o = old.get(r["n"], {})
        f, push = r["fanout_ms"], r.get("push_ms", {})
        was = fmt(o.get("store_cpu_needed_pct")) if o else "-"
        reqs = fmt(o.get("demanded_requests_per_s"), 0) if o else "-"
        lines.append(
            f"| {r['n']:,} | {fmt(r['join_s'], 2)} ({fmt(r.get('verdict_spread_s'), 2)}) | "
            f"{fmt(f['p50'])} / {fmt(f['p99'])} / {fmt(f['max'])} | "
            f"{fmt(push.get('p50'))} / {fmt(push.get('p99'))} | "
            f"{fmt(r['lost_s'])} ({fmt(r['lost_over_timeout'], 2)} x {r.get('node_timeout', 0):g})"
            f" | {fmt(r['store_cpu_pct'], 2)} ({was}) | {fmt(r['requests_per_s'], 0)} ({reqs}) | "
            f"{fmt(r['agent_cpu_pct'], 3)} | {fmt(r['agent_rss_mib'], 0)} | "
            f"{r['loadavg_before'][0]:.1f} |"
        )
    for failed in data.get("failed", ()):
        lines.append(f"| {failed['n']:,} | did not complete: {failed['error'][:300]} |")
    lines += share_lines(data)
    lines += ["", "Targets (issue 18), on this 2-core machine:", "", *targets(data)]
    if data["old"]:
        lines += ["", "Old design, replayed against a real store:", "",
                  "| N | add+check us | multi_get(N-1 hb) us | replayed req/s | "
                  "replayed store CPU % | store CPU % needed (back-to-back floor) | join: store "
                  "s for N x N claims |", "|---:|---:|---:|---:|---:|---:|---:|"]  # fmt: skip
        for o in data["old"]:
            c = o["cost_us"]
            lines.append(
                f"| {o['n']:,} | {fmt(c['add+check'])} | {fmt(c['multi_get_hb'])} | "
                f"{fmt(o['replay_requests_per_s'], 0)} | {fmt(o['replay_store_cpu_pct'])} | "
                f"{fmt(o['store_cpu_needed_pct'])} ({fmt(o['store_cpu_floor_pct'])}) | "
                f"{fmt(o['join_claims_store_s'], 2)} |"
            )
    if data.get("dns_joins"):
        lines += ["", "Join with the simultaneous-connect stall (RES_OPTIONS unset), "
                  "without it (rankrun's default, timeout:1 attempts:1), and with "
                  "::ffff:127.0.0.1 in /etc/hosts:", "", "| N | variant | join s |",
                  "|---:|---|---:|"]  # fmt: skip
        for d in data["dns_joins"]:
            shown = fmt(d["join_s"], 2) if d["join_s"] is not None else f"> {data['dns_cap']:g}"
            lines.append(f"| {d['n']:,} | {d['variant']} | {shown} |")
    path.write_text("\n".join(lines) + "\n")


def plot(path: Path, data: dict[str, Any]) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    new = data["new"]
    ns = [r["n"] for r in new]
    old = {r["n"]: r for r in data["old"]}
    fig, axes = plt.subplots(2, 3, figsize=(15, 8.5))
    panels = [
        ("join (s)", [("join", [r["join_s"] for r in new])], 30.0),
        ("failure fan-out (ms)", [*[(q, [r["fanout_ms"][q] for r in new])
                                    for q in ("p50", "p99", "max")],
                                  ("push p99", [r.get("push_ms", {}).get("p99") for r in new]),
                                  ("store's share (max)", [r.get("store_share_ms", {}).get("max")
                                                           for r in new])],
         None),  # fmt: skip
        ("lost node -> job ended (x --node-timeout)",
         [("lost", [r["lost_over_timeout"] for r in new])], 1.0),  # fmt: skip
        ("node 0's store CPU at idle (% of a core)",
         [("new", [r["store_cpu_pct"] for r in new]),
          ("old, needed", [old.get(n, {}).get("store_cpu_needed_pct") for n in ns]),
          ("old, replayed", [old.get(n, {}).get("replay_store_cpu_pct") for n in ns])], 5.0),
        ("store requests/s at idle", [("new", [r["requests_per_s"] for r in new]),
                                      ("old, demanded", [old.get(n, {}).get(
                                          "demanded_requests_per_s") for n in ns])], None),
        ("one agent's idle CPU (% of a core)", [("agent", [r["agent_cpu_pct"] for r in new])],
         0.2),
    ]  # fmt: skip
    for ax, (title, series, target) in zip(axes.flat, panels, strict=True):
        for label, ys in series:
            pts = [(n, y) for n, y in zip(ns, ys, strict=True) if y is not None]
            if pts:
                ax.plot(*zip(*pts, strict=True), marker="o", label=label)
        if target is not None:
            ax.axhline(target, color="grey", linestyle="--", linewidth=1, label="target")
        ax.set_xscale("log", base=2)
        if title.startswith(("store requests", "node 0's store", "failure")):
            ax.set_yscale("log")
        ax.set_xticks(ns, [f"{n:,}" for n in ns])
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("nodes (N)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(f"rankrun's control plane, simulated on {data['machine']['cpus']} cores")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


# -- Main ----------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--sizes", type=lambda s: [int(x) for x in s.split(",")])
    p.add_argument("--node-timeout", type=float, help="as rankrun's (10; --quick 2)")
    p.add_argument("--idle", type=float, help="seconds of the idle window (20; --quick 2)")
    p.add_argument("--fanouts", type=int, help="failures per N (3; --quick 2)")
    p.add_argument("--big-node-timeout", type=float, default=30.0,
                   help=f"--node-timeout from N={BIG} on (30): the heartbeat interval stays 2 s, "
                   "but node 0 waits out agents that hear the verdict seconds after it, as "
                   "hundreds of agents sharing one process's GIL do")  # fmt: skip
    p.add_argument("--join-timeout", type=float, default=120.0)
    p.add_argument("--per-process", type=int, default=PER_PROCESS,
                   help=f"simulated agents per process, at most ({PER_PROCESS}); they are "
                   f"spread over {PACKS} processes while they fit")  # fmt: skip
    p.add_argument("--switch-interval", type=float, default=0.02,
                   help="sys.setswitchinterval of the simulated agents' processes (0.02 s; "
                   "Python's own is 0.005)")  # fmt: skip
    p.add_argument("--no-old", action="store_true", help="skip the old design's replay")
    p.add_argument("--old-seconds", type=float, help="seconds of each replay (10; --quick 2)")
    p.add_argument("--no-dns", action="store_true", help="skip the DNS runs (--quick does)")
    p.add_argument("--dns-sizes", type=lambda s: [int(x) for x in s.split(",")],
                   default=DNS_SIZES)  # fmt: skip
    p.add_argument("--dns-cap", type=float, default=90.0, help="join timeout of the DNS runs")
    p.add_argument("--out", type=Path)
    p.add_argument("--role")
    args = p.parse_args(argv)
    args.res = "set"
    quick = args.quick
    args.sizes = args.sizes or (QUICK_SIZES if quick else FULL_SIZES)
    args.node_timeout = args.node_timeout or (2.0 if quick else 10.0)
    args.idle = args.idle or (2.0 if quick else 20.0)
    args.fanouts = args.fanouts or (2 if quick else 3)
    args.old_seconds = args.old_seconds or (2.0 if quick else 10.0)
    args.no_dns = args.no_dns or quick
    args.out = args.out or (RESULTS / "quick" if quick else RESULTS)
    return args


ROLES: dict[str, Callable[[dict[str, Any]], None]] = {
    "node0": role_node0, "agents": role_agents, "oldstore": role_old_store,
    "oldclients": role_old_clients, "dns-threads": role_dns_threads, "dns-latch": role_dns_latch,
}  # fmt: skip


def sweep(args: argparse.Namespace, env: dict[str, str], started: str) -> dict[str, Any]:
    """Every N of ``args.sizes``, the old design's replay and the DNS runs."""
    data: dict[str, Any] = {"started": started, "sizes": args.sizes, "quick": args.quick,
                            "node_timeout": args.node_timeout, "machine": machine(),
                            "big_node_timeout": args.big_node_timeout,
                            "per_process": args.per_process,
                            "switch_interval": args.switch_interval,
                            "new": [], "old": [], "dns_cap": args.dns_cap}  # fmt: skip
    for n in args.sizes:
        try:
            data["new"].append(measure_new(n, args, env))
        except (RuntimeError, TimeoutError) as e:  # past what this host can simulate
            data.setdefault("failed", []).append({"n": n, "error": str(e)[:300]})
            print(f"  N={n}: {e}", file=sys.stderr)
            continue
        if not args.no_old:
            data["old"].append(measure_old(n, args, env))
    if not args.no_dns:
        data["dns_checks"] = dns_checks(env)
        data["dns_joins"] = dns_joins(args, env)
    return data


def main() -> None:
    args = parse_args()
    if args.role:
        ROLES[args.role](json.loads(os.environ.get(SPEC_ENV, "{}")))
        return
    started_wall, started = time.strftime("%Y-%m-%d %H:%M:%S"), time.monotonic()
    env = {**os.environ}
    env.pop("RES_OPTIONS", None)  # each process sets it as the real agent does
    args.work = tempfile.mkdtemp(prefix="scale-")
    try:
        args.io_clock = build_io_clock(Path(args.work))
        data = sweep(args, env, started_wall)
    finally:
        shutil.rmtree(args.work, ignore_errors=True)
    data["sweep_s"] = time.monotonic() - started
    data["finished"] = time.strftime("%Y-%m-%d %H:%M:%S")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "scale.json").write_text(json.dumps(data, indent=1) + "\n")
    write_md(args.out / "scale.md", data)
    plot(args.out / "scale.png", data)
    print((args.out / "scale.md").read_text())


if __name__ == "__main__":
    main()
