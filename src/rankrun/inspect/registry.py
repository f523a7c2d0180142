"""The per-user registry of live runs, so that ``rankrun stacks`` and ``rankrun status``,
started from another terminal, can find a running launcher and its ranks: its entries and
their files.

One JSON file per launcher, ``<run id>.<launcher pid>.json``, in the runtime directory
(``rundir.py``). A file records the launcher's start time beside its pid, so an entry whose
launcher died, even by SIGKILL, and whose pid was reused is seen as stale.
``registration.py`` writes a launcher's own entry; ``lookup.py`` finds the live ones.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable

from rankrun.base.values import NamedTuple
from rankrun.inspect.procfs import start_time

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

FORMAT = 1
UPDATE_INTERVAL_S = 1.0
SUFFIX = ".json"
_MAX_ID = 80


class RankEntry(NamedTuple):
    rank: int
    local_rank: int
    pid: int
    last_output: float | None = None
    """Wall-clock time of the rank's last output the launcher relayed; None before any."""
    log: str = ""
    """A file the rank writes to directly, bypassing the launcher; its mtime counts as output."""


class RunEntry(NamedTuple):
    run_id: str
    pid: int
    """The launcher's pid."""
    start_time: int
    """The launcher's start, in clock ticks after boot (``/proc/<pid>/stat`` field 22); 0 if
    unknown (no /proc), when only the pid is checked."""
    host: str
    node_rank: int
    attempt: int
    ranks: tuple[RankEntry, ...]
    started_at: float
    """Wall-clock time the launcher registered."""
    updated_at: float
    """Wall-clock time of the last write."""
    command: str = ""
    """What the ranks run, for telling runs apart."""
    nnodes: int = 1
    job_store: str = ""
    """Across nodes, node 0's store as ``addr:port``: node 0's ``rankrun stacks`` asks every
    node there. Absent from entries written before it: one node."""
    path: str = ""
    """The entry's file; set by ``register`` and by readers, never written."""


def new_entry(
    run_id: str,
    ranks: Iterable[RankEntry] = (),
    *,
    node_rank: int = 0,
    attempt: int = 0,
    command: str = "",
    nnodes: int = 1,
    job_store: str = "",
) -> RunEntry:
    """An entry for a run launched by this process."""
    pid = os.getpid()
    now = time.time()
    return RunEntry(
        run_id=run_id,
        pid=pid,
        start_time=start_time(pid) or 0,
        host=os.uname().nodename,
        node_rank=node_rank,
        attempt=attempt,
        ranks=tuple(ranks),
        started_at=now,
        updated_at=now,
        command=command,
        nnodes=nnodes,
        job_store=job_store,
    )


def entry_file_name(run_id: str, pid: int) -> str:
    """``<run id>.<pid>.json``, the run id reduced to letters, digits, ``-``, ``_`` and ``.``."""
    safe = "".join(c if c.isascii() and (c.isalnum() or c in "-_.") else "_" for c in run_id)
    safe = safe.lstrip(".")[:_MAX_ID] or "run"
    return f"{safe}.{pid}{SUFFIX}"


def is_live(pid: int, started: int) -> bool:
    """Whether the launcher ``pid`` that started at ``started`` still runs (not a reused pid)."""
    now = start_time(pid)
    return now is not None and (started == 0 or now == 0 or now == started)


def to_json(entry: RunEntry) -> dict[str, Any]:
    data = entry._asdict()
    del data["path"]
    data["format"] = FORMAT
    data["ranks"] = [r._asdict() for r in entry.ranks]
    return data


def read_entry(path: str) -> RunEntry | None:
    import json

    try:
        with open(path, "rb") as f:
            data = json.loads(f.read())
        ranks = tuple(
            RankEntry(
                rank=int(r["rank"]),
                local_rank=int(r["local_rank"]),
                pid=int(r["pid"]),
                last_output=None if r.get("last_output") is None else float(r["last_output"]),
                log=str(r.get("log", "")),
            )
            for r in data["ranks"]
        )
        return RunEntry(
            run_id=str(data["run_id"]),
            pid=int(data["pid"]),
            start_time=int(data["start_time"]),
            host=str(data["host"]),
            node_rank=int(data["node_rank"]),
            attempt=int(data["attempt"]),
            ranks=ranks,
            started_at=float(data["started_at"]),
            updated_at=float(data["updated_at"]),
            command=str(data.get("command", "")),
            nnodes=int(data.get("nnodes", 1)),
            job_store=str(data.get("job_store", "")),
            path=path,
        )
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def seconds_since_output(rank: RankEntry, now: float | None = None) -> float | None:
    """Seconds since the rank's last output: relayed by the launcher, or written to its log.

    None when it has sent none yet. At most ``UPDATE_INTERVAL_S`` too high, since the launcher
    writes output times at most that often.
    """
    last = rank.last_output
    if rank.log:
        try:
            mtime = os.stat(rank.log).st_mtime
            last = mtime if last is None else max(last, mtime)
        except OSError:
            pass
    if last is None:
        return None
    return max(0.0, (time.time() if now is None else now) - last)
