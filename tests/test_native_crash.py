"""A crash in native code: faulthandler's Python stacks become the rank's error."""

from __future__ import annotations

import signal

import pytest
from conftest import Runs

CRASH = """
    import ctypes, os, threading, time

    def load_shard():
        if os.environ["RANK"] == "1":
            {crash}
        time.sleep(300)

    threading.Thread(target=time.sleep, args=(300,), name="prefetch", daemon=True).start()
    load_shard()
"""


@pytest.mark.parametrize(
    ("crash", "signum", "fatal"),
    [
        ("ctypes.string_at(0)", signal.SIGSEGV, "Segmentation fault"),
        ("os.abort()", signal.SIGABRT, "Aborted"),
    ],
)
def test_a_native_crash_shows_the_python_stack_in_the_report(
    runs: Runs, crash: str, signum: int, fatal: str
) -> None:
    runs.env.pop("PYTHONFAULTHANDLER", None)
    path = runs.script("rank.py", CRASH.format(crash=crash), executable=False)
    result = runs.gang(2, "--shutdown-timeout", "5", "rank.py")

    assert result.returncode == 128 + signum
    lines = result.stderr.splitlines()
    cause = next(i for i, line in enumerate(lines) if line.startswith("rankrun: root cause:"))
    assert "rank 1 (local rank 1" in lines[cause] and signal.Signals(signum).name in lines[cause]
    report = lines[cause + 1 :]
    assert report[0] == f"rankrun:   Fatal Python error: {fatal}"
    current = report.index(next(line for line in report if "Current thread 0x" in line))
    assert f'rankrun:     File "{path}", line 5 in load_shard' in report[current:]
    assert any("Thread 0x" in line for line in report[:current])  # the other thread too
    assert report[-2:] == [
        "rankrun: others: terminated (SIGTERM): 0",
        f"rankrun: exit code {128 + signum}",
    ]
