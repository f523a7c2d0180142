"""Finding live runs in the registry: every live one, or the one a selector names.

Entries whose launcher is gone are deleted on the way.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

from rankrun.inspect.procfs import start_time
from rankrun.inspect.registry import SUFFIX, RunEntry, is_live, read_entry
from rankrun.inspect.rundir import RegistryError, search_dirs

_LISTED = 5


class RunNotFound(RegistryError, LookupError):
    """No run, several runs, or not the run asked for. The message is one line with the fix."""


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
            entry = read_entry(path) if not name.startswith(".") else None
            if entry is not None and is_live(entry.pid, entry.start_time):
                runs.append(entry)
            elif entry is None and start_time(pid) is not None:
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
    if not name.endswith(SUFFIX):
        return None
    pid = name[: -len(SUFFIX)].rpartition(".")[2]
    return int(pid) if pid.isdigit() else None


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
    node0 = _node_0(matches)
    if node0 is not None:
        return node0
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


def _node_0(matches: Sequence[RunEntry]) -> RunEntry | None:
    """Node 0 where ``matches`` are nodes of one multi-node job on this host (agents on
    loopback, or in network namespaces): it has the whole job."""
    if len({(r.job_store, r.nnodes) for r in matches}) != 1 or matches[0].nnodes < 2:
        return None
    zeros = [r for r in matches if r.node_rank == 0]
    return zeros[0] if len(zeros) == 1 else None


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
