"""``rankrun stacks`` and ``rankrun status`` against real launchers: running, restarted,
finished, killed with SIGKILL, and asked for a run that does not exist.

The launcher registers through ``rankrun.inspect.live.LiveRun``, which ``Host`` feeds; each test
has a registry of its own (``RANKRUN_RUNTIME_DIR``), so that no other run is seen.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import Runs, wait_gone, wait_until

import rankrun
from rankrun.inspect import lookup, registry, rundir
from rankrun.inspect.live import REGISTER_AFTER_S, LiveRun
from rankrun.inspect.stacks import find_py_spy
from rankrun.plan.options import Options
from rankrun.plan.plan import build_plan

needs_py_spy = pytest.mark.skipif(find_py_spy() is None, reason="py-spy is not installed")
SRC = os.path.dirname(os.path.dirname(rankrun.__file__))

# A rank blocked in a function of its own name, once it has said so and left its pid.
BLOCKED = """
    import os, sys, time

    def waiting_in_all_reduce():
        attempt, rank = os.environ["TORCHELASTIC_RESTART_COUNT"], os.environ["RANK"]
        if attempt == "0" and rank == "0" and "--fail-first" in sys.argv:
            sys.exit(3)
        print("ready", flush=True)
        with open(f"tmp.{attempt}.{rank}", "w") as f:
            f.write(str(os.getpid()))
        os.rename(f"tmp.{attempt}.{rank}", f"ready.{attempt}.{rank}")
        time.sleep(300)

    waiting_in_all_reduce()
"""


class Job:
    """A launcher of a blocked gang, ended by pid afterwards."""

    def __init__(self, runs: Runs) -> None:
        self.runs = runs
        self.proc: subprocess.Popen[str] | None = None
        runs.script("rank.py", BLOCKED, executable=False)

    def start(self, *flags: str, ranks: int = 2, attempt: int = 0) -> registry.RunEntry:
        args = ["--run-id", "job7", "--shutdown-timeout", "5", *flags, "rank.py"]
        self.proc = self.runs.start_gang(ranks, *args)
        self.pids = [int(p.read_text()) for p in self.ready(attempt, ranks)]
        return self.entry(attempt)

    def ready(self, attempt: int, ranks: int) -> list[Path]:
        return self.runs.wait_for_files(f"ready.{attempt}.*", ranks)

    def entry(self, attempt: int = 0) -> registry.RunEntry:
        """The launcher's registry entry, once it lists ``attempt``."""

        def listed() -> registry.RunEntry | None:
            runs = lookup.live_runs(self.runs.env)
            return runs[0] if runs and runs[0].attempt == attempt else None

        why = "the launcher to register: is rankrun.inspect.live.LiveRun wired into host.py?"
        entry = wait_until(listed, 10, why, every=0.05)
        assert entry is not None
        return entry

    def stop(self) -> subprocess.CompletedProcess[str]:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        out, err = self.proc.communicate(timeout=30)
        return subprocess.CompletedProcess(self.proc.args, self.proc.returncode, out, err)

    def end(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
        if self.proc is not None:
            self.proc.communicate()


@pytest.fixture
def job(runs: Runs, tmp_path: Path) -> Iterator[Job]:
    runs.env[rundir.OVERRIDE_VAR] = str(tmp_path / "registry")
    j = Job(runs)
    try:
        yield j
    finally:
        j.end()


def _registry_files(runs: Runs) -> list[str]:
    path = runs.env[rundir.OVERRIDE_VAR]
    return sorted(os.listdir(path)) if os.path.isdir(path) else []


def _status_rows(runs: Runs, *args: str) -> tuple[str, list[list[str]]]:
    out = runs.run("status", *args)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[1].split() == [
        "RANK", "LOCAL", "PID", "STATE", "CPU%", "RSS", "PROCS", "LAST", "OUTPUT", "ATTEMPT",
    ]  # fmt: skip
    return lines[0], [re.split(r" {2,}", line) for line in lines[2:]]


def _one_line_error(result: subprocess.CompletedProcess[str], code: int = 2) -> str:
    assert result.returncode == code, result
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("rankrun: error: ")
    return lines[0].removeprefix("rankrun: error: ")


# --- a running job ------------------------------------------------------------------------------


@pytest.mark.slow
def test_status_of_a_running_job_has_a_line_per_rank(job: Job, runs: Runs) -> None:
    entry = job.start()

    # The ranks' "ready" reaches the registry within a second.
    def noted() -> tuple[str, list[list[str]]] | None:
        head, rows = _status_rows(runs)
        return (head, rows) if all(row[7] != "-" for row in rows) else None

    shown = wait_until(noted, 5, "each rank's last output in the status", every=0.2)
    assert shown is not None
    head, rows = shown

    assert head.startswith(f"run job7: launcher pid {entry.pid} on {os.uname().nodename}, node 0")
    assert head.endswith(": python -u rank.py")
    assert [row[:3] for row in rows] == [["0", "0", str(job.pids[0])], ["1", "1", str(job.pids[1])]]
    for row in rows:
        rank, local, pid, state, cpu, rss, procs, since, attempt = row
        assert state == "sleeping"
        assert 0 <= float(cpu) < 50
        assert rss.endswith(" MiB") and float(rss.split()[0]) > 1
        assert procs == "1"
        assert re.fullmatch(r"\d+\.\d s ago", since) and float(since.split()[0]) < 10
        assert attempt == "0"
    # By launcher pid, and by a rank's pid, the same run.
    assert _status_rows(runs, str(entry.pid))[1][0][2] == str(job.pids[0])
    assert _status_rows(runs, str(job.pids[1]))[1][1][2] == str(job.pids[1])
    # A reader that goes away (rankrun status | head) gets no traceback.
    closed = subprocess.Popen(runs.argv("status"), env=runs.env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE)  # fmt: skip
    assert closed.stdout is not None and closed.stderr is not None
    closed.stdout.close()
    assert (closed.wait(timeout=30), closed.stderr.read()) == (128 + signal.SIGPIPE, b"")
    closed.stderr.close()

    result = job.stop()
    assert result.returncode == 128 + signal.SIGTERM
    assert _registry_files(runs) == []
    assert _one_line_error(runs.run("status", "job7")) == (
        f"no run job7: no rankrun run is running for this user on {os.uname().nodename}"
    )


@needs_py_spy
@pytest.mark.slow
def test_stacks_of_a_running_job_shows_each_rank_where_it_waits(job: Job, runs: Runs) -> None:
    entry = job.start()
    for selector in ("job7", str(entry.pid), None):
        result = runs.run("stacks", *([selector] if selector else []))
        assert result.returncode == 0, result.stderr
        lines = result.stdout.splitlines()
        assert all(line.startswith(("[rank0]: ", "[rank1]: ")) for line in lines), lines
        for rank, pid in enumerate(job.pids):
            own = [line for line in lines if line.startswith(f"[rank{rank}]: ")]
            assert own[0].startswith(f"[rank{rank}]: Thread {pid} "), own
            assert not any(line.startswith(f"[rank{rank}]: Python v") for line in own), own
            assert any("waiting_in_all_reduce (rank.py:" in line for line in own), own
    # The ranks went on: py-spy pauses them only while it reads.
    assert job.proc is not None and job.proc.poll() is None
    assert [Path(f"/proc/{pid}").exists() for pid in job.pids] == [True, True]


@pytest.mark.slow
def test_a_wrong_run_id_is_one_line(job: Job, runs: Runs) -> None:
    entry = job.start()
    for command in ("stacks", "status"):
        assert _one_line_error(runs.run(command, "nope")) == (
            f"no run has the id or pid nope; running: job7 (pid {entry.pid}, python -u rank.py)"
        )
    assert _one_line_error(runs.run("status", "job7", "extra")) == (
        "unrecognized arguments: extra (see rankrun status --help)"
    )


@needs_py_spy
@pytest.mark.skipif(os.getuid() != 0 or not shutil.which("setpriv"), reason="root and setpriv")
@pytest.mark.slow
def test_stacks_without_ptrace_is_one_line_with_the_fix(job: Job, runs: Runs) -> None:
    job.start()
    no_ptrace = ["setpriv", "--bounding-set=-sys_ptrace", *runs.argv("stacks")]
    result = subprocess.run(
        no_ptrace, env=runs.env, cwd=runs.workdir, capture_output=True, text=True, timeout=60
    )
    message = _one_line_error(result, code=1)
    assert message.startswith(f"cannot read process {job.pids[0]}: ptrace is not permitted")
    assert message.endswith(
        "in a container, start it with --cap-add SYS_PTRACE (and the same for the other rank)"
    )


@pytest.mark.slow
def test_a_restarted_job_shows_its_new_attempt(job: Job, runs: Runs) -> None:
    runs.script("rank.py", BLOCKED.replace('"--fail-first" in sys.argv', "True"), executable=False)
    entry = job.start("--max-restarts", "1", attempt=1)
    assert entry.attempt == 1
    _, rows = _status_rows(runs)
    assert [(row[2], row[3], row[8]) for row in rows] == [
        (str(pid), "sleeping", "1") for pid in job.pids
    ]


# --- a job that has ended -----------------------------------------------------------------------

# Asks for its own run's status from inside, then ends.
SELF_STATUS = """
    import os, subprocess, sys, time
    deadline = time.monotonic() + 10
    while True:
        argv = [sys.executable, "-m", "rankrun", "status", os.environ["TORCHELASTIC_RUN_ID"]]
        out = subprocess.run(argv, capture_output=True, text=True)
        if out.returncode == 0 or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    print(out.stdout + out.stderr, end="")
"""


@pytest.mark.slow
def test_a_finished_job_is_not_found_and_leaves_no_entry(job: Job, runs: Runs) -> None:
    runs.script("self.py", SELF_STATUS, executable=False)
    result = runs.run("--run-id", "done3", "--master-port", "0", "self.py")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("run done3: launcher pid "), result.stdout
    assert _registry_files(runs) == []
    for command in ("status", "stacks"):
        assert _one_line_error(runs.run(command, "done3")).startswith("no run done3: ")
        assert _one_line_error(runs.run(command)).startswith("no rankrun run is running")


@pytest.mark.slow
def test_a_killed_launcher_leaves_no_entry_that_is_listed(job: Job, runs: Runs) -> None:
    entry = job.start()
    assert job.proc is not None
    job.proc.kill()
    job.proc.wait()
    assert wait_gone(runs.tag, timeout=10) == []  # the guardian has ended the ranks
    assert _registry_files(runs) == [os.path.basename(entry.path)]

    assert _one_line_error(runs.run("status")).startswith("no rankrun run is running")
    assert _registry_files(runs) == []  # the reader removed the stale entry
    assert _one_line_error(runs.run("stacks", "job7")).startswith("no run job7: ")


@pytest.mark.slow
def test_a_registry_that_cannot_be_used_is_a_warning(runs: Runs, tmp_path: Path) -> None:
    (tmp_path / "registry").write_text("not a directory")
    runs.env[rundir.OVERRIDE_VAR] = str(tmp_path / "registry")
    runs.script("rank.sh", "sleep 1; echo ran $RANK\n")  # long enough to be registered
    result = runs.gang(2, "./rank.sh")
    assert result.returncode == 0, result.stderr
    assert sorted(result.stdout.splitlines()) == ["[rank0]: ran 0", "[rank1]: ran 1"]
    *_, warning, closing = result.stderr.splitlines()
    assert warning == (
        f"rankrun: stacks and status will not find this run: the run registry "
        f"{tmp_path / 'registry'} is not a directory: remove it"
    )
    assert closing.startswith("rankrun: 2 ranks exited 0 in ")


# --- LiveRun on its own, and py-spy missing -----------------------------------------------------


class Sleepers:
    def __init__(self, runs: Runs) -> None:
        self.runs = runs
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, count: int) -> list[int]:
        for _ in range(count):
            argv = [sys.executable, "-c", "import time; time.sleep(300)"]
            self.procs.append(subprocess.Popen(argv, env=self.runs.env))
        return [p.pid for p in self.procs[-count:]]

    def end(self) -> None:
        for p in self.procs:
            p.kill()
            p.wait()


@pytest.fixture
def sleepers(runs: Runs) -> Iterator[Sleepers]:
    s = Sleepers(runs)
    try:
        yield s
    finally:
        s.end()


def _live_run(
    runs: Runs, sleepers: Sleepers, tmp_path: Path, *, wait: bool = True
) -> tuple[LiveRun, list[int]]:
    """This process as a launcher of two sleeping ranks, fed to a LiveRun."""
    env = {**runs.env, rundir.OVERRIDE_VAR: str(tmp_path / "registry")}
    runs.env = env
    script = str(runs.script("rank.py", "", executable=False))
    plan = build_plan(script, ["--lr", "3"], Options(nproc_per_node=2, run_id="live1"), env)
    warnings: list[str] = []
    live = LiveRun(warnings.append, env)
    pids = sleepers.start(2)
    for spec, pid in zip(plan.ranks(0), pids, strict=True):
        live.started(spec, pid)
    if wait:
        _tick_when_due(live)
    assert warnings == []
    return live, pids


def _tick_when_due(live: LiveRun) -> None:
    due = live.tick(None)
    assert due is not None and 0 <= due <= max(REGISTER_AFTER_S, registry.UPDATE_INTERVAL_S)
    time.sleep(due)
    assert live.tick(None) is None  # written, and nothing more is due


@pytest.mark.slow
def test_live_run_registers_a_run_that_lasts_and_notes_output(
    runs: Runs, sleepers: Sleepers, tmp_path: Path
) -> None:
    live, pids = _live_run(runs, sleepers, tmp_path, wait=False)
    assert lookup.live_runs(runs.env) == []  # a short run never pays for the registry
    due = live.tick(5.0)
    assert due is not None and due <= REGISTER_AFTER_S
    live.output(pids[1])  # output before the entry is written is kept

    _tick_when_due(live)
    (entry,) = lookup.live_runs(runs.env)
    assert (entry.run_id, entry.pid, entry.attempt) == ("live1", os.getpid(), 0)
    assert [(r.rank, r.pid) for r in entry.ranks] == [(0, pids[0]), (1, pids[1])]
    assert entry.ranks[0].last_output is None and entry.ranks[1].last_output is not None
    assert entry.command.endswith("/rank.py --lr 3")
    assert live.tick(None) is None and live.tick(5.0) == 5.0
    _, rows = _status_rows(runs)
    assert rows[0][7] == "-" and rows[1][7].endswith(" s ago")

    live.output(pids[0])
    _tick_when_due(live)
    (entry,) = lookup.live_runs(runs.env)
    assert entry.ranks[0].last_output is not None

    live.close()
    assert lookup.live_runs(runs.env) == []
    assert _registry_files(runs) == []
    assert live.tick(None) is None


def test_missing_py_spy_is_one_line_that_names_the_fix(
    runs: Runs, sleepers: Sleepers, tmp_path: Path
) -> None:
    python = os.path.realpath(sys.executable)  # not the venv's, which has py-spy beside it
    if os.path.exists(os.path.join(os.path.dirname(python), "py-spy")):
        pytest.skip(f"py-spy is installed beside {python}")
    live, _ = _live_run(runs, sleepers, tmp_path)
    try:
        env = {**runs.env, "PATH": "", "PYTHONPATH": SRC}
        env.pop("VIRTUAL_ENV", None)
        result = subprocess.run(
            [python, "-m", "rankrun", "stacks"], env=env, capture_output=True, text=True, timeout=60
        )
    finally:
        live.close()
    assert _one_line_error(result) == (
        "py-spy is needed to read stacks and is not installed: pip install py-spy, or "
        f"pip install {shlex.quote(os.path.dirname(SRC) + '[stacks]')}"
    )


# --- the subcommands' names -------------------------------------------------------------------


def test_a_script_named_status_runs_as_dot_slash_status(runs: Runs) -> None:
    runs.script("status", "#!/bin/sh\necho ran status\n")
    for args in (["./status"], ["--master-port", "0", "status"]):
        result = runs.run(*args)
        assert (result.returncode, result.stdout) == (0, "ran status\n"), result.stderr


def test_help_says_how_to_run_a_script_named_stacks(runs: Runs) -> None:
    runs.env["COLUMNS"] = "400"
    out = runs.run("--help")
    assert "to run a script named stacks or status, write ./stacks or ./status" in out.stdout
    assert runs.run("stacks", "--help").stdout.startswith("usage: rankrun stacks [-h] [--native]")
