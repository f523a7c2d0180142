"""The guardian, in its own process's shoes: what it ends, and how often it reads /proc."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
from conftest import BLOCKING_RANK, Runs, tagged_pids, wait_dead

from rankrun.run import guardian


def test_one_pass_over_proc_per_tick_whatever_the_number_of_groups(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Groups that ignore SIGTERM, so the guardian ticks through its whole grace period.
    ranks = [
        subprocess.Popen(
            ["sh", "-c", "trap '' TERM; while :; do sleep 0.05; done"], start_new_session=True
        )  # fmt: skip
        for _ in range(16)
    ]
    scans = 0
    listdir = os.listdir

    def counting(path: str) -> list[str]:
        nonlocal scans
        scans += path == "/proc"
        return listdir(path)

    monkeypatch.setattr(guardian.os, "listdir", counting)
    started = time.monotonic()
    guardian._end_run({p.pid for p in ranks}, None, grace=0.5)
    ticks = (time.monotonic() - started) / 0.02
    for p in ranks:
        assert p.wait(timeout=5) is not None, "SIGKILL after the grace period"
    assert scans <= ticks + 1, f"{scans} scans of /proc in {ticks:.0f} ticks"


# A launcher in miniature: one group named and flushed whose process lacks the run's token,
# one spawned with the token but not yet named, holding a helper started with a cleared
# environment; then the launcher's own SIGKILL.
DYING_LAUNCHER = """
import os, signal, subprocess, sys
from rankrun.run.guardian import TOKEN_VAR, Guardian

guard = Guardian(grace=1.0, token="t0k")
guard.adopted()
loop = ["sh", "-c", "echo $$ > $0; exec sleep 60"]
plain = {k: v for k, v in os.environ.items() if k != TOKEN_VAR}
named = subprocess.Popen([*loop, "named.pid"], env=plain, start_new_session=True)
guard.guard(named.pid)
guard.flush()
helper = "env -i sh -c 'echo $$ > cleared.pid; exec sleep 60' &"
marked = subprocess.Popen(["sh", "-c", helper + " echo $$ > marked.pid; wait"],
                          env={**plain, TOKEN_VAR: "t0k"}, start_new_session=True)
guard.guard(marked.pid)
while not all(os.path.exists(f) for f in ("named.pid", "marked.pid", "cleared.pid")):
    pass
os.kill(os.getpid(), signal.SIGKILL)
"""

# The launcher dies while a rank is between fork and exec: the child does not show the
# run's token yet (its environment is still the launcher's), and no group is named.
DYING_MID_SPAWN = """
import os, signal, sys, time
from rankrun.run.guardian import TOKEN_VAR, Guardian

guard = Guardian(grace=2.0, token="t0k")
guard.adopted()
if os.fork() == 0:
    os.setsid()
    with open("rank.pid", "w") as f:
        f.write(str(os.getpid()))
    os.closerange(3, 1 << 16)  # as Popen's close_fds does before exec: the pipe closes
    time.sleep(0.3)  # a slow exec: the guardian has already looked once
    os.execve("/bin/sleep", ["sleep", "60"], {**os.environ, TOKEN_VAR: "t0k"})
while not os.path.exists("rank.pid"):
    pass
os.kill(os.getpid(), signal.SIGKILL)
"""


# A multi-node agent forks its guardian before the join; a join that fails closes it
# before any Host took it.
UNTAKEN = """
import os
from rankrun.run.guardian import Guardian

guard = Guardian(grace=1.0, token="t0k")
guard.close()
guard.close()  # the Host that would have closed it again
try:
    os.waitpid(-1, os.WNOHANG)
except ChildProcessError:
    print("no child left")
"""


def test_a_guardian_no_host_took_is_closed_with_nothing_left(runs: Runs) -> None:
    runs.script("launcher.py", UNTAKEN, executable=False)
    done = subprocess.run([sys.executable, "launcher.py"], cwd=runs.workdir, env=runs.env,
                          capture_output=True, text=True, timeout=30)  # fmt: skip
    assert done.returncode == 0 and done.stdout == "no child left\n", done.stderr
    # the guardian itself, told goodbye, leaves: the runs fixture finds nothing tagged alive


@pytest.mark.slow
def test_the_launchers_sigkill_ends_named_groups_and_the_groups_of_the_token(
    runs: Runs,
) -> None:
    assert _survivors(runs, DYING_LAUNCHER, ["named.pid", "marked.pid", "cleared.pid"]) == []


@pytest.mark.slow
def test_a_rank_that_execs_after_the_launchers_death_is_still_found(runs: Runs) -> None:
    assert _survivors(runs, DYING_MID_SPAWN, ["rank.pid"]) == [], "it outlived its launcher"


def _survivors(runs: Runs, launcher: str, pid_files: list[str]) -> list[int]:
    """Run ``launcher``, which kills itself; the pids it wrote that are alive 10 s later."""
    runs.script("launcher.py", launcher, executable=False)
    dying = subprocess.run([sys.executable, "launcher.py"], cwd=runs.workdir, env=runs.env,
                           timeout=30)  # fmt: skip
    assert dying.returncode == -signal.SIGKILL
    pids = [int((runs.workdir / f).read_text()) for f in pid_files]
    return wait_dead(pids, timeout=10)


@pytest.mark.slow
def test_the_guardian_is_named_apart_and_leaves_a_second_after_the_launchers_sigkill(
    runs: Runs,
) -> None:
    runs.script("rank.sh", BLOCKING_RANK)
    launcher = runs.start_gang(2, "--shutdown-timeout", "10", "./rank.sh")
    ours = {int(p) for f in runs.wait_for_files("pids.*", 2) for p in f.read_text().split()}
    (guard,) = set(tagged_pids(runs.tag)) - ours - {launcher.pid}
    assert _comm(guard) == "rankrun-guard", "ps must not show it as a rankrun still running"
    assert _comm(launcher.pid) != "rankrun-guard"
    launcher.kill()
    killed = time.monotonic()
    launcher.communicate(timeout=10)
    assert wait_dead([guard], timeout=10) == []
    # It looks for stragglers for a second; the ranks end on SIGTERM, long before the grace.
    assert time.monotonic() - killed < 4


def _comm(pid: int) -> str:
    with open(f"/proc/{pid}/comm") as f:
        return f.read().strip()
