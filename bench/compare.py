"""rankrun side by side with torchrun and the bare Popen loop, on the same workloads.

    python bench/compare.py                    # the full set: medians of 5, up to 256 ranks
    python bench/compare.py --quick            # a reduced set, one node only, into results/quick/
    python bench/compare.py --launch-only      # only the launch rows (--sizes 1,8,64,256)
    python bench/compare.py --multi-node-only  # only the multi-node rows (--agents 2,4,8)
    python bench/compare.py --rest-only        # only failure, leftovers and output (4x20 MB)

Writes results/latest.md (the tables), results/latest.json (every sample) and, with
matplotlib, results/launch_overhead.png. Runs are interleaved launcher by launcher, and each
figure is a median; ratios are to the bare loop measured in the same run. A partial run
(--launch-only, --multi-node-only, --rest-only, --sizes, --repeats, --agents) writes to
results/partial/.

rankrun's guardian (comm ``rankrun-guard``) outlives the launcher by design: about a second
after a SIGKILL, looking for ranks still being started. It is not counted as left behind;
how long it stayed after the launcher exited has a column of its own.

The multi-node rows run N agents of one rank each on this host, rankrun's on one
--master-port and torchrun's on one c10d --rdzv-endpoint; the bare loop has no such mode.
Every agent imports torch, and torchrun's agents mostly hang after a failure (20 s each):
--multi-node-only takes about 10 minutes on 2 idle cores.
"""

from __future__ import annotations

import argparse
import compileall
import importlib.util
import json
import os
import platform
import select
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path

HERE = Path(__file__).resolve().parent
WORKLOADS = HERE / "workloads"
RESULTS = HERE / "results"
TAG = "BENCH_TAG"
GNU_TIME = "/usr/bin/time"
HANG_S = 3.0  # a launcher that has not exited this long after a rank failed is hung
# Across nodes: longer than rankrun's --node-timeout (10 s), so that an exit on a lost node's
# timeout still shows as a time; an agent running this long after the failure is hung.
MULTI_HANG_S = 20.0
# For N agents, each importing torch, to bring up their ranks: on 2 cores the imports share
# them, about 0.7 s an agent idle (8 agents: 6 s), several times that on a loaded machine.
MULTI_START_S = 60.0
MULTI_START_PER_AGENT_S = 15.0
GUARDIAN = "rankrun-guard"  # the comm rankrun's guardian gives itself
GUARDIAN_LIMIT_S = 40.0  # longer than rankrun's default grace period (30 s)
SIGNALS = ("SIGINT", "SIGTERM", "SIGKILL")  # sent to the launcher, for the leftovers
FULL_SIZES, FULL_AGENTS = [1, 8, 64, 256], [2, 4, 8]


@dataclass(frozen=True)
class Launcher:
    name: str
    argv: Callable[[int, Path, bool], list[str]]
    """(ranks, workload, chatty) -> the command line."""


def _find(program: str) -> str | None:
    beside = Path(sys.executable).parent / program
    return str(beside) if beside.exists() else shutil.which(program)


def launchers() -> dict[str, Launcher | None]:
    """The three launchers, each with the same flags where they share them; None if absent."""
    bare = [sys.executable, str(HERE / "bare_loop.py")]
    rankrun, torchrun = _find("rankrun"), _find("torchrun")

    def common(program: str, n: int) -> list[str]:
        return [program, "--standalone", "--nproc-per-node", str(n), "--no-python"]

    return {
        "bare loop": Launcher("bare loop", lambda n, w, _: [*bare, str(n), str(w)]),
        "rankrun": rankrun and Launcher("rankrun", lambda n, w, _: [*common(rankrun, n), str(w)]),
        "torchrun": torchrun
        and Launcher(
            "torchrun",
            lambda n, w, chatty: [*common(torchrun, n), *(["--tee", "3"] * chatty), str(w)],
        ),
    }


@dataclass(frozen=True)
class MultiNode:
    name: str
    argv: Callable[[int, int, int, Path], list[str]]
    """(nodes, node rank, port, workload) -> one agent's command line."""


def multi_node_launchers() -> dict[str, MultiNode | None]:
    """rankrun and torchrun as N agents on 127.0.0.1, one rank each; None if absent."""
    rankrun, torchrun = _find("rankrun"), _find("torchrun")

    def rankrun_agent(nodes: int, node: int, port: int, workload: Path) -> list[str]:
        return [str(rankrun), "--nnodes", str(nodes), "--node-rank", str(node),
                "--master-addr", "127.0.0.1", "--master-port", str(port),
                "--nproc-per-node", "1", "--no-python", str(workload)]  # fmt: skip

    def torchrun_agent(nodes: int, node: int, port: int, workload: Path) -> list[str]:
        # c10d assigns the node ranks (torchrun ignores --node-rank there): no --node-rank.
        return [str(torchrun), "--nnodes", str(nodes), "--nproc-per-node", "1",
                "--rdzv-backend", "c10d", "--rdzv-endpoint", f"127.0.0.1:{port}",
                "--no-python", str(workload)]  # fmt: skip

    return {
        "rankrun": rankrun and MultiNode("rankrun", rankrun_agent),
        "torchrun": torchrun and MultiNode("torchrun", torchrun_agent),
    }


_handed_out: set[int] = set()


def free_port() -> int:
    """A port free now on 127.0.0.1, and one this run has not used (no TIME_WAIT clash)."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in _handed_out:
            _handed_out.add(port)
            return port


@dataclass
class Job:
    """One launcher process, started in a session of its own and tagged for the leftover count."""

    proc: subprocess.Popen[bytes]
    tag: str
    started: float

    @classmethod
    def start(
        cls, argv: list[str], work: Path, stdout: int | None = None, tag: str | None = None
    ) -> Job:
        tag = tag or uuid.uuid4().hex
        env = {**os.environ, TAG: tag, "BENCH_DIR": str(work)}
        started = time.time()
        proc = subprocess.Popen(
            argv, env=env, stdout=stdout if stdout is not None else subprocess.DEVNULL,
            stderr=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip
        return cls(proc, tag, started)

    def wait(self, timeout: float) -> float | None:
        """The wall-clock time the launcher exited, or None if it still runs after ``timeout``."""
        fd = os.pidfd_open(self.proc.pid)
        try:
            ready, _, _ = select.select([fd], [], [], timeout)
        finally:
            os.close(fd)
        if not ready:
            return None
        exited = time.time()
        self.proc.wait()
        return exited

    def leftovers(self) -> int:
        """Live processes this job started, other than a launcher still running and its guardian."""
        return len(left_behind(self.tag, {self.proc.pid}))

    def guardian_stay(self, exited: float) -> float | None:
        """Seconds from ``exited`` until no guardian of this job is left, polled every 10 ms;
        None when there was none; GUARDIAN_LIMIT_S or more when one stayed that long."""
        seen = False
        while guardians(self.tag) and time.time() < exited + GUARDIAN_LIMIT_S:
            seen = True
            time.sleep(0.01)
        return max(0.0, time.time() - exited) if seen else None

    def end(self) -> None:
        kill_tagged(self.tag)
        self.proc.wait()


@dataclass
class Agents:
    """N launcher agents, one per node, all on this host; one tag covers every process."""

    jobs: list[Job]
    tag: str
    started: float

    @classmethod
    def start(cls, launcher: MultiNode, nodes: int, workload: Path, work: Path) -> Agents:
        port, tag = free_port(), uuid.uuid4().hex
        started = time.time()
        jobs = [Job.start(launcher.argv(nodes, node, port, workload), work, tag=tag)
                for node in range(nodes)]  # fmt: skip
        return cls(jobs, tag, started)

    def wait(self, timeout: float) -> list[float | None]:
        """Each agent's exit time, in launch order; None for one still running after ``timeout``."""
        exits: list[float | None] = [None] * len(self.jobs)
        fds = {os.pidfd_open(job.proc.pid): i for i, job in enumerate(self.jobs)}
        deadline = time.monotonic() + timeout
        try:
            while fds and (left := deadline - time.monotonic()) > 0:
                ready, _, _ = select.select(list(fds), [], [], left)
                now = time.time()
                for fd in ready:
                    i = fds.pop(fd)
                    os.close(fd)
                    exits[i] = now
                    self.jobs[i].proc.wait()
        finally:
            for fd in fds:
                os.close(fd)
        return exits

    def exit_codes(self) -> list[int | None]:
        """Each agent's exit code, in launch order; None for one still running at the wait."""
        return [job.proc.returncode for job in self.jobs]

    def leftovers(self) -> int:
        """Live processes these agents started, other than agents that are still running."""
        running = {job.proc.pid for job in self.jobs if job.proc.returncode is None}
        return len(left_behind(self.tag, running))

    def end(self) -> None:
        kill_tagged(self.tag)
        for job in self.jobs:
            job.proc.wait()


def tagged(tag: str) -> list[int]:
    """The live processes that carry the bench's tag: rankrun's own reading of /proc."""
    from rankrun.inspect.procfs import carrying

    return list(carrying(TAG, tag))


def comm(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip()
    except OSError:
        return ""


def guardians(tag: str) -> list[int]:
    return [p for p in tagged(tag) if comm(p) == GUARDIAN]


def left_behind(tag: str, running: set[int]) -> list[int]:
    """Live processes that carry ``tag``, but for ``running`` launchers and rankrun's guardian."""
    return [p for p in tagged(tag) if p not in running and comm(p) != GUARDIAN]


def kill_tagged(tag: str) -> None:
    """SIGKILL every live process that carries ``tag``, by pid."""
    for pid in tagged(tag):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def wait_for_ranks(work: Path, count: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while len(list(work.glob("up.*"))) < count:
        if time.monotonic() > deadline:
            raise RuntimeError(f"ranks did not come up in {work}")
        time.sleep(0.01)


def read_stamp(path: Path) -> float | None:
    """The time a workload wrote to ``path``, or None if it has not (yet) written it whole."""
    try:
        return float(path.read_text())
    except (OSError, ValueError):
        return None


def wait_for_stamp(path: Path, timeout: float) -> float | None:
    deadline = time.monotonic() + timeout
    while (stamp := read_stamp(path)) is None and time.monotonic() < deadline:
        time.sleep(0.01)
    return stamp


def measure_launch(launcher: Launcher, ranks: int) -> float:
    with tempfile.TemporaryDirectory() as work:
        job = Job.start(launcher.argv(ranks, WORKLOADS / "exit0.sh", False), Path(work))
        exited = job.wait(timeout=300)
        assert exited is not None, f"{launcher.name} did not finish {ranks} ranks"
        return exited - job.started


def measure_failure(launcher: Launcher) -> dict[str, float | int | None]:
    """4 ranks; rank 1 exits 3 once all are up. Latency from its exit to the launcher's."""
    with tempfile.TemporaryDirectory() as work:
        job = Job.start(launcher.argv(4, WORKLOADS / "fail.sh", False), Path(work))
        try:
            exited = job.wait(timeout=HANG_S)
            died = float((Path(work) / "died").read_text())
            time.sleep(1)
            return {
                "latency_s": None if exited is None else exited - died,
                "exit_code": None if exited is None else job.proc.returncode,
                "leftovers": job.leftovers(),
            }
        finally:
            job.end()


def measure_signal(launcher: Launcher, signum: int) -> dict[str, float | int | None]:
    """Processes alive one second after the launcher got ``signum`` (and exited, if it did),
    and how long rankrun's guardian stayed after the launcher exited."""
    with tempfile.TemporaryDirectory() as work:
        job = Job.start(launcher.argv(4, WORKLOADS / "block.sh", False), Path(work))
        try:
            wait_for_ranks(Path(work), 4)
            job.proc.send_signal(signum)
            exited = job.wait(timeout=40)
            stay = None if exited is None else job.guardian_stay(exited)
            time.sleep(max(0.0, (exited or time.time()) + 1 - time.time()))
            return {"leftovers": job.leftovers(), "guardian_s": stay}
        finally:
            job.end()


def multi_start_s(nodes: int) -> float:
    """How long ``nodes`` agents may take to bring up their ranks before the run fails."""
    return MULTI_START_S + MULTI_START_PER_AGENT_S * nodes


def measure_multi_launch(launcher: MultiNode, nodes: int) -> dict[str, object]:
    """``nodes`` agents whose one rank each notes the time it started and exits 0."""
    with tempfile.TemporaryDirectory() as work:
        agents = Agents.start(launcher, nodes, WORKLOADS / "note_start.sh", Path(work))
        try:
            exits = agents.wait(timeout=multi_start_s(nodes))
            stamps = [read_stamp(path) for path in Path(work).glob("started.*")]
            first = min((s for s in stamps if s is not None), default=None)
            return {
                "first_rank_s": None if first is None else first - agents.started,
                "all_exited_s": None if None in exits else max(exits) - agents.started,
                "ranks_started": len(stamps),
                "exit_codes": agents.exit_codes(),
            }
        finally:
            agents.end()


def measure_multi_failure(launcher: MultiNode, nodes: int) -> dict[str, object]:
    """``nodes`` agents of one blocked rank; the last node's rank exits 3 once all are up.

    Latency from its exit to the last agent's exit; None if the ranks never all came up, or if
    an agent still runs MULTI_HANG_S after the failure.
    """
    with tempfile.TemporaryDirectory() as work:
        agents = Agents.start(launcher, nodes, WORKLOADS / "fail_last.sh", Path(work))
        try:
            died = wait_for_stamp(Path(work) / "died", timeout=multi_start_s(nodes))
            busy = host_busy_s()
            exits = agents.wait(timeout=MULTI_HANG_S if died is not None else 0)
            teardown = host_busy_s() - busy if None not in exits else None
            time.sleep(1)
            exited = [e for e in exits if e is not None]
            return {
                "latency_s": None if died is None or None in exits else max(exits) - died,
                "first_exit_s": None if died is None or not exited else min(exited) - died,
                "teardown_cpu_s": teardown if died is not None else None,
                "failed": died is not None,
                "exit_codes": agents.exit_codes(),
                "leftovers": agents.leftovers(),
            }
        finally:
            agents.end()


def host_busy_s() -> float:
    """CPU seconds every core of this host has spent busy since boot (/proc/stat): across a
    window, what everything on the host used, the launchers' processes and all under them."""
    with open("/proc/stat") as f:
        ticks = [int(v) for v in f.readline().split()[1:8]]  # to softirq; not steal
    idle = ticks[3] + ticks[4]  # idle, iowait
    return (sum(ticks) - idle) / os.sysconf("SC_CLK_TCK")


def measure_output(launcher: Launcher, lines: int) -> dict[str, float | int]:
    """4 ranks each write ``lines`` lines of 100 bytes; the launcher's stdout is a file."""
    with tempfile.TemporaryDirectory() as work:
        out, rss = Path(work) / "out", Path(work) / "rss"
        argv = launcher.argv(4, WORKLOADS / "chatty.sh", True)
        if os.path.exists(GNU_TIME):
            argv = [GNU_TIME, "-f", "%M", "-o", str(rss), *argv]
        os.environ["BENCH_LINES"] = str(lines)
        with open(out, "wb") as f:
            job = Job.start(argv, Path(work), stdout=f.fileno())
            exited = job.wait(timeout=600)
        assert exited is not None
        with open(out, "rb") as f:
            delivered = sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(1 << 20), b""))
        peak = int(rss.read_text().split()[-1]) / 1024 if rss.exists() else float("nan")
        return {"seconds": exited - job.started, "lines": delivered, "peak_mib": peak}


@dataclass(frozen=True)
class Plan:
    """What one run measures, and how often."""

    sizes: list[int]  # ranks, for the launch rows
    agents: list[int]  # agents of one rank each, for the multi-node rows
    repeats: int
    lines: int  # per rank, for the output row
    failure_rounds: int  # of the repeats, those that also time a failure (both tables)
    launch: bool = True  # the single-node table, with launch columns at each of sizes
    rest: bool = True  # failure, leftovers, peak RSS and output
    multi: bool = True  # the multi-node rows


def rotated(items: list, i: int) -> list:
    """Round ``i``'s order: interleave the launchers, rotating the lead."""
    return items[i % len(items) :] + items[: i % len(items)] if items else []


def run_all(
    chosen: dict[str, Launcher], multi: dict[str, MultiNode], plan: Plan
) -> tuple[dict, dict]:
    """Every sample, by launcher and figure: those on one node, and those across nodes."""
    samples: dict[str, dict[str, list]] = {name: {} for name in chosen}
    across: dict[str, dict[str, list]] = {name: {} for name in multi}

    def record(into: dict, name: str, figure: str, value: object) -> None:
        into[name].setdefault(figure, []).append(value)

    for i in range(plan.repeats):
        for launcher in rotated(list(chosen.values()), i) if plan.launch or plan.rest else []:
            for n in plan.sizes if plan.launch else []:
                record(samples, launcher.name, f"launch_{n}", measure_launch(launcher, n))
            if plan.rest and i < plan.failure_rounds:
                record(samples, launcher.name, "failure", measure_failure(launcher))
            if plan.rest:
                record(samples, launcher.name, "output", measure_output(launcher, plan.lines))
        for agent in rotated(list(multi.values()), i) if plan.multi else []:
            for n in plan.agents:
                record(across, agent.name, f"launch_{n}", measure_multi_launch(agent, n))
                if i < plan.failure_rounds:
                    record(across, agent.name, f"failure_{n}", measure_multi_failure(agent, n))
        print(f"  round {i + 1} of {plan.repeats} done", file=sys.stderr)
    for launcher in chosen.values() if plan.rest else []:  # one run each: a count, not a timing
        for name in SIGNALS:
            record(samples, launcher.name, f"signal_{name}",
                   measure_signal(launcher, signal.Signals[name]))  # fmt: skip
    return samples, across


def median(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if len(present) == len(values) and present else None


def summarize(samples: dict, plan: Plan) -> dict[str, dict[str, object]]:
    rows: dict[str, dict[str, object]] = {}
    for name, figures in samples.items():
        rows[name] = {f"launch_{n}": median(figures[f"launch_{n}"]) for n in plan.sizes}
        if not plan.rest:
            continue
        failures, outputs = figures["failure"], figures["output"]
        rows[name] |= {
            "failure_latency": median([f["latency_s"] for f in failures]),
            "exit_code": failures[-1]["exit_code"],
            "leftovers_failure": max(f["leftovers"] for f in failures),
            **{f"leftovers_{s}": figures[f"signal_{s}"][0]["leftovers"] for s in SIGNALS},
            **{f"guardian_{s}": figures[f"signal_{s}"][0]["guardian_s"] for s in SIGNALS},
            "peak_mib": median([o["peak_mib"] for o in outputs]),
            "output_s": median([o["seconds"] for o in outputs]),
            "output_lines": min(o["lines"] for o in outputs),
        }
    return rows


def code_patterns(runs: list[dict]) -> list[str]:
    """Each distinct set of per-agent exit codes, in launch order, with how often it came."""
    seen: dict[str, int] = {}
    for run in runs:
        codes = " / ".join("hung" if c is None else str(c) for c in run["exit_codes"])
        seen[codes] = seen.get(codes, 0) + 1
    if len(seen) == 1:
        return list(seen)
    return [f"{codes} ({count}×)" for codes, count in seen.items()]


def summarize_multi(across: dict, plan: Plan) -> dict[str, dict[str, object]]:
    rows: dict[str, dict[str, object]] = {}
    for name, figures in across.items():
        for n in plan.agents:
            launches, failures = figures[f"launch_{n}"], figures.get(f"failure_{n}", [])
            rows[f"{name}, {n} agents"] = {
                "launcher": name, "agents": n,
                "first_rank_s": median([r["first_rank_s"] for r in launches]),
                "first_rank_spread": spread([r["first_rank_s"] for r in launches]),
                "all_exited_s": median([r["all_exited_s"] for r in launches]),
                "clean_exit_codes": code_patterns(launches),
                "all_failed": all(f["failed"] for f in failures),
                "failure_latency": median([f["latency_s"] for f in failures]),
                "failure_spread": spread([f["latency_s"] for f in failures]),
                "failure_hung": sum(f["latency_s"] is None for f in failures),
                "teardown_cpu_s": median([f.get("teardown_cpu_s") for f in failures]),
                "failure_runs": len(failures),
                "exit_codes": code_patterns(failures),
                "leftovers_failure": max((f["leftovers"] for f in failures), default=None),
            }  # fmt: skip
    return rows


def spread(values: list[float | None]) -> list[float] | None:
    """The lowest and highest of the runs that have a value; None if none has."""
    present = [v for v in values if v is not None]
    return [min(present), max(present)] if present else None


def _ratio(value: float | None, base: float | None) -> str:
    return f" ({value / base:.2f}×)" if value is not None and base else ""


def table(rows: dict[str, dict[str, object]], plan: Plan, absent: list[str]) -> str:
    base = rows["bare loop"]
    heads = [f"launch, {n} rank{'s' * (n > 1)}" for n in plan.sizes]
    if plan.rest:
        heads += ["failure → exit", "exit code", "left behind: failure / INT / TERM / KILL",
                  "guardian stays: INT / TERM / KILL", "peak RSS",
                  f"output, 4×{plan.lines * 100 / 1e6:g} MB"]  # fmt: skip
    out = ["| launcher | " + " | ".join(heads) + " |", "|---" * (len(heads) + 1) + "|"]
    for name, r in rows.items():
        cells = [f"{r[f'launch_{n}']:.3f} s{_ratio(r[f'launch_{n}'], base[f'launch_{n}'])}"
                 for n in plan.sizes]  # fmt: skip
        if plan.rest:
            cells += rest_cells(r, base, plan.lines)
        out.append(f"| {name} | " + " | ".join(cells) + " |")
    for name in absent:
        out.append(f"| {name} | absent: not installed |" + " |" * (len(heads) - 1))
    return "\n".join(out)


def rest_cells(r: dict[str, object], base: dict[str, object], lines: int) -> list[str]:
    latency = r["failure_latency"]
    cells = ["never exits" if latency is None else f"{latency * 1000:.0f} ms"]
    cells.append("none (hangs)" if r["exit_code"] is None else str(r["exit_code"]))
    left = [r["leftovers_failure"], r["leftovers_SIGINT"], r["leftovers_SIGTERM"],
            r["leftovers_SIGKILL"]]  # fmt: skip
    cells.append(" / ".join(map(str, left)))
    stays = [r[f"guardian_{s}"] for s in SIGNALS]
    cells.append("none" if all(s is None for s in stays) else " / ".join(map(_stay, stays)))
    peak = r["peak_mib"]
    cells.append("n/a (no GNU time)" if peak != peak else f"{peak:.0f} MiB")
    complete = "" if r["output_lines"] >= 4 * lines else " (lines lost!)"
    cells.append(f"{r['output_s']:.2f} s{_ratio(r['output_s'], base['output_s'])}{complete}")
    return cells


def _stay(seconds: object) -> str:
    if seconds is None:
        return "none"
    assert isinstance(seconds, float)
    if seconds >= GUARDIAN_LIMIT_S:
        return f"over {GUARDIAN_LIMIT_S:g} s"
    return f"{seconds * 1000:.0f} ms"


def _seconds(value: object, missing: str) -> str:
    return missing if value is None else f"{value:.3f} s"


def multi_table(rows: dict[str, dict[str, object]], absent: list[str]) -> str:
    heads = ["agents", "launch → first rank running", "launch → all exited (exit 0)",
             "failure → all exited", "CPU from failure to exit", "exit codes, per agent",
             "left behind: failure"]  # fmt: skip
    out = ["| launcher | " + " | ".join(heads) + " |", "|---" * (len(heads) + 1) + "|"]
    for r in rows.values():
        clean = r["clean_exit_codes"]
        unclean = "" if clean == [" / ".join(["0"] * r["agents"])] else f" ({', '.join(clean)})"
        failure = _failure(r) if r["all_failed"] else "ranks never all up"
        first = _seconds(r["first_rank_s"], "never starts") + _range(r["first_rank_spread"], 1, "")
        cells = [str(r["agents"]), first,
                 _seconds(r["all_exited_s"], "never exits") + unclean, failure,
                 _cpu_ms(r.get("teardown_cpu_s")),
                 ", ".join(r["exit_codes"]) or "n/a", str(r["leftovers_failure"])]  # fmt: skip
        out.append(f"| {r['launcher']} | " + " | ".join(cells) + " |")
    for name in absent:
        out.append(f"| {name} | absent: not installed |" + " |" * (len(heads) - 1))
    return "\n".join(out)


def _cpu_ms(seconds: object) -> str:
    return f"{seconds * 1000:.0f} ms" if isinstance(seconds, float) else "n/a"


def _range(bounds: object, scale: float, unit: str) -> str:
    """`` (lowest–highest)`` of a spread, in ``unit`` after ``scale``; empty for one run."""
    if not isinstance(bounds, list) or bounds[0] == bounds[1]:
        return ""
    low, high = (b * scale for b in bounds)
    digits = 0 if scale > 1 else 2
    return f" ({low:.{digits}f}–{high:.{digits}f}{unit})"


def _failure(r: dict[str, object]) -> str:
    """The median failure → all exited with its spread, or how many runs never exited."""
    latency, hung, runs = r["failure_latency"], r["failure_hung"], r["failure_runs"]
    if latency is not None:
        assert isinstance(latency, float)
        return f"{latency * 1000:.0f} ms" + _range(r["failure_spread"], 1000, "")
    bounds = r["failure_spread"]
    if not isinstance(bounds, list):
        return f"never exits in {hung} of {runs} runs"
    others = _range(bounds, 1000, " ms") or f" {bounds[0] * 1000:.0f} ms"
    return f"never exits in {hung} of {runs} runs; the others{others}"


def machine() -> dict[str, object]:
    model = "unknown CPU"
    if os.path.exists("/proc/cpuinfo"):
        with open("/proc/cpuinfo") as f:
            model = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")),
                         model)  # fmt: skip

    def version(dist: str) -> str:
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            return "absent"

    return {
        "cpu": model, "cores": len(os.sched_getaffinity(0)), "os": platform.platform(),
        "python": platform.python_version(), "torch": version("torch"),
        "rankrun": version("rankrun"), "date": time.strftime("%Y-%m-%d"),
    }  # fmt: skip


def plot(samples: dict, sizes: list[int], path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, ax = plt.subplots(figsize=(6, 4))
    for name, figures in samples.items():
        ax.plot(sizes, [median(figures[f"launch_{n}"]) for n in sizes], marker="o", label=name)
    ax.set(xscale="log", yscale="log", xlabel="ranks (each exits at once)",
           ylabel="wall time of the whole launch (s)", title="Launch overhead")  # fmt: skip
    ax.set_xticks(sizes, [str(n) for n in sizes])
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    return True


def compile_bytecode() -> None:
    """Compile rankrun's bytecode, as ``pip install`` does and as torch's already is.

    An editable install under PYTHONDONTWRITEBYTECODE would otherwise recompile rankrun's
    source at every launch, which no installed launcher does.
    """
    spec = importlib.util.find_spec("rankrun")
    if spec is not None and spec.submodule_search_locations:
        for location in spec.submodule_search_locations:
            compileall.compile_dir(location, quiet=1)


def counts(text: str) -> list[int]:
    """``1,8,64`` -> [1, 8, 64], for --sizes and --agents."""
    try:
        values = [int(part) for part in text.split(",")]
    except ValueError:
        values = []
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"want positive counts such as 1,8,64, not {text!r}")
    return values


def count(text: str) -> int:
    """A positive number, for --repeats."""
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"want a positive number, not {text!r}")
    return int(text)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="a reduced set, in under a minute, without the multi-node rows "
                        "unless --multi-node-only or --agents asks for them")  # fmt: skip
    only = parser.add_mutually_exclusive_group()
    only.add_argument("--launch-only", action="store_true",
                      help="only the launch rows, at --sizes")  # fmt: skip
    only.add_argument("--multi-node-only", action="store_true",
                      help="only the multi-node rows, at --agents")  # fmt: skip
    only.add_argument("--rest-only", action="store_true",
                      help="only failure, leftovers, guardian, peak RSS and output")  # fmt: skip
    parser.add_argument("--sizes", type=counts, help="ranks for the launch rows (default: "
                        f"{','.join(map(str, FULL_SIZES))}; 1,8 with --quick)")  # fmt: skip
    parser.add_argument("--agents", type=counts, help="agents for the multi-node rows "
                        f"(default: {','.join(map(str, FULL_AGENTS))})")  # fmt: skip
    parser.add_argument("--repeats", type=count, help="rounds (default: 5; 3 with --quick)")
    parser.add_argument(
        "--results", type=Path,
        help="where to write (default: results/; results/quick/ with --quick; "
        "results/partial/ for a partial run)",
    )  # fmt: skip
    args = parser.parse_args()
    if args.results is None:  # neither a quick nor a partial run overwrites the full results
        args.results = RESULTS / "quick" if args.quick else RESULTS
        partial = [args.launch_only, args.multi_node_only, args.rest_only, args.sizes, args.agents,
                   args.repeats]  # fmt: skip
        if not args.quick and any(partial):
            args.results = RESULTS / "partial"
    return args


def plan_for(args: argparse.Namespace) -> Plan:
    if args.quick:
        sizes, repeats, lines, failure_rounds = [1, 8], 3, 20000, 1
    else:
        sizes, repeats, lines, failure_rounds = FULL_SIZES, 5, 200000, 5
    repeats = args.repeats or repeats
    # Each agent imports torch: the multi-node rows alone took 2 of --quick's 3 minutes.
    multi = not (args.launch_only or args.rest_only) and (
        not args.quick or bool(args.multi_node_only or args.agents)
    )
    return Plan(
        sizes=[] if args.rest_only or args.multi_node_only else args.sizes or sizes,
        agents=args.agents or FULL_AGENTS,
        repeats=repeats, lines=lines, failure_rounds=min(failure_rounds, repeats),
        launch=not args.multi_node_only, rest=not (args.launch_only or args.multi_node_only),
        multi=multi,
    )  # fmt: skip


def command_line(args: argparse.Namespace) -> str:
    flags = [flag for flag, on in (("--quick", args.quick), ("--launch-only", args.launch_only),
             ("--multi-node-only", args.multi_node_only), ("--rest-only", args.rest_only))
             if on]  # fmt: skip
    for flag, values in (("--sizes", args.sizes), ("--agents", args.agents)):
        flags += [flag, ",".join(map(str, values))] if values else []
    flags += ["--repeats", str(args.repeats)] if args.repeats else []
    return " ".join(["python bench/compare.py", *flags])


def report(
    args: argparse.Namespace,
    info: dict[str, object],
    plan: Plan,
    rows: dict[str, dict[str, object]],
    multi_rows: dict[str, dict[str, object]],
    absent: list[str],
    multi_absent: list[str],
) -> str:
    text = [
        f"Machine: {info['cpu']}, {info['cores']} cores, {info['os']}; Python {info['python']}, "
        f"torch {info['torch']}, rankrun {info['rankrun']}; {info['date']}.",
    ]
    if plan.launch:
        failures = f" ({plan.failure_rounds} for failure → exit)" if plan.rest else ""
        counted = ("; leftovers are counted once per case, one second after it, rankrun's "
                   "guardian apart (how long it stayed after the launcher exited)"
                   if plan.rest else "")  # fmt: skip
        text += [
            f"Command: `{command_line(args)}`; medians of {plan.repeats} interleaved "
            f"runs{failures}; ratios are to the bare loop{counted}.",
            "", table(rows, plan, absent),
        ]  # fmt: skip
    if plan.multi:
        text += [
            "",
            f"Across nodes, on this one host (`{command_line(args)}`): N agents of one rank "
            "each, rankrun's on one `--master-port`, torchrun's on one c10d `--rdzv-endpoint` "
            f"(c10d assigns its node ranks); medians of {plan.repeats} interleaved runs "
            f"({plan.failure_rounds} for failure); no baseline, the bare loop has no nodes. "
            "On failure the last node's rank exits 3 once every rank is up; exit codes are "
            f"per agent in launch order, and an agent still running {MULTI_HANG_S:g} s after "
            "the failure never exits; leftovers are counted one second after it. CPU from "
            "failure to exit: what the host's cores spent busy from when the bench saw the "
            "failure's stamp (it looks every 10 ms) to the last agent's exit, all cores "
            "together (/proc/stat, in 10 ms ticks, time stolen by the hypervisor left out). "
            "In brackets: the fastest and slowest run.",
            "", multi_table(multi_rows, multi_absent),
        ]  # fmt: skip
    return "\n".join(text)


def main() -> None:
    args = parse_args()
    plan = plan_for(args)
    found, found_multi = launchers(), multi_node_launchers()
    chosen = {name: launcher for name, launcher in found.items() if launcher is not None}
    multi = {name: agent for name, agent in found_multi.items() if agent is not None}
    compile_bytecode()
    info = machine()
    print(f"machine: {info}", file=sys.stderr)
    samples, across = run_all(chosen, multi, plan)
    rows = summarize(samples, plan) if plan.launch else {}
    multi_rows = summarize_multi(across, plan) if plan.multi else {}
    absent = [name for name, launcher in found.items() if launcher is None]
    multi_absent = [name for name, agent in found_multi.items() if agent is None]
    text = report(args, info, plan, rows, multi_rows, absent, multi_absent)
    args.results.mkdir(parents=True, exist_ok=True)
    (args.results / "latest.md").write_text(text + "\n")
    (args.results / "latest.json").write_text(json.dumps(
        {"machine": info, "quick": args.quick, "plan": asdict(plan), "sizes": plan.sizes,
         "lines": plan.lines, "rows": rows, "samples": samples,
         "multi_node": {"rows": multi_rows, "samples": across}}, indent=1) + "\n")  # fmt: skip
    if plan.sizes and not plot(samples, plan.sizes, args.results / "launch_overhead.png"):
        print("no plot: pip install matplotlib (the bench extra)", file=sys.stderr)
    print(text)


if __name__ == "__main__":
    main()
