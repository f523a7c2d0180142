"""What left its rank's process group (a ``setsid`` daemon) and was adopted by the launcher,
the subreaper: ended once the ranks are gone, with the same grace, and named for the user."""

from __future__ import annotations

import os
import signal
import time

from rankrun.inspect.procfs import process_name
from rankrun.run.reaper import Reaper
from rankrun.run.watch import TERMINATING, Signalled, Watch


def end_escaped(
    reaper: Reaper, watch: Watch, grace: float, stuck: set[int] | frozenset[int] = frozenset()
) -> list[str]:
    """SIGTERM each adopted process's group, SIGKILL what is left after ``grace``; name them.

    A Ctrl-Z stops the launcher at once, and a terminating signal skips the grace. The
    ``stuck`` ranks, which outlived SIGKILL, are left to the kernel.
    """
    pids = set(reaper.adopted()) - stuck
    named = [f"{pid} ({process_name(pid) or '?'})" for pid in sorted(pids)]
    _signal(pids, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while pids and time.monotonic() < deadline:
        signals = watch.wait(min(0.05, deadline - time.monotonic()))
        if Signalled(signal.SIGTSTP) in signals:
            watch.pause()  # no rank is left to pause
        pids -= {e.pid for e in reaper.reap()}
        if any(s.signum in TERMINATING for s in signals):
            break  # asked to hurry: no grace
    _signal(pids, signal.SIGKILL)
    return named


def _signal(pids: set[int], signum: int) -> None:
    for pid in pids:
        try:
            os.killpg(os.getpgid(pid), signum)
        except ProcessLookupError:
            pass
