"""Whether the kernel's OOM killer sent a rank's SIGKILL: asked only when a rank dies of a
SIGKILL that rankrun did not send, so nothing here costs a run that ends otherwise.

Two witnesses, the first that knows decides:
- the kernel log, where it can be read: it names each victim's pid, the cgroup whose limit
  was hit and the victim's resident memory;
- the OOM-kill count of the launcher's memory cgroup, where the ranks start: read as the
  launcher starts and again now. It counts the cgroup's other processes too, so a rise with
  a log that names someone else is theirs.
"""

from __future__ import annotations

from rankrun.base.values import NamedTuple
from rankrun.inspect.cgroup import MemoryCgroup
from rankrun.inspect.kernel_log import LoggedKill, oom_kills
from rankrun.output.outcome import OomVerdict


class Killed(NamedTuple):
    """A rank dead of a SIGKILL that rankrun did not send."""

    pid: int
    since: float
    """When it started, in ``time.monotonic()`` seconds."""
    peak_rss: int | None
    """From its rusage, in bytes."""
    cgroup: MemoryCgroup | None
    """Its own, where the kernel still names it (v2 only, for a zombie)."""


def explain(
    killed: list[Killed], launcher: MemoryCgroup | None, counted: int | None
) -> tuple[dict[int, OomVerdict | None], int | None]:
    """Each rank's verdict (None: no one can tell), and the launcher's cgroup's count now."""
    logged = oom_kills(min(k.since for k in killed) - 1.0)
    count = launcher.oom_kills() if launcher is not None else None
    rose = None if count is None or counted is None else count > counted
    if rose and logged and not any(k.pid in logged for k in killed):
        rose = False  # the log names whom the count counted
    verdicts = {k.pid: _verdict(k, logged, rose, launcher) for k in killed}
    return verdicts, count


def _verdict(
    k: Killed,
    logged: dict[int, LoggedKill] | None,
    rose: bool | None,
    launcher: MemoryCgroup | None,
) -> OomVerdict | None:
    entry = logged.get(k.pid) if logged is not None else None
    if entry is None and rose is None and logged is None:
        return None
    if entry is None and not rose:
        return OomVerdict(False, peak_rss=k.peak_rss)
    peaks = [rss for rss in (k.peak_rss, entry and entry.rss) if rss]
    cgroup = _cgroup(k, entry, launcher)
    limit = cgroup.limit() if cgroup is not None else None
    path = limit[1] if limit else cgroup.path if cgroup else entry.memcg if entry else None
    return OomVerdict(True, path, limit[0] if limit else None, max(peaks, default=None))


def _cgroup(
    k: Killed, entry: LoggedKill | None, launcher: MemoryCgroup | None
) -> MemoryCgroup | None:
    """The cgroup whose limit was hit, as the log says, else the rank's, else the launcher's."""
    v2 = launcher.v2 if launcher is not None else k.cgroup.v2 if k.cgroup is not None else None
    if entry is not None and entry.memcg is not None and v2 is not None:
        return MemoryCgroup(entry.memcg, v2)
    if k.cgroup is not None and k.cgroup.path != "/":
        return k.cgroup
    return launcher
