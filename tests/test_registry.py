"""The run registry: real launcher processes found by id and pid, and pruned once dead."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import Runs, wait_until
from procs import Procs, ended

from rankrun.inspect import registry, rundir
from rankrun.inspect.lookup import RunNotFound, find_run, live_runs, prune
from rankrun.inspect.procfs import start_time
from rankrun.inspect.registration import Registration, register, unregister, update
from rankrun.inspect.registry import RankEntry, RunEntry, new_entry, seconds_since_output
from rankrun.inspect.rundir import RegistryError, runtime_dir

# A launcher stand-in: registers itself with two "ranks" (its own children), then waits.
LAUNCHER = """
    import subprocess, sys, time
    from rankrun.inspect.registration import Registration
    from rankrun.inspect.registry import RankEntry, new_entry

    ranks = [subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"])
             for _ in range(2)]
    entry = new_entry(sys.argv[1], [RankEntry(i, i, p.pid) for i, p in enumerate(ranks)],
                      node_rank=int(sys.argv[2]), command="train.py --lr 3",
                      nnodes=int(sys.argv[3]), job_store=sys.argv[4])
    reg = Registration(entry)
    reg.output(1, 1234.5)
    reg.flush(force=True)
    print(reg.path, flush=True)
    time.sleep(300)
"""


@pytest.fixture
def env(tmp_path: Path, runs: Runs) -> dict[str, str]:
    """The test's environment, with a registry of its own."""
    return {**runs.env, rundir.OVERRIDE_VAR: str(tmp_path / "registry")}


class RegistryProcs(Procs):
    def sleeper(self) -> subprocess.Popen[str]:
        return self.start([sys.executable, "-c", "import time; time.sleep(300)"])

    def launcher(
        self, run_id: str, node_rank: int = 0, nnodes: int = 1, job_store: str = ""
    ) -> tuple[subprocess.Popen[str], str]:
        code = textwrap.dedent(LAUNCHER)
        args = [run_id, str(node_rank), str(nnodes), job_store]
        proc = self.start([sys.executable, "-c", code, *args])
        assert proc.stdout is not None
        path = proc.stdout.readline().strip()
        assert path, "the launcher stand-in did not register"
        return proc, path


@pytest.fixture
def procs(runs: Runs, env: dict[str, str]) -> Iterator[RegistryProcs]:
    yield from ended(RegistryProcs(runs, env))


def entry_for(pid: int, run_id: str, **changes: object) -> RunEntry:
    start = start_time(pid)
    assert start is not None
    entry = RunEntry(run_id, pid, start, "host", 0, 0, (RankEntry(0, 0, pid),), 1.0, 1.0)
    return entry._replace(**changes)


def test_a_launcher_is_found_by_run_id_and_pid_then_pruned_after_kill_9(
    procs: RegistryProcs, env: dict[str, str]
) -> None:
    launcher, path = procs.launcher("job-1")
    assert os.path.dirname(path) == env[rundir.OVERRIDE_VAR]
    assert os.path.basename(path) == f"job-1.{launcher.pid}.json"
    assert os.stat(path).st_mode & 0o777 == 0o600

    found = find_run(None, env)
    assert found.run_id == "job-1" and found.pid == launcher.pid and found.path == path
    assert found.start_time == start_time(launcher.pid)
    assert found.host == os.uname().nodename and found.command == "train.py --lr 3"
    assert [(r.rank, r.local_rank) for r in found.ranks] == [(0, 0), (1, 1)]
    assert [r.last_output for r in found.ranks] == [None, 1234.5]
    assert find_run("job-1", env) == found
    assert find_run(str(launcher.pid), env) == found
    assert find_run(str(found.ranks[1].pid), env) == found  # a rank's pid, as top shows it

    launcher.send_signal(signal.SIGKILL)  # no chance to unregister; not yet reaped: a zombie
    wait_until(lambda: start_time(launcher.pid) is None, 5, "the launcher to die", every=0.01)
    assert os.path.exists(path)
    assert live_runs(env) == []
    assert not os.path.exists(path)
    with pytest.raises(RunNotFound, match="^no rankrun run is running for this user on "):
        find_run(None, env)


def test_a_reused_pid_is_not_taken_for_the_launcher(
    procs: RegistryProcs, env: dict[str, str]
) -> None:
    other = procs.sleeper()
    start = start_time(other.pid)
    assert start is not None
    path = register(entry_for(other.pid, "old", start_time=start - 1), env)
    assert live_runs(env) == []
    assert not os.path.exists(path)


def test_several_runs_ask_for_a_run_id(procs: RegistryProcs, env: dict[str, str]) -> None:
    a, b = procs.sleeper(), procs.sleeper()
    register(entry_for(a.pid, "first", started_at=1.0, command="train.py"), env)
    register(entry_for(b.pid, "second", started_at=2.0), env)

    with pytest.raises(RunNotFound) as e:
        find_run(None, env)
    message = str(e.value)
    assert "\n" not in message
    assert message == (
        f"2 runs are running: first (pid {a.pid}, train.py), second (pid {b.pid}); "
        "pass a run id or launcher pid"
    )
    assert find_run("second", env).pid == b.pid
    with pytest.raises(RunNotFound, match=r"^no run has the id or pid third; running: first "):
        find_run("third", env)
    with pytest.raises(RunNotFound, match="^no run has the id or pid 1;"):
        find_run("1", env)


def test_two_node_ranks_of_one_run_on_one_host_are_told_apart_by_pid(
    procs: RegistryProcs, env: dict[str, str]
) -> None:
    (a, path_a), (b, path_b) = procs.launcher("job", 0), procs.launcher("job", 1)
    assert path_a != path_b
    with pytest.raises(RunNotFound) as e:
        find_run("job", env)
    assert str(e.value) == (
        f"2 runs have the id job (launcher pids {a.pid}, {b.pid}): pass a launcher pid instead"
    )
    assert find_run(str(b.pid), env).node_rank == 1


def test_a_run_id_of_nodes_of_one_job_on_this_host_names_node_0(
    procs: RegistryProcs, env: dict[str, str]
) -> None:
    (_, _), (node0, _) = (
        procs.launcher("job", 1, 2, "h0:29500"),
        procs.launcher("job", 0, 2, "h0:29500"),
    )
    run = find_run("job", env)
    assert (run.pid, run.node_rank, run.nnodes, run.job_store) == (node0.pid, 0, 2, "h0:29500")


def test_an_entry_written_before_nodes_were_recorded_is_one_node(
    procs: RegistryProcs, env: dict[str, str]
) -> None:
    _, path = procs.launcher("old")
    data = json.loads(Path(path).read_text())
    del data["nnodes"], data["job_store"]
    Path(path).write_text(json.dumps(data))
    run = find_run("old", env)
    assert (run.run_id, run.nnodes, run.job_store) == ("old", 1, "")


def test_no_run_at_all(env: dict[str, str]) -> None:
    with pytest.raises(RunNotFound, match="^no rankrun run is running for this user on "):
        find_run(None, env)
    with pytest.raises(RunNotFound, match="^no run job-9: no rankrun run is running"):
        find_run("job-9", env)
    assert isinstance(RunNotFound("x"), LookupError)


def test_update_and_unregister(procs: RegistryProcs, env: dict[str, str]) -> None:
    own = new_entry("mine", [RankEntry(0, 0, os.getpid())], attempt=0)
    path = register(own, env)
    update(path, own._replace(attempt=2))
    (run,) = live_runs(env)
    assert run.attempt == 2 and run.updated_at >= own.updated_at
    assert [n for n in os.listdir(os.path.dirname(path)) if n.startswith(".")] == []
    unregister(path)
    unregister(path)  # already gone: fine
    assert live_runs(env) == []


def test_registration_writes_output_times_at_most_once_an_interval(env: dict[str, str]) -> None:
    ranks = [RankEntry(0, 0, os.getpid()), RankEntry(1, 1, os.getpid())]
    reg = Registration(new_entry("throttled", ranks), env, interval=1.0)
    try:
        t0 = time.monotonic()
        assert reg.due_in(t0) is None
        reg.output(0, 100.0)
        assert not reg.flush(t0 + 0.1)  # within the interval of the registration's write
        assert reg.due_in(t0 + 0.1) == pytest.approx(0.9, abs=0.1)
        assert find_run("throttled", env).ranks[0].last_output is None
        assert reg.flush(t0 + 1.1)
        assert reg.due_in(t0 + 1.1) is None
        assert [r.last_output for r in find_run("throttled", env).ranks] == [100.0, None]
        reg.output(1, 101.0)
        assert reg.due_in(t0 + 3.0) == 0.0
        reg.new_attempt(1, [RankEntry(0, 0, os.getpid(), 5.0)])  # written at once
        run = find_run("throttled", env)
        assert run.attempt == 1 and [r.last_output for r in run.ranks] == [5.0]
    finally:
        reg.close()
    assert not os.path.exists(reg.path)


def test_seconds_since_output_counts_a_log_file(tmp_path: Path) -> None:
    assert seconds_since_output(RankEntry(0, 0, 1), now=10.0) is None
    assert seconds_since_output(RankEntry(0, 0, 1, last_output=4.0), now=10.0) == 6.0
    log = tmp_path / "rank0.log"
    log.write_text("x")
    os.utime(log, (7.0, 7.0))
    assert seconds_since_output(RankEntry(0, 0, 1, 4.0, str(log)), now=10.0) == 3.0
    assert seconds_since_output(RankEntry(0, 0, 1, None, str(tmp_path / "none")), 1.0) is None


def test_leftovers_of_dead_launchers_are_pruned(procs: RegistryProcs, env: dict[str, str]) -> None:
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          env=env, capture_output=True, text=True, check=True)  # fmt: skip
    dead = int(done.stdout)
    live = procs.sleeper()
    directory = runtime_dir(env)
    names = {
        f"gone.{dead}.json": "{not json",  # a dead launcher's torn file: pruned
        f".gone.{dead}.json.{dead}.tmp": "{",  # killed while writing: pruned
        f"torn.{live.pid}.json": "{",  # unreadable, but its launcher lives: kept, not listed
        "notes.txt": "",  # not ours: left alone
    }
    for name, text in names.items():
        Path(directory, name).write_text(text)
    register(RunEntry("dead", dead, 1, "host", 0, 0, (), 1.0, 1.0), env)
    assert prune(env) == 3
    assert sorted(os.listdir(directory)) == sorted([f"torn.{live.pid}.json", "notes.txt"])
    assert live_runs(env) == []


def test_run_ids_are_sanitised_into_file_names(env: dict[str, str]) -> None:
    path = register(new_entry("../../etc/x y\n"), env)
    try:
        assert os.path.dirname(path) == runtime_dir(env)
        assert os.path.basename(path) == f"_.._etc_x_y_.{os.getpid()}.json"
        assert find_run("../../etc/x y\n", env).path == path
        with open(path) as f:
            assert json.load(f)["format"] == registry.FORMAT
    finally:
        unregister(path)


# --- the runtime directory -------------------------------------------------------------------


def test_the_runtime_dir_is_created_private(tmp_path: Path) -> None:
    xdg = tmp_path / "xdg"
    xdg.mkdir(mode=0o700)
    path = runtime_dir({"XDG_RUNTIME_DIR": str(xdg)})
    assert path == str(xdg / "rankrun")
    assert os.stat(path).st_mode & 0o777 == 0o700


def test_without_a_usable_xdg_dir_it_is_under_tmp(tmp_path: Path) -> None:
    expected = f"/tmp/rankrun-{os.getuid()}"
    assert runtime_dir({}) == expected
    assert runtime_dir({"XDG_RUNTIME_DIR": str(tmp_path / "missing")}) == expected
    assert runtime_dir({"XDG_RUNTIME_DIR": "relative"}) == expected
    st = os.lstat(expected)
    assert st.st_uid == os.getuid() and st.st_mode & 0o022 == 0


@pytest.mark.skipif(os.getuid() != 0, reason="needs root to make a directory of another user")
def test_an_xdg_dir_of_another_user_is_not_used(tmp_path: Path) -> None:
    other = tmp_path / "other-user"
    other.mkdir(mode=0o700)
    os.chown(other, 65534, 65534)  # as after su: XDG_RUNTIME_DIR is still the first user's
    assert runtime_dir({"XDG_RUNTIME_DIR": str(other)}) == f"/tmp/rankrun-{os.getuid()}"


@pytest.mark.skipif(os.getuid() != 0, reason="needs root to make a directory of another user")
def test_a_runtime_dir_owned_by_someone_else_is_refused(tmp_path: Path) -> None:
    planted = tmp_path / "planted"
    planted.mkdir(mode=0o700)
    os.chown(planted, 65534, 65534)
    env = {rundir.OVERRIDE_VAR: str(planted)}
    message = f"the run registry {planted} belongs to uid 65534, not to you (uid 0): remove it"
    calls = [
        lambda: runtime_dir(env),
        lambda: register(new_entry("x"), env),
        lambda: live_runs(env),
        lambda: prune(env),
        lambda: find_run(None, env),
    ]
    for call in calls:
        with pytest.raises(RegistryError) as e:
            call()
        assert str(e.value).startswith(message) and "\n" not in str(e.value)
    assert os.listdir(planted) == []


@pytest.mark.skipif(os.getuid() != 0, reason="needs root, as under sudo")
def test_under_sudo_the_invoking_users_runs_are_found_too(procs: RegistryProcs) -> None:
    user = 54321  # no such user is needed, only a uid that owns nothing yet
    theirs = f"/tmp/rankrun-{user}"
    if os.path.lexists(theirs):
        pytest.skip(f"{theirs} exists already")
    try:
        os.mkdir(theirs, 0o700)
        os.chown(theirs, user, user)
        launcher = procs.sleeper()
        update(
            os.path.join(theirs, f"users-job.{launcher.pid}.json"),
            entry_for(launcher.pid, "users-job"),
        )
        env = {"XDG_RUNTIME_DIR": "/nonexistent", "SUDO_UID": str(user)}
        assert find_run("users-job", env).pid == launcher.pid
        assert all(r.run_id != "users-job" for r in live_runs({"XDG_RUNTIME_DIR": "/nonexistent"}))
        os.chown(theirs, 0, 0)  # not the user's: refused, as one line
        with pytest.raises(
            RegistryError, match=f"^the run registry {theirs} belongs to uid 0, not to its user"
        ):
            live_runs(env)
    finally:
        shutil.rmtree(theirs, ignore_errors=True)


def test_a_runtime_dir_others_may_write_is_refused(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    with pytest.raises(RegistryError) as e:
        register(new_entry("x"), {rundir.OVERRIDE_VAR: str(shared)})
    assert str(e.value) == (
        f"the run registry {shared} is writable by others (mode 777): chmod 700 {shared}"
    )
    assert os.listdir(shared) == []


def test_a_symlinked_runtime_dir_is_refused(tmp_path: Path) -> None:
    (tmp_path / "real").mkdir(mode=0o700)
    (tmp_path / "link").symlink_to(tmp_path / "real")
    with pytest.raises(RegistryError, match="is a symbolic link: remove it$"):
        runtime_dir({rundir.OVERRIDE_VAR: str(tmp_path / "link")})


def test_an_uncreatable_runtime_dir_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(RegistryError, match="^cannot create the run registry .*: No such file"):
        runtime_dir({rundir.OVERRIDE_VAR: str(tmp_path / "no" / "parent")})
