"""The per-user registry of live runs, so that ``rankrun stacks`` and ``rankrun status``,
started from another terminal, can find a running launcher and its ranks.

One JSON file per launcher, ``<run id>.<launcher pid>.json``, in the runtime directory
(``rundir.py``).

Files are written whole (a temporary file, then ``rename``), never fsynced: the registry
describes processes, which a reboot ends anyway. A file records the launcher's start time
(``/proc/<pid>/stat`` field 22) beside its pid, so an entry whose launcher died, even by
SIGKILL, and whose pid was reused is seen as stale. Readers delete stale entries as they go,
so nothing needs to clean up after a launcher that could not.

The launcher writes its entry at spawn and on each restart, and the time of each rank's
last output at most once a second (``Registration``). Noting output is a list store; a write
is one small file and a rename.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Mapping, Sequence

from rankrun.base.values import NamedTuple
from rankrun.inspect.rundir import RegistryError, runtime_dir, search_dirs

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

FORMAT = 1
UPDATE_INTERVAL_S = 1.0
_SUFFIX = ".json"
_MAX_ID = 80
_LISTED = 5


class RunNotFound(RegistryError, LookupError):
    """No run, several runs, or not the run asked for. The message is one line with the fix."""


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
    path: str = ""
    """The entry's file; set by ``register`` and by readers, never written."""


# --- processes -------------------------------------------------------------------------------


def process_start_time(pid: int) -> int | None:
    """Clock ticks after boot at which ``pid`` started; None if it is gone or a zombie.

    Without /proc (not Linux) it is 0 for a live process: only the pid can be checked.
    """
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except FileNotFoundError:
        return None if os.path.isdir("/proc/self") else _alive_without_proc(pid)
    except OSError:
        return None
    fields = stat[stat.rfind(b")") + 2 :].split()
    if fields[0] in (b"Z", b"X"):
        return None
    return int(fields[19])


def _alive_without_proc(pid: int) -> int | None:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        pass
    return 0


def _is_live(pid: int, start_time: int) -> bool:
    now = process_start_time(pid)
    return now is not None and (start_time == 0 or now == 0 or now == start_time)


# --- writing -----------------------------------------------------------------------------------


def new_entry(
    run_id: str,
    ranks: Iterable[RankEntry] = (),
    *,
    node_rank: int = 0,
    attempt: int = 0,
    command: str = "",
) -> RunEntry:
    """An entry for a run launched by this process."""
    pid = os.getpid()
    now = time.time()
    return RunEntry(
        run_id=run_id,
        pid=pid,
        start_time=process_start_time(pid) or 0,
        host=os.uname().nodename,
        node_rank=node_rank,
        attempt=attempt,
        ranks=tuple(ranks),
        started_at=now,
        updated_at=now,
        command=command,
    )


def entry_file_name(run_id: str, pid: int) -> str:
    """``<run id>.<pid>.json``, the run id reduced to letters, digits, ``-``, ``_`` and ``.``."""
    safe = "".join(c if c.isascii() and (c.isalnum() or c in "-_.") else "_" for c in run_id)
    safe = safe.lstrip(".")[:_MAX_ID] or "run"
    return f"{safe}.{pid}{_SUFFIX}"


def register(entry: RunEntry, env: Mapping[str, str] | None = None) -> str:
    """Write ``entry`` into the runtime directory; return its path. Raises ``RegistryError``.

    A launcher should report a ``RegistryError`` as a warning and run on: the registry only
    serves diagnostics.
    """
    path = os.path.join(runtime_dir(env), entry_file_name(entry.run_id, entry.pid))
    update(path, entry)
    return path


def update(path: str, entry: RunEntry) -> None:
    """Rewrite the entry at ``path`` whole (tmp file + rename), stamping ``updated_at``.

    For eight ranks, about 60 us on tmpfs (``/run/user``) and 200 us on an ext4 ``/tmp``,
    plus 1.5 ms to import ``json`` the first time. Call it at most once a second for output
    times (``Registration`` does the throttling), and at once for a new attempt.
    """
    import json

    data = _to_json(entry._replace(updated_at=time.time()))
    directory, name = os.path.split(path)
    tmp = os.path.join(directory, f".{name}.{os.getpid()}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        try:
            os.write(fd, json.dumps(data, separators=(",", ":")).encode())
        finally:
            os.close(fd)
        os.rename(tmp, path)
    except OSError as e:
        _unlink(tmp)
        raise RegistryError(f"cannot write the run registry entry {path}: {e.strerror}") from None


def unregister(path: str) -> None:
    """Remove the entry; an entry already gone (pruned, or never written) is fine."""
    _unlink(path)


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def _to_json(entry: RunEntry) -> dict[str, Any]:
    data = entry._asdict()
    del data["path"]
    data["format"] = FORMAT
    data["ranks"] = [r._asdict() for r in entry.ranks]
    return data


class Registration:
    """A launcher's own entry: registered once, rewritten at most once per ``interval``.

    The launcher calls ``output(index)`` whenever rank ``index`` (its position in ``ranks``)
    sends output; that only stores a time. It calls ``flush()`` whenever its loop wakes, and
    bounds its wait by ``due_in()``, so that the last output before a silence is written
    within ``interval`` too. A reader's "seconds since last output" is thus at most
    ``interval`` too high.
    """

    def __init__(
        self,
        entry: RunEntry,
        env: Mapping[str, str] | None = None,
        interval: float = UPDATE_INTERVAL_S,
    ) -> None:
        self.entry = entry
        self.interval = interval
        self.path = register(entry, env)
        self._last: list[float | None] = [r.last_output for r in entry.ranks]
        self._dirty = False
        self._written = time.monotonic()

    def output(self, index: int, when: float | None = None) -> None:
        """Note that rank ``index`` just sent output (``when``: its ``time.time()``)."""
        self._last[index] = time.time() if when is None else when
        self._dirty = True

    def new_attempt(self, attempt: int, ranks: Sequence[RankEntry]) -> None:
        """Record a restart's ranks; written at once."""
        self.entry = self.entry._replace(attempt=attempt, ranks=tuple(ranks))
        self._last = [r.last_output for r in self.entry.ranks]
        self._dirty = True
        self.flush(force=True)

    def due_in(self, now: float | None = None) -> float | None:
        """Seconds until a pending write is due (0 if overdue); None when nothing is pending."""
        if not self._dirty:
            return None
        now = time.monotonic() if now is None else now
        return max(0.0, self._written + self.interval - now)

    def flush(self, now: float | None = None, *, force: bool = False) -> bool:
        """Write pending output times if ``interval`` has passed (or ``force``); True if written.

        ``now`` is ``time.monotonic()``. A failed write is dropped silently: diagnostics must
        not stop a run.
        """
        if not self._dirty:
            return False
        now = time.monotonic() if now is None else now
        if not force and now - self._written < self.interval:
            return False
        ranks = tuple(
            r._replace(last_output=t) for r, t in zip(self.entry.ranks, self._last, strict=True)
        )
        self.entry = self.entry._replace(ranks=ranks)
        self._dirty = False
        self._written = now
        try:
            update(self.path, self.entry)
        except RegistryError:
            return False
        return True

    def close(self) -> None:
        unregister(self.path)


# --- reading -----------------------------------------------------------------------------------


def live_runs(env: Mapping[str, str] | None = None) -> list[RunEntry]:
    """The runs whose launcher is alive, oldest first. Stale entries are deleted on the way."""
    return _scan(env)[0]


def prune(env: Mapping[str, str] | None = None) -> int:
    """Delete the entries (and leftover temporary files) of dead launchers; return how many."""
    return _scan(env)[1]


def _scan(env: Mapping[str, str] | None) -> tuple[list[RunEntry], int]:
    runs: list[RunEntry] = []
    pruned = 0
    for directory in search_dirs(env):
        try:
            names = os.listdir(directory)
        except OSError:
            continue
        for name in names:
            path = os.path.join(directory, name)
            pid = _pid_from_name(name)
            if pid is None:
                continue
            entry = _read(path) if not name.startswith(".") else None
            if entry is not None and _is_live(entry.pid, entry.start_time):
                runs.append(entry)
            elif entry is None and process_start_time(pid) is not None:
                continue  # a temporary file being written, or a file being replaced
            else:
                try:
                    os.unlink(path)
                    pruned += 1
                except OSError:
                    pass
    runs.sort(key=lambda r: (r.started_at, r.pid))
    return runs, pruned


def _pid_from_name(name: str) -> int | None:
    """The launcher pid in ``<id>.<pid>.json`` or ``.<id>.<pid>.json.<writer>.tmp``."""
    if name.startswith("."):
        parts = name.split(".")
        return int(parts[-2]) if len(parts) >= 4 and parts[-2].isdigit() else None
    if not name.endswith(_SUFFIX):
        return None
    pid = name[: -len(_SUFFIX)].rpartition(".")[2]
    return int(pid) if pid.isdigit() else None


def _read(path: str) -> RunEntry | None:
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
            path=path,
        )
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def find_run(selector: str | None = None, env: Mapping[str, str] | None = None) -> RunEntry:
    """The one live run that ``selector`` names: a run id, a launcher pid, or a rank's pid.

    With no selector, the only live run. Raises ``RunNotFound`` with a one-line message when
    none runs, when several do and none was named, or when none matches.
    """
    runs = live_runs(env)
    if selector is None:
        if len(runs) == 1:
            return runs[0]
        if not runs:
            raise RunNotFound(f"no rankrun run is running for this user on {_host()}")
        raise RunNotFound(
            f"{len(runs)} runs are running: {_listing(runs)}; pass a run id or launcher pid"
        )
    matches = [r for r in runs if r.run_id == selector]
    if not matches and selector.isdigit():
        pid = int(selector)
        matches = [r for r in runs if r.pid == pid or any(k.pid == pid for k in r.ranks)]
    if len(matches) == 1:
        return matches[0]
    if matches:
        pids = ", ".join(str(r.pid) for r in matches)
        raise RunNotFound(
            f"{len(matches)} runs have the id {selector} (launcher pids {pids}): "
            "pass a launcher pid instead"
        )
    if not runs:
        raise RunNotFound(
            f"no run {selector}: no rankrun run is running for this user on {_host()}"
        )
    raise RunNotFound(f"no run has the id or pid {selector}; running: {_listing(runs)}")


def _listing(runs: Sequence[RunEntry]) -> str:
    shown = [_describe(r) for r in runs[:_LISTED]]
    if len(runs) > _LISTED:
        shown.append(f"and {len(runs) - _LISTED} more")
    return ", ".join(shown)


def _describe(run: RunEntry) -> str:
    what = f", {run.command}" if run.command else ""
    if len(what) > 42:
        what = what[:40] + "..."
    return f"{run.run_id} (pid {run.pid}{what})"


def _host() -> str:
    return os.uname().nodename


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
