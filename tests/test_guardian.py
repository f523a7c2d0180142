"""The guardian, in its own process's shoes: what it ends, and how often it reads /proc."""

from __future__ import annotations

import os
import subprocess
import time

import pytest

from rankrun import guardian


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
