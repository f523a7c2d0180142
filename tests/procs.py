"""Processes a test starts itself (stand-ins for launchers and ranks), ended by pid."""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Iterator
from typing import TypeVar

from conftest import Runs, wait_gone


class Procs:
    """Processes a test starts, each in a group of its own as ranks are, ended by pid."""

    def __init__(self, runs: Runs, env: dict[str, str] | None = None) -> None:
        self.runs = runs
        self.env = runs.env if env is None else env
        self.started: list[subprocess.Popen[str]] = []

    def start(self, argv: list[str]) -> subprocess.Popen[str]:
        proc = subprocess.Popen(
            argv,
            env=self.env,
            cwd=self.runs.workdir,
            stdout=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        self.started.append(proc)
        return proc

    def end(self) -> None:
        # All killed before any is waited for: a traced process is not reaped until its
        # tracer, started after it, lets go. The group takes a stand-in's own children too.
        for proc in reversed(self.started):
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        for proc in self.started:
            proc.wait()
            if proc.stdout is not None:
                proc.stdout.close()


P = TypeVar("P", bound=Procs)


def ended(procs: P) -> Iterator[P]:
    """For a fixture: yield ``procs``, then end them and check that nothing tagged is left."""
    try:
        yield procs
    finally:
        procs.end()
        assert wait_gone(procs.runs.tag, timeout=2.0) == []
