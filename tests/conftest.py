"""Helpers for tests that run real launchers, and the check that nothing they start survives.

Every launcher a test starts carries RANKRUN_TEST_TAG=<unique> in its environment, and
everything it starts inherits it: ranks, their helpers, the guardian. After the test, no
live process may carry the tag. Leftovers are ended by the pids found, then the test fails.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from rankrun.inspect.procfs import carrying, read_stat

TAG_VAR = "RANKRUN_TEST_TAG"


def tagged_pids(tag: str) -> list[int]:
    return [pid for pid in carrying(TAG_VAR, tag) if pid != os.getpid()]


def wait_gone(tag: str, timeout: float) -> list[int]:
    deadline = time.monotonic() + timeout
    while (pids := tagged_pids(tag)) and time.monotonic() < deadline:
        time.sleep(0.05)
    return pids


def process_state(pid: int) -> str | None:
    """The process's state letter (``R``, ``S``, ``T``, ``Z``...), or None once it is gone."""
    stat = read_stat(pid)
    return None if stat is None else stat.state


def alive(pid: int) -> bool:
    """Whether ``pid`` is a process that is not yet a zombie."""
    stat = read_stat(pid)
    return stat is not None and stat.live


def wait_dead(pids: list[int], timeout: float) -> list[int]:
    """Those of ``pids`` still alive after up to ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while any(alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.02)
    return [p for p in pids if alive(p)]


class Runs:
    """Starts rankrun under a tag, in a scratch directory."""

    def __init__(self, tag: str, workdir: Path) -> None:
        self.tag = tag
        self.workdir = workdir
        self.env = {**os.environ, TAG_VAR: tag}
        self.env.pop("OMP_NUM_THREADS", None)

    def script(self, name: str, body: str, *, executable: bool = True) -> Path:
        path = self.workdir / name
        path.parent.mkdir(parents=True, exist_ok=True)
        text = textwrap.dedent(body).lstrip()
        if name.endswith(".sh") and not text.startswith("#!"):
            text = "#!/bin/bash\n" + text
        path.write_text(text)
        path.chmod(0o755 if executable else 0o644)
        return path

    def argv(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "rankrun", *args]

    def run(
        self, *args: str, timeout: float = 60, **kw: object
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            self.argv(*args),
            env=self.env,
            cwd=self.workdir,
            capture_output=True,
            text=True,
            timeout=timeout,
            **kw,  # type: ignore[call-overload]
        )

    def start(self, *args: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            self.argv(*args),
            env=self.env,
            cwd=self.workdir,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def gang(self, ranks: int, *args: str, **kw: object) -> subprocess.CompletedProcess[str]:
        """Run ``ranks`` ranks on a free port, so that tests never contend for 29500."""
        return self.run("--nproc_per_node", str(ranks), "--master_port", "0", *args, **kw)

    def start_gang(self, ranks: int, *args: str) -> subprocess.Popen[str]:
        return self.start("--nproc_per_node", str(ranks), "--master_port", "0", *args)

    def wait_for_files(self, pattern: str, count: int, timeout: float = 20) -> list[Path]:
        deadline = time.monotonic() + timeout
        while len(found := sorted(self.workdir.glob(pattern))) < count:
            assert time.monotonic() < deadline, f"only {len(found)} of {count} {pattern}"
            time.sleep(0.02)
        return found


@pytest.fixture
def runs(tmp_path: Path) -> Iterator[Runs]:
    tag = uuid.uuid4().hex
    yield Runs(tag, tmp_path)
    survivors = wait_gone(tag, timeout=2.0)
    for pid in survivors:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    assert not survivors, f"processes left alive: {survivors}"


# A rank that starts a helper child (as a DataLoader does), reports both pids, then blocks.
BLOCKING_RANK = """
    #!/bin/bash
    sleep 300 &
    echo "$$ $!" > "tmp.$RANK" && mv "tmp.$RANK" "pids.$RANK"  # whole when seen
    wait
"""
