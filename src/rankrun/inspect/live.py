"""This launcher's entry in the registry of live runs, kept as its ranks start and write.

``Host`` feeds a ``LiveRun``: ``started`` as each rank starts, ``output`` as a rank's output
is relayed, ``tick`` before each wait, ``close`` at the end. The entry is first written
``REGISTER_AFTER_S`` after the last rank has started, so that a run shorter than that never
pays for ``json`` and a file; then at once on a restart, and otherwise at most once a
second. Nothing here raises: the registry serves diagnostics, and must never stop a run.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping, Sequence

from rankrun.base.errors import RankrunError
from rankrun.plan.plan import RankSpec

TYPE_CHECKING = False
if TYPE_CHECKING:  # the registry is imported once a run has lasted, never for a short one
    from rankrun.inspect.registration import Registration
    from rankrun.inspect.registry import RankEntry

Warn = Callable[[str], None]
REGISTER_AFTER_S = 0.5


def start_registration(
    ranks: Sequence[tuple[RankSpec, int]],
    *,
    warn: Warn | None = None,
    env: Mapping[str, str] | None = None,
    last: Mapping[int, float] | None = None,
) -> Registration | None:
    """Register this launcher's run with its started ``ranks`` as (spec, pid), and the time
    of each one's last output by pid; None, after one warning through ``warn``, where the
    registry cannot be used."""
    from rankrun.inspect.registration import Registration
    from rankrun.inspect.registry import new_entry
    from rankrun.inspect.rundir import RegistryError

    spec = ranks[0][0]
    try:
        entry = new_entry(
            spec.run_id,
            rank_entries(ranks, last),
            node_rank=spec.node_rank,
            attempt=spec.attempt,
            command=command_words(spec.argv),
            nnodes=spec.nnodes,
            job_store=spec.job_store,
        )
        return Registration(entry, env)
    except (RegistryError, OSError) as e:
        if warn is not None:
            warn(f"stacks and status will not find this run: {e}")
        return None


def rank_entries(
    ranks: Sequence[tuple[RankSpec, int]], last: Mapping[int, float] | None = None
) -> list[RankEntry]:
    from rankrun.inspect.registry import RankEntry

    last = last or {}
    return [RankEntry(s.rank, s.local_rank, pid, last.get(pid), _direct_log(s)) for s, pid in ranks]


def command_words(argv: Sequence[str]) -> str:
    """The ranks' command for telling runs apart: ``python3 -u train.py --lr 3``; unquoted,
    to keep shlex off the launch path."""
    return " ".join([os.path.basename(argv[0]), *argv[1:]]) if argv else ""


def _direct_log(spec: RankSpec) -> str:
    """A log file the rank writes itself (``-r``): its changes count as output."""
    for route in (spec.stdout, spec.stderr):
        if route.file is not None and not route.console:
            return route.file
    return ""


class LiveRun:
    def __init__(
        self,
        warn: Warn | None = None,
        env: Mapping[str, str] | None = None,
        delay: float = REGISTER_AFTER_S,
    ) -> None:
        self._warn, self._env, self._delay = warn, env, delay
        self._attempt = -1
        self._started: list[tuple[RankSpec, int]] = []
        self._due: float | None = None
        """When to write the entry first (``time.monotonic()``)."""
        self._early: dict[int, float] = {}
        """Output times before that, by pid."""
        self._index: dict[int, int] = {}
        """Each rank's position in the entry, by pid."""
        self._registration: Registration | None = None
        self._done = False

    def started(self, spec: RankSpec, pid: int) -> None:
        """Rank ``spec`` runs as ``pid``; the entry lists an attempt once all its ranks do."""
        attempt = spec.attempt
        if attempt != self._attempt:
            self._attempt, self._started, self._due = attempt, [], None
        self._started.append((spec, pid))
        if self._done or len(self._started) < spec.local_world_size:
            return
        if self._registration is None:
            self._due = time.monotonic() + self._delay
            return
        try:
            self._registration.new_attempt(attempt, rank_entries(self._started))
        except (RankrunError, OSError, ValueError):
            pass
        self._index = {pid: i for i, (_, pid) in enumerate(self._started)}

    def output(self, pid: int) -> None:
        """The rank ``pid`` has just written; only a time is stored."""
        if self._registration is None:
            self._early[pid] = time.time()
            return
        index = self._index.get(pid)
        if index is not None:
            self._registration.output(index)

    def tick(self, timeout: float | None) -> float | None:
        """Write what is due; return ``timeout`` cut short to when the next write is due."""
        if self._due is not None:
            left = self._due - time.monotonic()
            if left > 0:
                return _sooner(timeout, left)
            self._register()
        if self._registration is None:
            return timeout
        self._registration.flush()
        return _sooner(timeout, self._registration.due_in())

    def _register(self) -> None:
        self._due = None
        self._registration = start_registration(
            self._started, warn=self._warn, env=self._env, last=self._early
        )
        self._done = self._registration is None
        self._index = {pid: i for i, (_, pid) in enumerate(self._started)}
        self._early = {}

    def close(self) -> None:
        """Remove the entry, if written: the run is over."""
        self._done, self._due = True, None
        if self._registration is not None:
            try:
                self._registration.close()
            except OSError:
                pass
            self._registration = None


def _sooner(timeout: float | None, due: float | None) -> float | None:
    if due is None:
        return timeout
    return due if timeout is None else min(timeout, due)
