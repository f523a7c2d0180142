"""The command line: the seed launcher's flags and torchrun's, parsed into ``Options``.

Flags are spelled with dashes, as torchrun spells them; the seed's underscores are accepted,
and so is any unambiguous abbreviation. Every flag may also come from ``PET_<FLAG>`` in the
environment, as torchrun reads it (a Kubernetes PyTorchJob configures torchrun that way);
a flag on the command line wins.
"""

from __future__ import annotations

import argparse
import functools
import os
from collections.abc import Mapping, Sequence

from rankrun.errors import UsageError
from rankrun.options import Options
from rankrun.values import NamedTuple

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import NoReturn

_DEFAULTS = Options._field_defaults
_NPROC_WORDS = ("auto", "cpu", "gpu", "xpu")
_IGNORED = "accepted for torchrun and ignored: "


class Command(NamedTuple):
    script: str
    args: list[str]
    options: Options
    notes: tuple[str, ...] = ()
    """What the command took from its surroundings (Slurm), for the user to read."""


def parse(argv: Sequence[str] | None, env: Mapping[str, str]) -> Command:
    """The command line as a script, its arguments and every setting; raises UsageError.

    A setting comes from its flag, else from ``PET_<FLAG>``, else from Slurm's step.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    given = vars(args)
    for action in parser._actions:
        if action.dest in _DEFAULTS and action.dest not in given:
            _from_environment(action, env, given)
    notes: tuple[str, ...] = ()
    if "SLURM_JOB_ID" in env:
        from rankrun.slurm import from_slurm

        notes = from_slurm(env, given, list(argv or ()))
    options = Options(**{n: v for n, v in given.items() if n in _DEFAULTS})
    return Command(args.training_script, args.training_script_args, options, notes)


def _from_environment(
    action: argparse.Action, env: Mapping[str, str], given: dict[str, object]
) -> None:
    for flag in action.option_strings:
        name = "PET_" + flag.lstrip("-").upper().replace("-", "_")
        if name in env:
            given[action.dest] = _convert(action, name, env[name])
            return


def _convert(action: argparse.Action, name: str, value: str) -> object:
    try:
        if action.nargs == 0:  # a switch: torchrun reads 1 or 0
            return bool(int(value)) == bool(action.const)
        return action.type(value) if callable(action.type) else value
    except (ValueError, argparse.ArgumentTypeError, UsageError) as e:
        reason = e if not isinstance(e, ValueError) else "not a valid value"
        if action.nargs == 0:
            reason = "give 1 or 0"
        elif action.type in (int, float):
            reason = "give a number"
        raise UsageError(f"{name}={value!r} in the environment: {reason}") from None


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see rankrun --help)")


class _Formatter(argparse.HelpFormatter):
    """argparse's formatter, sized without shutil.

    argparse makes a formatter for every flag it defines, and sizes each through shutil,
    whose import cost 3 ms of every launch.
    """

    def __init__(self, prog: str) -> None:
        super().__init__(prog, width=_columns() - 2)


@functools.cache
def _columns() -> int:
    try:
        return int(os.environ["COLUMNS"])
    except (KeyError, ValueError):
        pass
    try:
        return os.get_terminal_size(1).columns
    except OSError:
        return 80


def _add(group: argparse._ActionsContainer, *names: str, **kw: object) -> None:
    """Add a flag under its dashed names and, after them, the same names with underscores."""
    underscored = [n.replace("-", "_").replace("__", "--", 1) for n in names if "-" in n[2:]]
    group.add_argument(*names, *underscored, **kw)  # type: ignore[arg-type]


def build_parser() -> argparse.ArgumentParser:
    from rankrun import __version__

    p = _Parser(
        prog="rankrun",
        description="Launch a gang of training ranks that live and die together.",
        epilog="Every flag may also be set as PET_<FLAG>, as torchrun reads it; "
        "the command line wins. "
        "rankrun stacks [RUN_ID] prints the Python stack of every rank of a running job, and "
        "rankrun status [RUN_ID] one line per rank; to run a script named stacks or status, "
        "write ./stacks or ./status.",
        formatter_class=_Formatter,
        argument_default=argparse.SUPPRESS,
    )
    p.add_argument("--version", action="version", version=f"rankrun {__version__}")
    _add_job_flags(p)
    _add_rendezvous_flags(p.add_argument_group("nodes"))
    _add_script_flags(p.add_argument_group("how each rank runs"))
    _add_output_flags(p.add_argument_group("output"))
    _add_ignored_flags(p.add_argument_group("accepted for torchrun, without effect"))
    p.add_argument("training_script", help="the script or program each rank runs")
    p.add_argument(
        "training_script_args", nargs=argparse.REMAINDER, default=[], help="its arguments"
    )
    _show_defaults(p)
    return p


def _add_job_flags(p: argparse._ActionsContainer) -> None:
    _add(
        p,
        "--nproc-per-node",
        type=_nproc,
        metavar="N",
        help="ranks on this node: a number, or auto, cpu, gpu (the GPUs this node has)",
    )
    _add(p, "--nnodes", type=_nnodes, help="number of nodes (N, or torchrun's N:N)")
    _add(p, "--node-rank", type=int, help="this node's rank, 0 to nnodes-1")
    _add(p, "--master-addr", help="node 0's host")
    _add(p, "--master-port", type=int, help="node 0's port; 0 picks a free one (one node only)")
    _add(p, "--standalone", action="store_true", help="one node, on a free port")
    _add(p, "--max-restarts", type=int, help="restart the whole job up to N times after a failure")
    _add(
        p,
        "--shutdown-timeout",
        type=float,
        metavar="SECONDS",
        help="seconds between SIGTERM and SIGKILL when tearing down",
    )
    _add(p, "--run-id", "--rdzv-id", help="the job's id: TORCHELASTIC_RUN_ID, log directory")
    _add(p, "--role", help="ROLE_NAME of the ranks")
    _add(
        p,
        "--dry-run",
        action="store_true",
        help="print each rank's argv and the environment rankrun sets; start nothing",
    )


def _add_rendezvous_flags(g: argparse._ActionsContainer) -> None:
    _add(
        g,
        "--rdzv-backend",
        choices=("static", "c10d"),
        help="c10d or static: either way node 0's rankrun hosts the job's store",
    )
    _add(
        g,
        "--rdzv-endpoint",
        metavar="HOST[:PORT]",
        help="where node 0 listens; overrides --master-addr and --master-port",
    )
    _add(g, "--rdzv-conf", metavar="KEY=VALUE,...", help="torchrun's; rankrun reads join_timeout")
    _add(
        g,
        "--rdzv-timeout",
        dest="join_timeout",
        type=float,
        metavar="SECONDS",
        help="how long a node waits for the others to join",
    )
    _add(
        g,
        "--node-timeout",
        type=float,
        metavar="SECONDS",
        help="a node silent this long is lost, and ends the job",
    )
    _add(g, "--local-addr", help="torchrun's; rankrun dials node 0 only, needs none")


def _add_script_flags(g: argparse._ActionsContainer) -> None:
    _add(g, "--no-python", action="store_true", help="run the command as given")
    _add(g, "-m", "--module", action="store_true", help="run a module: python -u -m")
    _add(g, "--cpu-bind", choices=("none", "cores", "numa"),
         help="bind each rank, and all it starts, to an equal share of whole cores (cores) "
         "or to its GPU's NUMA node (numa)")  # fmt: skip
    _add(g, "--numa-binding", choices=("node", "socket", "exclusive", "core-complex"),
         help="torchrun's spelling: node and socket bind as numa, the others as cores")  # fmt: skip
    _add(
        g,
        "--local-rank-arg",
        action="store_true",
        help="also pass --local_rank=N to each rank, as torch.distributed.launch did",
    )
    _add(g, "--use-env", action="store_true",
         help="the old launcher's: LOCAL_RANK only in the environment")  # fmt: skip


def _add_output_flags(g: argparse._ActionsContainer) -> None:
    _add(
        g,
        "--no-prefix",
        dest="prefix",
        action="store_false",
        help="pass the ranks' output through untouched, without [rankN]: labels",
    )
    _add(
        g,
        "--log-line-prefix-template",
        metavar="TEMPLATE",
        help="the label, from ${role_name}, ${rank} and ${local_rank} "
        "(also TORCHELASTIC_LOG_LINE_PREFIX_TEMPLATE)",
    )
    _add(
        g,
        "--local-ranks-filter",
        metavar="RANKS",
        help="show only these local ranks on the console, such as 0,3",
    )
    _add(g, "--timestamps", action="store_true", help="add wall-clock time to each line")
    _add(
        g,
        "--log-dir",
        metavar="DIR",
        help="also write each rank's stdout and stderr to DIR/<run-id>/attempt_<k>/rank_<r>/",
    )
    _add(
        g,
        "-r",
        "--redirects",
        metavar="SPEC",
        help="send streams to the log files only: 1 stdout, 2 stderr, 3 both, or 0:1,1:2",
    )
    _add(
        g,
        "-t",
        "--tee",
        metavar="SPEC",
        help="send streams to the log files and the console, with -r's syntax",
    )
    _add(
        g,
        "--stall-timeout",
        type=float,
        metavar="SECONDS",
        help="no line from any rank for this long: show every rank's stack (py-spy)",
    )
    _add(
        g,
        "--on-stall",
        choices=("dump", "stop"),
        help="after showing the stacks of a stall, go on (dump) or end the job (stop)",
    )
    _add(g, "--summary-json", metavar="PATH",
         help="write each rank's outcome and the root cause as JSON")  # fmt: skip


def _add_ignored_flags(g: argparse._ActionsContainer) -> None:
    _add(g, "--monitor-interval", type=float, help=_IGNORED + "rankrun reacts to events")
    _add(
        g,
        "--start-method",
        choices=("spawn", "fork", "forkserver"),
        help=_IGNORED + "each rank is a fresh process",
    )
    _add(g, "--run-path", action="store_true", help=_IGNORED + "a .py script runs as python -u")
    for flag in (
        "--event-log-handler",
        "--duplicate-stdout-filters",
        "--duplicate-stderr-filters",
        "--logs-specs",
        "--signals-to-handle",
    ):
        _add(g, flag, help=_IGNORED[:-2])
    _add(g, "--virtual-local-rank", action="store_true", help=_IGNORED[:-2])  # fmt: skip


def _show_defaults(parser: argparse.ArgumentParser) -> None:
    """Append each setting's default, read from ``Options``, to its help."""
    for action in parser._actions:
        value = _DEFAULTS.get(action.dest)
        if action.help and value not in (None, "") and not isinstance(value, bool):
            action.help += f" (default: {value})"


def _nnodes(value: str) -> int:
    low, _, high = value.partition(":")
    try:
        n = int(low)
        if high and int(high) != n:
            raise UsageError(f"--nnodes {value}: elastic ranges are not supported; give one number")
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid --nnodes {value!r}: give a number") from None
    return n


def _nproc(value: str) -> int | str:
    if value in _NPROC_WORDS:
        return value
    try:
        return int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"invalid --nproc-per-node {value!r}: give a number, or auto, cpu, gpu or xpu"
        ) from None
