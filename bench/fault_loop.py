"""A randomized fault loop against real rankrun launchers and node agents.

    python bench/fault_loop.py [--cases 80] [--seed S] [--single-only | --multi-only]
                               [--time-limit 900] [--out FILE]

Each case is drawn from its own seed, printed on its line, and replays alone with
``--seed S --cases 1``: an even seed is one launcher of 2 to 4 ranks, an odd one two or
three node agents on loopback (``--nnodes 2`` or ``3``, 1 or 2 ranks each, ``--node-timeout
2``, ``--shutdown-timeout 2``). Each rank exits 0, fails with its own code, dies of a signal
or hangs, after a while; some ignore SIGTERM, some start a child that starts a ``setsid``
daemon. Zero to two faults land on a launcher or any agent at a random moment after the
start (start-up, an agent's torch import, the join), after every rank is up, or after the
first rank ended (the teardown): SIGKILL, SIGTERM, SIGINT, SIGHUP, or SIGSTOP and SIGCONT
after a pause that is sometimes longer than --node-timeout. An agent may also stay stopped
for the whole job (at most one per case): it gets its SIGCONT only once every other agent
has exited, and must then end too.

Every process a case starts carries a tag in its environment. A case passes when, within
shutdown + node timeout + 10 s of its last event (a fatal fault, a SIGCONT, the failure or
the end of every rank; a join's worth more where a fault hit before every rank was up),
every launcher has exited with a plausible code (a failing rank's
own, 128+N for a signal N sent to it or, across nodes, to the job, 1 for a lost node, 0 only
when every rank exited 0), without a traceback, and nothing tagged is left alive shortly
after. A report that names a node lost must name one that a fault reached, and its root
cause must be a rank drawn to fail, on its own node. The guardian (comm ``rankrun-guard``)
outlives a SIGKILLed launcher by design for about a second, up to the grace period: one
still there later is counted apart. What is left is ended by pid, and recorded as a finding
with the case's seed.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import NamedTuple

from rankrun.inspect.procfs import carrying
from rankrun.plan.ports import free_port

# What the installed ``rankrun`` command runs (``python -m rankrun`` imports runpy first, and
# a SIGINT in that moment is Python's KeyboardInterrupt rather than rankrun's).
RANKRUN = [sys.executable, str(Path(__file__).resolve().parents[1] / "scripts" / "rankrun")]
TAG_VAR = "RANKRUN_FAULT_TAG"
GUARDIAN = "rankrun-guard"
NODE_TIMEOUT, SHUTDOWN = 2.0, 2.0
BOUND_S = SHUTDOWN + NODE_TIMEOUT + 10  # from a case's last event to every launcher's exit
JOIN_TIMEOUT = 12.0  # an agent whose peer died before the join waits this long, as told
JOIN_SLACK = 2 * JOIN_TIMEOUT + 10  # the join, its abort's linger, and a slow torch import
CAP_S = 120.0  # a case that never reached its end: every case is drawn to have one
FATAL = (signal.SIGKILL, signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
RANK_SIGNALS = (signal.SIGKILL, signal.SIGSEGV, signal.SIGABRT, signal.SIGUSR1)

RANK_PY = """
import json, os, resource, signal, subprocess, sys, time
resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
rank, attempt = int(os.environ["RANK"]), int(os.environ["TORCHELASTIC_RESTART_COUNT"])
job = json.load(open("ranks.json"))
me = job["ranks"][rank]
if attempt >= job["heals_at"]:  # the failure was transient: from now on every rank exits 0
    me["end"] = "exit0"
if me["children"]:  # a helper (as a DataLoader's), and a daemon that leaves the groups
    subprocess.Popen(["bash", "-c", "setsid sleep 300 & exec sleep 300"])
if me["ignore_term"]:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
open(f"up.{rank}.{attempt}", "w").close()
if me["end"] == "hang":
    time.sleep(600)
time.sleep(me["after"])
open(f"ending.{rank}.{attempt}", "w").close()
if me["end"] == "signal":
    os.kill(os.getpid(), me["signum"])
    time.sleep(5)
sys.exit(me["code"] if me["end"] == "fail" else 0)
"""


class Rank(NamedTuple):
    end: str  # exit0, fail, signal or hang
    after: float
    code: int
    signum: int
    ignore_term: bool
    children: bool

    def fails(self) -> bool:
        return self.end in ("fail", "signal")

    def exit_code(self) -> int:
        return self.code if self.end == "fail" else 128 + self.signum

    def healed(self) -> Rank:
        return self._replace(end="exit0")


class Fault(NamedTuple):
    node: int
    signum: int
    anchor: str  # start, up (every rank up), ending (the first rank ended), over (the
    # first attempt failed or finished: its teardown, the restart barrier)
    offset: float
    pause: float  # SIGSTOP only: how long until SIGCONT; inf: once every other agent exited


class Case(NamedTuple):
    seed: int
    nodes: int
    per_node: int
    ranks: tuple[Rank, ...]
    faults: tuple[Fault, ...]
    max_restarts: int = 0
    heals_at: int = 1  # the attempt from which every rank exits 0 (max_restarts + 1: never)

    @property
    def multi(self) -> bool:
        return self.nodes > 1

    def ranks_in(self, attempt: int) -> tuple[Rank, ...]:
        """Each rank's behaviour in attempt ``attempt``: as drawn until the case heals."""
        return self.ranks if attempt < self.heals_at else tuple(r.healed() for r in self.ranks)

    def attempts(self) -> int:
        """How many attempts the job makes when no fault reaches it."""
        if not any(r.fails() for r in self.ranks):
            return 1
        return min(self.heals_at, self.max_restarts) + 1


class Finding(NamedTuple):
    kind: str
    node: int | None
    detail: str


def draw_case(seed: int) -> Case:
    rng = random.Random(seed)
    nodes = rng.choice((2, 2, 3)) if seed % 2 else 1
    per_node = rng.randint(1, 2) if nodes > 1 else rng.randint(2, 4)
    ranks = tuple(_draw_rank(rng) for _ in range(nodes * per_node))
    count = rng.choices((0, 1, 2), weights=(1, 6, 3))[0]
    faults: list[Fault] = []
    for _ in range(count):
        fault = _draw_fault(rng, nodes)
        if math.isinf(fault.pause) and any(math.isinf(f.pause) for f in faults):
            fault = fault._replace(pause=NODE_TIMEOUT * 2)  # one agent stays stopped, at most
        faults.append(fault)
    ends = any(r.fails() for r in ranks) or all(r.end != "hang" for r in ranks)
    if not ends and not any(f.signum in FATAL for f in faults):
        faults.append(_draw_fault(rng, nodes, fatal_after_up=True))
    # Drawn last, so that a seed's ranks and faults stay what they were before restarts.
    restarts = rng.choice((0, 0, 1, 2)) if nodes > 1 else 0
    heals_at = rng.randint(1, restarts + 1) if restarts else 1
    if restarts and any(r.fails() for r in ranks) and rng.random() < 0.5:
        faults.append(_draw_restart_fault(rng, nodes, faults))
    return Case(seed, nodes, per_node, ranks, tuple(faults), restarts, heals_at)


def _draw_rank(rng: random.Random) -> Rank:
    end = rng.choices(("exit0", "fail", "signal", "hang"), weights=(4, 2, 1, 2))[0]
    return Rank(end, round(rng.uniform(0.2, 4.0), 2), rng.randint(3, 99),
                int(rng.choice(RANK_SIGNALS)), rng.random() < 0.3, rng.random() < 0.3)  # fmt: skip


def _draw_fault(rng: random.Random, nodes: int, fatal_after_up: bool = False) -> Fault:
    node = rng.randrange(nodes)
    choices: tuple[int, ...] = FATAL if fatal_after_up else (*FATAL, signal.SIGSTOP, signal.SIGSTOP)
    signum = int(rng.choice(choices))
    anchor = "up" if fatal_after_up else rng.choice(("start", "start", "up", "ending"))
    start_span = 4.0 if nodes > 1 else 0.8  # an agent imports torch, then joins
    offset = rng.uniform(0.02, start_span) if anchor == "start" else rng.uniform(0.0, 3.0)
    pause = 0.0
    if signum == signal.SIGSTOP:  # past --node-timeout about half the time, or for good
        forever = nodes > 1 and rng.random() < 0.2
        pause = math.inf if forever else round(rng.uniform(0.1, 5.0), 3)
    return Fault(node, signum, anchor, round(offset, 3), pause)


def _draw_restart_fault(rng: random.Random, nodes: int, faults: list[Fault]) -> Fault:
    """A fault once the first attempt has failed: in its teardown, at the restart barrier,
    or as the next attempt starts."""
    fault = _draw_fault(rng, nodes)
    if math.isinf(fault.pause) and any(math.isinf(f.pause) for f in faults):
        fault = fault._replace(pause=NODE_TIMEOUT * 2)
    return fault._replace(anchor="over", offset=round(rng.uniform(0.0, SHUTDOWN + 1.5), 3))


def describe(case: Case) -> str:
    def rank(r: Rank) -> str:
        end = {"exit0": "0", "fail": f"x{r.code}", "hang": "hang"}.get(
            r.end, signal.Signals(r.signum).name
        )
        end += "" if r.end == "hang" else f"@{r.after:g}"
        return end + ("+noterm" * r.ignore_term) + ("+kids" * r.children)

    def fault(f: Fault) -> str:
        text = f"{signal.Signals(f.signum).name}>{f.node}@{f.anchor}+{f.offset:g}"
        return text + ("/late" if math.isinf(f.pause) else f"/{f.pause:g}s" if f.pause else "")

    shape = f"{case.nodes}x{case.per_node}"
    if case.max_restarts:
        heals = case.heals_at if case.heals_at <= case.max_restarts else "never"
        shape += f" restarts={case.max_restarts} heals@{heals}"
    return f"{shape} ranks[{' '.join(map(rank, case.ranks))}] " \
           f"faults[{' '.join(map(fault, case.faults)) or '-'}]"  # fmt: skip


class Launcher:
    def __init__(self, node: int, argv: list[str], env: dict[str, str], workdir: Path) -> None:
        self.node = node
        self.err_path = workdir / f"stderr.{node}"
        with open(self.err_path, "w") as err:
            self.proc = subprocess.Popen(argv, env=env, cwd=workdir, stdout=subprocess.DEVNULL,
                                         stderr=err, stdin=subprocess.DEVNULL)  # fmt: skip
        self.started = time.monotonic()
        self.fatal_sent: list[tuple[int, float, bool]] = []  # signal, when, before any rank
        self.exited_at: float | None = None

    def running(self) -> bool:
        if self.proc.poll() is None:
            return True
        if self.exited_at is None:
            self.exited_at = time.monotonic()
        return False

    def send(self, signum: int, before_ranks: bool) -> bool:
        if not self.running():
            return False
        os.kill(self.proc.pid, signum)
        if signum in FATAL:
            self.fatal_sent.append((signum, time.monotonic() - self.started, before_ranks))
        return True

    def stderr(self) -> str:
        return self.err_path.read_text(errors="replace")


class Run:
    """One case's processes and the moments of its events."""

    def __init__(self, case: Case, workdir: Path, tag: str) -> None:
        self.case, self.workdir, self.tag = case, workdir, tag
        self.anchors: dict[str, float] = {}
        self.pending = list(case.faults)
        self.conts: list[tuple[float, Launcher]] = []
        self.events: list[float] = []  # fatal faults, SIGCONTs, the failure, every rank's end
        self.delivered: list[str] = []
        self.hit: set[int] = set()  # the nodes a fault reached
        self.hit_before_up = False
        self.hit_between = False  # a fault after an attempt's failure, before the next is up
        self.overs: set[int] = set()  # the attempts whose failure or end was seen
        self.starts: set[int] = set()  # the attempts with a rank up
        ranks = {"ranks": [r._asdict() for r in case.ranks], "heals_at": case.heals_at}
        (workdir / "ranks.json").write_text(json.dumps(ranks))
        (workdir / "rank.py").write_text(RANK_PY)
        env = {**os.environ, TAG_VAR: tag}
        env.pop("OMP_NUM_THREADS", None)
        self.launchers = self._start(env)

    def _start(self, env: dict[str, str]) -> list[Launcher]:
        case = self.case
        common = [*RANKRUN, "--nproc-per-node", str(case.per_node),
                  "--shutdown-timeout", str(SHUTDOWN)]  # fmt: skip
        if not case.multi:
            return [Launcher(0, [*common, "--master-port", "0", "rank.py"], env, self.workdir)]
        common += ["--nnodes", str(case.nodes), "--master-addr", "127.0.0.1", "--master-port",
                   str(free_port()), "--node-timeout", str(NODE_TIMEOUT),
                   "--rdzv-conf", f"join_timeout={JOIN_TIMEOUT:g}",
                   "--max-restarts", str(case.max_restarts)]  # fmt: skip
        stagger = random.Random(case.seed + 1)
        launchers = []
        for node in range(case.nodes):
            if node:
                time.sleep(stagger.uniform(0.0, 0.5))
            argv = [*common, "--node-rank", str(node), "rank.py"]
            launchers.append(Launcher(node, argv, env, self.workdir))
        return launchers

    def drive(self) -> None:
        """Deliver the faults as their moments come, until every launcher exited or the bound."""
        start = self.launchers[0].started
        self.anchors["start"] = start
        while True:
            now = time.monotonic()
            self._see_anchors(now)
            self._deliver(now)
            running = [x for x in self.launchers if x.running()]
            if not running:
                break
            if now >= self.deadline(start):
                break
            time.sleep(0.01)
        for _, launcher in self.conts:  # nothing is left stopped
            _signal(launcher.proc.pid, signal.SIGCONT)

    def deadline(self, start: float) -> float:
        if not self.events:
            return start + CAP_S
        bound = max(self.events) + BOUND_S
        if self.case.multi and (self.hit_before_up or self.hit_between):
            # An agent that had not joined when a fault hit may then wait out its own join,
            # which starts only after its torch import (seconds, more on a loaded machine),
            # or start it only now, after a SIGCONT.
            bound += JOIN_SLACK
        return bound

    def last_attempt(self) -> int:
        """The last attempt that had a rank up (0 if none was)."""
        return max(self.starts, default=0)

    def all_ended(self) -> bool:
        """Whether every rank of the last attempt reached its own end (and was not ended by
        a teardown)."""
        attempt = self.last_attempt()
        return _count(self.workdir, f"ending.*.{attempt}") == len(self.case.ranks)

    def _see_anchors(self, now: float) -> None:
        ranks = self.case.ranks
        if "up" not in self.anchors and _count(self.workdir, "up.*.0") == len(ranks):
            self.anchors["up"] = now
        for attempt in {int(p.name.split(".")[2]) for p in self.workdir.glob("up.*")}:
            if attempt not in self.starts:  # a restart: its ranks start a new stretch
                self.starts.add(attempt)
                self.events.append(now)
        ended: dict[int, set[int]] = {}
        for p in self.workdir.glob("ending.*"):
            rank, attempt = map(int, p.name.split(".")[1:])
            ended.setdefault(attempt, set()).add(rank)
        if ended.get(0) and "ending" not in self.anchors:
            self.anchors["ending"] = now
        for attempt, done in ended.items():
            behaviour = self.case.ranks_in(attempt)
            if attempt not in self.overs and (
                any(behaviour[r].fails() for r in done) or len(done) == len(ranks)
            ):
                self.overs.add(attempt)
                self.anchors.setdefault("over", now)
                self.events.append(now)

    def _deliver(self, now: float) -> None:
        for fault in list(self.pending):
            at = self.anchors.get(fault.anchor)
            if at is None or now < at + fault.offset:
                continue
            self.pending.remove(fault)
            launcher = self.launchers[fault.node]
            if not launcher.send(fault.signum, before_ranks=_count(self.workdir, "up.*") == 0):
                continue
            moment = now - launcher.started
            self.hit.add(fault.node)
            self.delivered.append(f"{signal.Signals(fault.signum).name}>{fault.node}@{moment:.2f}")
            if "up" not in self.anchors:
                self.hit_before_up = True
            elif self._between_attempts():
                self.hit_between = True
            if fault.signum == signal.SIGSTOP:
                self.conts.append((now + fault.pause, launcher))
            else:
                self.events.append(now)
        for entry in list(self.conts):
            moment, launcher = entry
            if math.isinf(moment) and not any(x.running() for x in self.launchers
                                              if x is not launcher):  # fmt: skip
                moment = now  # stopped for the whole job: continued once the others are gone
            if now >= moment:
                self.conts.remove(entry)
                _signal(launcher.proc.pid, signal.SIGCONT)
                self.events.append(now)

    def _between_attempts(self) -> bool:
        """In the teardown of an attempt that may restart, at the barrier, or as the next
        attempt starts."""
        if not self.overs:
            return False
        last = max(self.overs)
        return last < self.case.max_restarts and last + 1 not in self.starts


def _count(workdir: Path, pattern: str) -> int:
    return sum(1 for _ in workdir.glob(pattern))


def _signal(pid: int, signum: int) -> None:
    try:
        os.kill(pid, signum)
    except ProcessLookupError:
        pass


def plausible_codes(case: Case, launcher: Launcher, run: Run) -> set[int]:
    """The exit codes a launcher may end with, given what its case did to it and its job."""
    codes = {r.exit_code() for r in case.ranks if r.fails()}
    last = case.ranks_in(run.last_attempt())
    if all(r.end == "exit0" for r in last) and run.all_ended():
        codes.add(0)
    for signum, _, _ in launcher.fatal_sent:
        codes |= {128 + signum, -signum}
    if case.multi:
        others = [x for x in run.launchers if x is not launcher]
        for other in others:
            codes |= {128 + s for s, _, _ in other.fatal_sent if s != signal.SIGKILL}
        if any(f.node != launcher.node for f in case.faults) or any(
            f.signum == signal.SIGSTOP and f.node == launcher.node for f in case.faults
        ):
            codes.add(1)  # a node lost, or this one cut off
        if run.hit_before_up:
            codes.add(2)  # the join could not complete
    return codes


def check(case: Case, run: Run) -> list[Finding]:
    findings: list[Finding] = []
    for launcher in run.launchers:
        findings += _check_launcher(case, launcher, run)
    findings += _check_leftovers(run)
    return findings


def _check_launcher(case: Case, launcher: Launcher, run: Run) -> list[Finding]:
    node = launcher.node
    if launcher.running():
        stack = _stack(launcher.proc.pid)
        _signal(launcher.proc.pid, signal.SIGCONT)
        launcher.proc.kill()
        launcher.proc.wait()
        tail = _tail(launcher.stderr())
        return [Finding("outlived", node, f"still running at the bound; stderr: {tail}{stack}")]
    findings = []
    code, err = launcher.proc.returncode, launcher.stderr()
    own_lines = [ln for ln in err.splitlines() if not ln.startswith("[rank")]
    if any(ln.startswith("Traceback") for ln in own_lines):  # a rank's own is relayed, prefixed
        findings.append(Finding("traceback", node, _tail("\n".join(own_lines), 1500)))
    if code not in plausible_codes(case, launcher, run):
        findings.append(Finding("code", node, f"exit code {code}; stderr: {_tail(err)}"))
    findings += [Finding("blame", node, why) for why in _misblamed(case, run, own_lines)]
    if case.max_restarts and not run.delivered:
        findings += [Finding("restarts", node, why) for why in _restarts_wrong(case, launcher, run)]
    if _lost_signal(launcher, code, err):
        sent_to = launcher.fatal_sent
        sent = ", ".join(f"{signal.Signals(s).name} at {t:.2f} s" for s, t, _ in sent_to)
        findings.append(Finding("lost_signal", node, f"exit code {code} after {sent}"))
    return findings


_ATTEMPT = re.compile(r"^rankrun: attempt (\d+): rank (\d+) ")


def _restarts_wrong(case: Case, launcher: Launcher, run: Run) -> list[str]:
    """With no fault, a failure restarts the whole job until its ranks heal or the restarts
    run out: every node says each restart, and node 0's report has a line per attempt."""
    wrong = []
    attempts = case.attempts()
    if run.last_attempt() + 1 != attempts:
        wrong.append(f"{run.last_attempt() + 1} attempt(s) ran, not {attempts}")
    heals = any(r.fails() for r in case.ranks) and case.heals_at <= case.max_restarts
    code = launcher.proc.returncode
    if heals != (code == 0):
        wrong.append(f"exit code {code}, though the ranks {'heal' if heals else 'fail'} "
                     f"by the last attempt")  # fmt: skip
    err = launcher.stderr()
    said = [int(n) for n in re.findall(r"restart (\d+) of \d+", err)]
    if said != list(range(1, attempts)):
        wrong.append(f"said restarts {said}, not {list(range(1, attempts))}")
    if launcher.node == 0 and attempts > 1:
        lines = re.findall(r"^rankrun: attempt (\d+): ", err, re.MULTILINE)
        if [int(n) for n in lines] != list(range(attempts)):
            wrong.append(f"the report's attempt lines are {lines}, not 0..{attempts - 1}")
    return wrong


_LOST = re.compile(r"(\d+) \([^()]*, pid \d+\)")
_ROOT = re.compile(r"root cause: rank (\d+) \(local rank \d+, (?:node (\d+), )?")


def _misblamed(case: Case, run: Run, own_lines: list[str]) -> list[str]:
    """What a report says that the case's faults can't explain: a node lost that no fault
    reached, or a root cause that is not a rank drawn to fail, or not on its node."""
    wrong = []
    for ln in own_lines:
        if "lost: no heartbeat" in ln:
            named = {int(n) for n in _LOST.findall(ln.split(" lost: ")[0])}
            if named - run.hit:
                wrong.append(f"names node(s) {sorted(named - run.hit)} lost, but faults hit "
                             f"{sorted(run.hit) or 'none'}: {ln}")  # fmt: skip
        if (tried := _ATTEMPT.search(ln)) is not None:
            number, rank = int(tried[1]), int(tried[2])
            if not case.ranks_in(number)[rank].fails():
                wrong.append(f"blames a rank not drawn to fail in that attempt: {ln}")
        if (root := _ROOT.search(ln)) is not None:
            rank, node = int(root[1]), root[2]
            if not case.ranks[rank].fails() or (
                node is not None and int(node) != rank // case.per_node
            ):
                wrong.append(f"root cause is not a rank drawn to fail there: {ln}")
    return wrong


def _lost_signal(launcher: Launcher, code: int, err: str) -> bool:
    """A signal sent to it left no mark: before any rank ran it must end the launcher with
    128+N (or -N, before Python's start-up), and later it may leave an exit code 0 only
    where the launcher says the ranks had ended by then."""
    sent = launcher.fatal_sent
    own = {128 + s for s, _, _ in sent} | {-s for s, _, _ in sent}
    if any(early for _, _, early in sent) and code not in own:
        return True
    return bool(sent) and code == 0 and "after the ranks had ended" not in err


def _check_leftovers(run: Run) -> list[Finding]:
    wait_s = SHUTDOWN + 3.0  # the guardian's grace, after the last launcher's exit
    deadline = time.monotonic() + wait_s
    while (left := carrying(TAG_VAR, run.tag)) and time.monotonic() < deadline:
        time.sleep(0.05)
    findings = []
    for pid in left:
        comm = _comm(pid)
        kind = "guardian_lingers" if comm == GUARDIAN else "leftover"
        findings.append(Finding(kind, None, f"pid {pid} ({comm}) {wait_s:g} s after the end"))
    for pid in left:  # by pid, never by name
        _signal(pid, signal.SIGCONT)
        _signal(pid, signal.SIGKILL)
    return findings


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return "?"


def _stack(pid: int) -> str:
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not os.path.exists(spy):
        return ""
    try:
        done = subprocess.run([spy, "dump", "--pid", str(pid)], capture_output=True,
                              text=True, timeout=20)  # fmt: skip
    except subprocess.TimeoutExpired:
        return "\npy-spy: timed out"
    return "\npy-spy:\n" + (done.stdout or done.stderr)[-3000:]


def _tail(text: str, chars: int = 600) -> str:
    return text[-chars:].replace("\n", " | ")


class Result(NamedTuple):
    case: Case
    codes: list[int | None]
    took: float
    delivered: list[str]
    findings: list[Finding]


def _heed_signals() -> None:
    """A shell starts a background job with SIGINT and SIGQUIT ignored, and nohup ignores
    SIGHUP: the launchers would inherit that, and lose the signals the case sends them."""
    for signum in (signal.SIGINT, signal.SIGQUIT, signal.SIGHUP, signal.SIGTERM):
        if signal.getsignal(signum) == signal.SIG_IGN:
            handler = signal.default_int_handler if signum == signal.SIGINT else signal.SIG_DFL
            signal.signal(signum, handler)


def run_case(case: Case) -> Result:
    _heed_signals()
    tag = uuid.uuid4().hex
    with tempfile.TemporaryDirectory(prefix="rankrun-fault-") as tmp:
        run = Run(case, Path(tmp), tag)
        try:
            run.drive()
            findings = check(case, run)
        finally:
            for launcher in run.launchers:
                if launcher.proc.poll() is None:
                    _signal(launcher.proc.pid, signal.SIGCONT)
                    launcher.proc.kill()
                    launcher.proc.wait()
        took = max(x.exited_at or time.monotonic() for x in run.launchers) - run.anchors["start"]
        codes = [x.proc.returncode for x in run.launchers]
    return Result(case, codes, took, run.delivered, findings)


def line(result: Result) -> str:
    case = result.case
    codes = ",".join("-" if c is None else str(c) for c in result.codes)
    head = f"seed {case.seed:<6} {describe(case)} sent[{' '.join(result.delivered) or '-'}] " \
           f"-> {codes} in {result.took:.1f} s"  # fmt: skip
    if not result.findings:
        return head + "  ok"
    kinds = ",".join(sorted({f.kind for f in result.findings}))
    replay = f"python bench/fault_loop.py --seed {case.seed} --cases 1"
    details = "".join(f"\n    {f.kind} node {f.node}: {f.detail}" for f in result.findings)
    return f"{head}  FINDING {kinds}; replay: {replay}{details}"


def summary(results: list[Result]) -> tuple[str, dict[str, object]]:
    kinds: Counter[str] = Counter()
    for r in results:
        for kind in {f.kind for f in r.findings}:
            kinds[kind] += 1
    single = sum(1 for r in results if not r.case.multi)
    failed = [r.case.seed for r in results if r.findings]
    rows = [
        f"cases: {len(results)} ({single} single-node, {len(results) - single} multi-node)",
        f"cases with findings: {len(failed)}" + (f" (seeds {failed})" if failed else ""),
    ]
    rows += [f"  {kind:<36} {n} case(s)" for kind, n in sorted(kinds.items())]
    data = {"cases": len(results), "single": single, "multi": len(results) - single,
            "findings_by_kind": dict(kinds), "seeds_with_findings": failed}  # fmt: skip
    return "\n".join(rows), data


def as_json(result: Result) -> dict[str, object]:
    case = result.case
    return {
        "seed": case.seed, "case": describe(case), "codes": result.codes,
        "took_s": round(result.took, 2), "sent": result.delivered,
        "findings": [f._asdict() for f in result.findings],
        "replay": f"python bench/fault_loop.py --seed {case.seed} --cases 1",
    }  # fmt: skip


def seeds(first: int, count: int, single_only: bool, multi_only: bool) -> list[int]:
    if not (single_only or multi_only):
        return list(range(first, first + count))
    parity = 1 if multi_only else 0
    start = first if first % 2 == parity else first + 1
    return list(range(start, start + 2 * count, 2))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--cases", type=int, default=80)
    parser.add_argument("--seed", type=int, default=None, help="the first case's seed")
    kind = parser.add_mutually_exclusive_group()
    kind.add_argument("--single-only", action="store_true", help="even seeds only")
    kind.add_argument("--multi-only", action="store_true", help="odd seeds only")
    parser.add_argument("--time-limit", type=float, default=None, help="seconds; no new case after")
    parser.add_argument("--out", default=None, help="write the cases and the summary as JSON")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    first = a.seed if a.seed is not None else random.SystemRandom().randrange(100_000)
    began = time.monotonic()
    print(f"fault loop from seed {first}, {a.cases} cases, {len(os.sched_getaffinity(0))} cores",
          flush=True)  # fmt: skip
    results = []
    for seed in seeds(first, a.cases, a.single_only, a.multi_only):
        if a.time_limit is not None and time.monotonic() - began >= a.time_limit:
            print(f"time limit of {a.time_limit:g} s reached", flush=True)
            break
        results.append(run_case(draw_case(seed)))
        print(line(results[-1]), flush=True)
    table, data = summary(results)
    print(table)
    if a.out:
        data["first_seed"] = first
        data["cases_run"] = [as_json(r) for r in results]
        Path(a.out).write_text(json.dumps(data, indent=1) + "\n")
    return 1 if any(r.findings for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
