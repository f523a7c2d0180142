"""Every flag of the command, declared once, as torchrun and ``torch.distributed.launch`` spell it.

Flags are spelled with dashes, as torchrun spells them; the underscores of
``torch.distributed.launch`` are accepted, and so is any unambiguous abbreviation. The plain
reader (``command_line``) and argparse (``flag_parser``) are both built from these tables.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

from rankrun.base.errors import UsageError
from rankrun.base.values import NamedTuple

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    Read = tuple[dict[str, Any], str, list[str]]
    """What a command line gives: its settings by ``Options`` field, the script, its arguments."""

PROG = "rankrun"
LAUNCH_PROG = "python -m rankrun.launch"
"""torch.distributed.launch's command line: ``rankrun --local-rank-arg``."""
_NPROC_WORDS = ("auto", "cpu", "gpu")
_IGNORED = "accepted for torchrun and ignored: "


class Flag(NamedTuple):
    names: tuple[str, ...]
    """Dashed, as torchrun spells them; each is also accepted with underscores."""
    help: str
    type: Callable[[str], object] | None = None
    choices: tuple[str, ...] = ()
    metavar: str | None = None
    dest: str = ""
    """The ``Options`` field; by default the first long name's."""
    switch: bool | None = None
    """What a switch stores when given; None for a flag that takes a value."""


def _nnodes(value: str) -> int:
    low, _, high = value.partition(":")
    try:
        n, most = int(low), int(high or low)
    except ValueError:
        raise UsageError(f"invalid --nnodes {value!r}: give a number") from None
    if most != n:
        raise UsageError(f"--nnodes {value}: elastic ranges are not supported; give one number")
    return n


def _nproc(value: str) -> int | str:
    if value in _NPROC_WORDS:
        return value
    if value == "xpu":  # torchrun's; counting Intel's devices would take importing torch
        raise UsageError("--nproc-per-node xpu: rankrun does not count XPUs; give their number")
    try:
        return int(value)
    except ValueError:
        raise UsageError(
            f"invalid --nproc-per-node {value!r}: give a number, or auto, cpu or gpu"
        ) from None


_JOB = (
    Flag(
        ("--nproc-per-node",),
        "ranks on this node: a number, or auto, cpu, gpu (the GPUs this node has)",
        type=_nproc,
        metavar="N",
    ),
    Flag(("--nnodes",), "number of nodes (N, or torchrun's N:N)", type=_nnodes),
    Flag(
        ("--node-rank",),
        "this node's rank, 0 to nnodes-1; with c10d, none: handed out as the nodes join",
        type=int,
    ),
    Flag(("--master-addr",), "node 0's host"),
    Flag(
        ("--master-port",),
        "node 0's port (default: MASTER_PORT, else a free one on one "
        "node and 29500 across nodes); 0 picks a free one (one node only)",
        type=int,
    ),
    Flag(("--standalone",), "one node, on a free port", switch=True),
    Flag(("--max-restarts",), "restart the whole job up to N times after a failure", type=int),
    Flag(
        ("--shutdown-timeout",),
        "seconds between SIGTERM and SIGKILL when tearing down",
        type=float,
        metavar="SECONDS",
    ),
    Flag(("--run-id", "--rdzv-id"), "the job's id: TORCHELASTIC_RUN_ID, log directory"),
    Flag(("--role",), "ROLE_NAME of the ranks"),
    Flag(
        ("--dry-run",),
        "print each rank's argv and the environment rankrun sets; start nothing",
        switch=True,
    ),
)
_NODES = (
    Flag(
        ("--rdzv-backend",),
        "static (every node needs --node-rank) or c10d (node ranks from the join where none "
        "is given); either way node 0's rankrun hosts the job's store",
        choices=("static", "c10d"),
    ),
    Flag(
        ("--rdzv-endpoint",),
        "where node 0 listens; overrides --master-addr and --master-port",
        metavar="HOST[:PORT]",
    ),
    Flag(("--rdzv-conf",), "torchrun's; rankrun reads join_timeout", metavar="KEY=VALUE,..."),
    Flag(
        ("--rdzv-timeout",),
        "how long a node waits for the others to join",
        type=float,
        metavar="SECONDS",
        dest="join_timeout",
    ),
    Flag(
        ("--node-timeout",),
        "a node silent this long is lost, and ends the job",
        type=float,
        metavar="SECONDS",
    ),
    Flag(("--local-addr",), "torchrun's; rankrun dials node 0 only, needs none"),
)
_SCRIPT = (
    Flag(("--no-python",), "run the command as given", switch=True),
    Flag(("-m", "--module"), "run a module: python -u -m", switch=True),
    Flag(
        ("--cpu-bind",),
        "bind each rank, and all it starts, to an equal share of whole "
        "cores (cores) or to its GPU's NUMA node (numa)",
        choices=("none", "cores", "numa"),
    ),
    Flag(
        ("--numa-binding",),
        "torchrun's spelling: node and socket bind as numa, the others as cores",
        choices=("node", "socket", "exclusive", "core-complex"),
    ),
    Flag(
        ("--local-rank-arg",),
        "also pass --local_rank=N to each rank, as torch.distributed.launch did",
        switch=True,
    ),
    Flag(("--use-env",), "the old launcher's: LOCAL_RANK only in the environment", switch=True),
)
_OUTPUT = (
    Flag(
        ("--no-prefix",),
        "pass the ranks' output through untouched, without [rankN]: labels",
        dest="prefix",
        switch=False,
    ),
    Flag(
        ("--log-line-prefix-template",),
        "the label, from ${role_name}, ${rank} and "
        "${local_rank} (also TORCHELASTIC_LOG_LINE_PREFIX_TEMPLATE)",
        metavar="TEMPLATE",
    ),
    Flag(
        ("--local-ranks-filter",),
        "show only these local ranks on the console, such as 0,3",
        metavar="RANKS",
    ),
    Flag(("--timestamps",), "add wall-clock time to each line", switch=True),
    Flag(
        ("-q", "--quiet"),
        "print none of rankrun's own lines when all goes well (its notes, the closing "
        "'N ranks exited 0' line); what goes wrong is still said",
        switch=True,
    ),
    Flag(
        ("--log-dir",),
        "also write each rank's stdout and stderr to DIR/<run-id>/attempt_<k>/rank_<r>/",
        metavar="DIR",
    ),
    Flag(
        ("-r", "--redirects"),
        "send streams to the log files only: 1 stdout, 2 stderr, 3 both, or 0:1,1:2",
        metavar="SPEC",
    ),
    Flag(
        ("-t", "--tee"),
        "send streams to the log files and the console, with -r's syntax",
        metavar="SPEC",
    ),
    Flag(
        ("--stall-timeout",),
        "no line from any rank for this long: show every rank's stack (py-spy)",
        type=float,
        metavar="SECONDS",
    ),
    Flag(
        ("--on-stall",),
        "after showing the stacks of a stall, go on (dump) or end the job (stop)",
        choices=("dump", "stop"),
    ),
    Flag(
        ("--summary-json",), "write each rank's outcome and the root cause as JSON", metavar="PATH"
    ),
)
_WITHOUT_EFFECT = (
    Flag(("--monitor-interval",), _IGNORED + "rankrun reacts to events", type=float),
    Flag(
        ("--start-method",),
        _IGNORED + "each rank is a fresh process",
        choices=("spawn", "fork", "forkserver"),
    ),
    Flag(("--run-path",), _IGNORED + "a .py script runs as python -u", switch=True),
    *(
        Flag((name,), _IGNORED[:-2])
        for name in (
            "--event-log-handler",
            "--duplicate-stdout-filters",
            "--duplicate-stderr-filters",
            "--logs-specs",
            "--signals-to-handle",
        )
    ),
    Flag(("--virtual-local-rank",), _IGNORED[:-2], switch=True),
)
GROUPS: tuple[tuple[str | None, tuple[Flag, ...]], ...] = (
    (None, _JOB),
    ("nodes", _NODES),
    ("how each rank runs", _SCRIPT),
    ("output", _OUTPUT),
    ("accepted for torchrun, without effect", _WITHOUT_EFFECT),
)


def dest(flag: Flag) -> str:
    """The setting a flag fills, named as argparse would name it."""
    longs = [n for n in flag.names if n.startswith("--")]
    return flag.dest or longs[0][2:].replace("-", "_")


def spellings(flag: Flag) -> list[str]:
    """Its names, then the same names with underscores (``--nproc_per_node``)."""
    names = list(flag.names)
    return names + [n.replace("-", "_").replace("__", "--", 1) for n in names if "-" in n[2:]]


@functools.cache
def by_spelling() -> dict[str, Flag]:
    """Every spelling of every flag, and the flag it names."""
    return {name: flag for _, flags in GROUPS for flag in flags for name in spellings(flag)}
