"""A launcher's own entry in the registry of live runs: written at spawn and on each restart,
and the time of each rank's last output at most once a second (``Registration``).

Files are written whole (a temporary file, then ``rename``), never fsynced: the registry
describes processes, which a reboot ends anyway. Readers delete stale entries as they go,
so nothing needs to clean up after a launcher that could not. Noting output is a list store;
a write is one small file and a rename.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping, Sequence

from rankrun.inspect.registry import (
    UPDATE_INTERVAL_S,
    RankEntry,
    RunEntry,
    entry_file_name,
    to_json,
)
from rankrun.inspect.rundir import RegistryError, runtime_dir


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

    One small file and a rename, plus importing ``json`` the first time. Call it at most once
    a second for output times (``Registration`` does the throttling), and at once for a new
    attempt.
    """
    import json

    data = to_json(entry._replace(updated_at=time.time()))
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
