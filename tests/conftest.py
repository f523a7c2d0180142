"""Helpers for tests that run real launchers, and the check that nothing they start survives.

Every launcher a test starts carries RANKRUN_TEST_TAG=<unique> in its environment, and
everything it starts inherits it: ranks, their helpers, the guardian. After the test, no
live process may carry the tag. Leftovers are ended by the pids found, then the test fails.
"""

from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import IO, TypeVar

import pytest

from rankrun.inspect.procfs import carrying, read_stat

TAG_VAR = "RANKRUN_TEST_TAG"
T = TypeVar("T")


def tagged_pids(tag: str) -> list[int]:
    return [pid for pid in carrying(TAG_VAR, tag) if pid != os.getpid()]


def wait_until(
    predicate: Callable[[], T],
    timeout: float,
    what: str | Callable[[], str],
    *,
    fail: bool = True,
    every: float = 0.02,
) -> T:
    """Poll ``predicate`` every ``every`` seconds until it returns something true; return that.

    Tests wait on evidence (a file a rank wrote, a line the launcher printed, a process
    state), never for a fixed time. After ``timeout`` seconds the test fails, saying it was
    waiting for ``what`` (a callable is asked then, to describe what it found); with
    ``fail=False`` the last, false, value is returned instead, for a caller that cleans up.
    """
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        if time.monotonic() >= deadline:
            if fail:
                pytest.fail(f"waited {timeout:g} s for {what() if callable(what) else what}")
            return value
        time.sleep(every)
    return value


def wait_gone(tag: str, timeout: float) -> list[int]:
    """The pids still carrying ``tag`` after up to ``timeout`` seconds."""
    wait_until(
        lambda: not tagged_pids(tag), timeout, "the tagged processes to end", fail=False, every=0.05
    )
    return tagged_pids(tag)


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
    wait_until(lambda: not any(alive(p) for p in pids), timeout, f"{pids} to end", fail=False)
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

    def start(self, *args: str, stderr_to: str | None = None) -> subprocess.Popen[str]:
        """With ``stderr_to``, stderr goes to that file in the workdir, which a test can read
        while the launcher runs (to wait for a line)."""
        if stderr_to is None:
            return self._popen(args, subprocess.PIPE)
        with open(self.workdir / stderr_to, "w") as stderr:
            return self._popen(args, stderr)

    def _popen(self, args: tuple[str, ...], stderr: int | IO[str]) -> subprocess.Popen[str]:
        return subprocess.Popen(
            self.argv(*args),
            env=self.env,
            cwd=self.workdir,
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
        )

    def gang(self, ranks: int, *args: str, **kw: object) -> subprocess.CompletedProcess[str]:
        """Run ``ranks`` ranks on a free port, so that tests never contend for 29500."""
        return self.run("--nproc_per_node", str(ranks), "--master_port", "0", *args, **kw)

    def start_gang(
        self, ranks: int, *args: str, stderr_to: str | None = None
    ) -> subprocess.Popen[str]:
        return self.start(
            "--nproc_per_node", str(ranks), "--master_port", "0", *args, stderr_to=stderr_to
        )

    def wait_for_files(self, pattern: str, count: int, timeout: float = 20) -> list[Path]:
        def enough() -> list[Path]:
            found = sorted(self.workdir.glob(pattern))
            return found if len(found) >= count else []

        return wait_until(
            enough,
            timeout,
            lambda: f"{count} {pattern}, of which {len(list(self.workdir.glob(pattern)))} came",
        )


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


def load_bench(name: str) -> ModuleType:
    """``bench/<name>.py``, imported as a module for its tests."""
    path = Path(__file__).parents[1] / "bench" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"bench_{name}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while defining
    spec.loader.exec_module(module)
    return module
