"""A stalled job's stacks in a few lines: each rank's stack digested, equal digests grouped.

``digest()`` reads one rank's stack, as py-spy's ``dump`` or faulthandler's
``dump_traceback`` (torch's worker server) writes it, and keeps one thread's frames: the main
thread's, else the first thread's that has Python frames. A digest is capped, so that a
node's digests can travel through a store: at most ``MAX_FRAMES`` (24) frames, innermost
first; a function name of at most 80 characters; a file as its package path (after
``site-packages/`` or the standard library's directory, at most 3 components) or, for the
user's own code, its base name; and at most ``MAX_BYTES`` (2 KiB) per rank, as JSON.

``group()`` puts ranks with equal digests together, smallest groups first (the odd one out is
usually the culprit), and ``verdict_lines()`` words the groups, a few lines at any scale.
Values are NamedTuples; ``_asdict()`` makes them JSON, ``from_json()`` reads them back.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence

from rankrun.base.values import NamedTuple
from rankrun.output.rank_ranges import fold

MAX_FRAMES = 24
MAX_BYTES = 2048
_MAX_NAME = 80


class Frame(NamedTuple):
    function: str
    file: str
    """Shortened: ``torch/distributed/distributed_c10d.py``, ``train.py``."""
    line: int
    library: bool = False
    """Whether the file is installed code (site-packages, the standard library), not the user's."""

    def words(self) -> str:
        return f"{self.function} ({self.file}:{self.line})"


Digest = tuple[Frame, ...]
"""One rank's frames, innermost first; empty when its stack could not be read."""


class RankKey(NamedTuple):
    rank: int
    node_rank: int | None = None
    host: str | None = None


class Group(NamedTuple):
    ranks: tuple[RankKey, ...]
    """In rank order."""
    digest: Digest


# --- reading a stack -------------------------------------------------------------------------

_PY_SPY_THREAD = re.compile(r'^Thread \S+ \([^)]*\)(?:: "(?P<name>[^"]*)")?')
_PY_SPY_FRAME = re.compile(r"^\s+(?P<function>\S.*?) \((?P<file>.+):(?P<line>\d+)\)$")
_FAULT_THREAD = re.compile(r"^(?:Current thread|Thread) 0x[0-9a-f]+")
_FAULT_FRAME = re.compile(r'^\s+File "(?P<file>.+)", line (?P<line>\d+) in (?P<function>.+)$')
_LIBRARY = re.compile(r"/(?:site-packages|dist-packages|lib/python\d+\.\d+)/")


def digest(text: str) -> Digest:
    """The capped frames of the thread that matters in one rank's stack text."""
    threads = _threads(text)
    if not threads:
        return ()
    main = [frames for name, frames in threads if name == "MainThread"]
    main = main or [frames for _, frames in threads if "<module>" in (f.function for f in frames)]
    main = main or [frames for _, frames in threads if frames]
    return _capped(main[0]) if main else ()


def _threads(text: str) -> list[tuple[str | None, list[Frame]]]:
    threads: list[tuple[str | None, list[Frame]]] = []
    for line in text.splitlines():
        head = _PY_SPY_THREAD.match(line)
        if head is not None or _FAULT_THREAD.match(line):
            threads.append((head.group("name") if head else None, []))
            continue
        found = _PY_SPY_FRAME.match(line) or _FAULT_FRAME.match(line)
        if found is not None and threads:
            file, line_no = found.group("file"), int(found.group("line"))
            threads[-1][1].append(_frame(found.group("function"), file, line_no))
    return threads


def _frame(function: str, path: str, line: int) -> Frame:
    """py-spy's qualified names (``Trainer.step``, ``f.<locals>.wrapper``) become the code's
    own name, as faulthandler gives it, so that both read the same."""
    name = function.rsplit(".", 1)[-1] if not function.startswith("<") else function
    library = path.startswith("<")
    found = [*_LIBRARY.finditer(path)]
    if found:
        library = True
        path = "/".join(path[found[-1].end() :].split("/")[-3:])
    elif not library:
        path = path.rsplit("/", 1)[-1]
    return Frame(name[:_MAX_NAME], path[-_MAX_NAME:], line, library)


def _capped(frames: Sequence[Frame]) -> Digest:
    kept: list[Frame] = []
    size = 2
    for frame in frames[:MAX_FRAMES]:
        size += len(json.dumps(frame._asdict())) + 1
        if size > MAX_BYTES:
            break
        kept.append(frame)
    return tuple(kept)


def from_json(frames: Iterable[Mapping[str, object]]) -> Digest:
    """A digest read back from its frames' ``_asdict()``, as JSON carried them."""
    return tuple(Frame(**frame) for frame in frames)  # type: ignore[arg-type]


# --- grouping ----------------------------------------------------------------------------------


def group(digests: Mapping[RankKey, Digest]) -> list[Group]:
    """Ranks with equal digests together; smallest groups first, ties by lowest rank."""
    by_digest: dict[Digest, list[RankKey]] = {}
    for key, frames in digests.items():
        by_digest.setdefault(frames, []).append(key)
    groups = [Group(tuple(sorted(keys)), frames) for frames, keys in by_digest.items()]
    return sorted(groups, key=lambda g: (len(g.ranks), g.ranks[0].rank))


# --- words -------------------------------------------------------------------------------------

# Frames that say how a wait is done, not where the program is: left out of a verdict line.
_PLUMBING = {"threading.py", "selectors.py", "queue.py", "contextlib.py", "functools.py",
             "runpy.py", "c10d_logger.py", "socket.py"}  # fmt: skip


def verdict_lines(groups: Sequence[Group], *, max_groups: int = 6, frames: int = 2) -> list[str]:
    """One line per group, ``frames`` frames of interest each; past ``max_groups`` groups, one
    line says how many more."""
    lines = [_group_line(g, frames) for g in groups[:max_groups]]
    rest = groups[max_groups:]
    if rest:
        count = sum(len(g.ranks) for g in rest)
        lines.append(f"and {len(rest)} more group(s) of {count} rank(s)")
    return lines


def _group_line(g: Group, frames: int) -> str:
    where = " <- ".join(f.words() for f in interesting(g.digest)[:frames])
    return f"{_who(g.ranks)}: {where or 'no stack read'}"


def interesting(frames: Digest) -> list[Frame]:
    """The frames a person looks for, innermost first: the plumbing of waits left out, and of
    each run of library frames only the outermost, the call the user's code made."""
    kept = [f for f in frames if not _plumbing(f)]
    kept = [f for f in kept if not (f.library and f.function == "<module>")]
    if not any(not f.library for f in kept):
        return kept
    return [f for i, f in enumerate(kept) if not (f.library and i + 1 < len(kept)
                                                  and kept[i + 1].library)]  # fmt: skip


def _plumbing(frame: Frame) -> bool:
    return frame.file.startswith("<frozen ") or frame.file.rsplit("/", 1)[-1] in _PLUMBING


def _who(keys: Sequence[RankKey]) -> str:
    ranks = fold([k.rank for k in keys])
    nodes = {k.node_rank for k in keys}
    hosts = {k.host for k in keys}
    where = []
    if len(nodes) == 1 and None not in nodes:
        where.append(f"node {nodes.pop()}")
    if len(hosts) == 1 and None not in hosts:
        where.append(f"host {hosts.pop()}")
    suffix = f" ({', '.join(where)})" if where else ""
    return f"{'rank' if len(keys) == 1 else 'ranks'} {ranks}{suffix}"
