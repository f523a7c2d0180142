"""Why a rank died, with real processes: the kernel's OOM killer named from a memory cgroup the
test makes, a SIGKILL sent by hand not blamed on it, and a rank stuck in the kernel (a frozen
v1 freezer cgroup, which SIGKILL does not end) named with its wait channel.

The cgroups are made as root under the test's own ones, and removed even when a test fails.
The gang's side of a stuck rank, on a fake host, is in tests/test_gang_decisions.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

import pytest
from conftest import Runs, wait_until

from rankrun.inspect import oom
from rankrun.inspect.cgroup import memory_cgroup
from rankrun.inspect.oom import Killed, explain

MiB = 1 << 20
_V1 = "/sys/fs/cgroup"


def _own(controller: str) -> str | None:
    """This process's v1 cgroup of ``controller``, where that hierarchy is mounted."""
    with open("/proc/self/cgroup") as f:
        for line in f.read().splitlines():
            _, controllers, path = line.split(":", 2)
            if controller in controllers.split(",") and os.path.isdir(f"{_V1}/{controller}"):
                return f"{_V1}/{controller}{path.rstrip('/')}"
    return None


@contextmanager
def made_cgroup(controller: str, settings: dict[str, str]) -> Iterator[str]:
    """A v1 cgroup of the test's own, below this process's; skips where none can be made."""
    parent = _own(controller)
    if parent is None:
        pytest.skip(f"no cgroup v1 {controller} hierarchy here (a v2-only machine)")
    path = f"{parent}/rankrun-test-{uuid.uuid4().hex[:8]}"
    try:
        os.mkdir(path)
    except OSError as e:
        pytest.skip(f"cannot make a {controller} cgroup ({e.strerror}): needs root")
    try:
        for name, value in settings.items():
            Path(path, name).write_text(value)
        yield path
    finally:
        if os.path.exists(f"{path}/freezer.state"):
            Path(path, "freezer.state").write_text("THAWED")
        wait_until(lambda: not Path(path, "cgroup.procs").read_text(), 10, f"{path} to empty")
        os.rmdir(path)


def _memory_cgroup(limit: int) -> AbstractContextManager[str]:
    return made_cgroup("memory", {"memory.limit_in_bytes": str(limit), "memory.swappiness": "0"})


# Rank 1 joins the cgroup, then does what $WHAT says; the other ranks wait to be ended.
RANK = """
    #!/bin/bash
    if [ "$RANK" != 1 ]; then exec sleep 60; fi
    echo $$ > "$CGROUP/cgroup.procs"
    case "$WHAT" in
      allocate) exec python3 -c 'x = bytearray(1 << 30)' ;;
      wait) echo $$ > pid; exec sleep 60 ;;
    esac
"""


def _run(runs: Runs, cgroup: str, what: str) -> tuple[subprocess.Popen[str], Path]:
    runs.script("rank.sh", RANK)
    runs.env.update(CGROUP=cgroup, WHAT=what)
    return runs.start_gang(2, "--summary-json", "s.json", "./rank.sh"), runs.workdir / "s.json"


@pytest.mark.slow
def test_a_rank_past_its_cgroups_memory_limit_is_named_killed_by_the_oom_killer(runs: Runs) -> None:
    with _memory_cgroup(64 * MiB) as cgroup:
        launcher, summary_file = _run(runs, cgroup, "allocate")
        _, err = launcher.communicate(timeout=60)
    assert launcher.returncode == 137, err
    name = cgroup.removeprefix(f"{_V1}/memory")
    words = f"was killed by the kernel's OOM killer (memory limit 64.0 MiB of cgroup {name}; "
    assert "root cause: rank 1 (local rank 1, host " in err and words in err, err
    assert "rank's peak RSS " in err
    cause = json.loads(summary_file.read_text())["root_cause"]
    assert cause["signal"] == "SIGKILL" and cause["oom_killed"] is True
    assert cause["oom"]["cgroup"] == name and cause["oom"]["memory_limit_bytes"] == 64 * MiB
    assert 32 * MiB < cause["oom"]["peak_rss_bytes"] < 256 * MiB, cause


@pytest.mark.slow
def test_a_rank_sigkilled_by_hand_is_not_named_killed_by_the_oom_killer(runs: Runs) -> None:
    with _memory_cgroup(1024 * MiB) as cgroup:
        launcher, summary_file = _run(runs, cgroup, "wait")
        pid = int(runs.wait_for_files("pid", 1)[0].read_text())
        os.kill(pid, 9)
        _, err = launcher.communicate(timeout=60)
    assert launcher.returncode == 137, err
    assert "was killed by SIGKILL, not by the kernel's OOM killer after" in err, err
    cause = json.loads(summary_file.read_text())["root_cause"]
    assert cause["oom_killed"] is False and cause["oom"] is None


def test_without_the_kernel_log_the_cgroups_count_tells(monkeypatch: pytest.MonkeyPatch) -> None:
    """Where /dev/kmsg is closed (not root, a container), the OOM-kill count decides."""
    monkeypatch.setattr(oom, "oom_kills", lambda since, budget=0.25: None)
    with _memory_cgroup(64 * MiB) as path:
        cgroup = memory_cgroup("self")
        assert cgroup is not None
        rank = cgroup._replace(path=path.removeprefix(f"{_V1}/memory"))
        counted = rank.oom_kills()
        victim = subprocess.Popen(
            ["sh", "-c", f"echo $$ > {path}/cgroup.procs; exec python3 -c 'bytearray(1 << 30)'"]
        )
        assert victim.wait(timeout=30) == -9
        killed = [Killed(victim.pid, 0.0, None, None)]
        verdicts, count = explain(killed, rank, counted)
        assert verdicts[victim.pid] is not None and verdicts[victim.pid].oom_killed
        assert count == (counted or 0) + 1
        again, _ = explain(killed, rank, count)  # counted since: a SIGKILL of someone else's
        assert again[victim.pid] == (False, None, None, None)
        nothing, _ = explain(killed, None, None)
        assert nothing[victim.pid] is None, "with no log and no count, no one can tell"


# Rank 1 freezes itself in a v1 freezer cgroup: a frozen task is in state D, and a v1 freezer
# holds it there through SIGKILL until the cgroup is thawed.
FROZEN_RANK = """
    #!/bin/bash
    if [ "$RANK" != 1 ]; then sleep 0.5; exit 3; fi
    echo $$ > "$CGROUP/cgroup.procs"
    echo FROZEN > "$CGROUP/freezer.state"
    exec sleep 60
"""


@pytest.mark.slow
def test_a_rank_sigkill_cannot_end_is_named_with_its_wait_channel(runs: Runs) -> None:
    with made_cgroup("freezer", {}) as cgroup:
        runs.script("rank.sh", FROZEN_RANK)
        runs.env.update(CGROUP=cgroup)
        result = runs.gang(2, "--shutdown-timeout", "1", "--summary-json", "s.json", "./rank.sh")
        rank = json.loads((runs.workdir / "s.json").read_text())["attempts"][0]["ranks"][1]
        assert Path(cgroup, "cgroup.procs").read_text().split() == [str(rank["pid"])]
    assert result.returncode == 3, result.stderr
    stuck = f"rank 1 (pid {rank['pid']}) is stuck in the kernel (state D, in "
    assert result.stderr.count(stuck) == 2, result.stderr  # as it happens, and in the report
    assert "others: stuck in the kernel: 1" in result.stderr
    assert "left their rank's group" not in result.stderr, "a stuck rank is no escapee"
    assert rank["stuck"].startswith("state D, in ") and rank["stuck"] != "state D, in "
