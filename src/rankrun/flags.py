"""The command line: the seed launcher's flags and torchrun's, parsed into ``Options``."""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence

from rankrun.errors import UsageError
from rankrun.options import Options
from rankrun.values import NamedTuple

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import NoReturn

_DEFAULTS = Options._field_defaults


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


def _columns() -> int:
    try:
        return int(os.environ["COLUMNS"])
    except (KeyError, ValueError):
        pass
    try:
        return os.get_terminal_size(1).columns
    except OSError:
        return 80


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="rankrun",
        description="Launch a gang of training ranks that live and die together.",
        allow_abbrev=False,
        formatter_class=_Formatter,
        argument_default=argparse.SUPPRESS,
    )
    p.add_argument("--nnodes", type=_nnodes, help="number of nodes (N or N:N)")
    p.add_argument("--node_rank", "--node-rank", type=int, help="this node's rank")
    p.add_argument("--nproc_per_node", "--nproc-per-node", type=int, help="ranks on this node")
    p.add_argument("--master_addr", "--master-addr", help="rank 0's host")
    p.add_argument(
        "--master_port",
        "--master-port",
        type=int,
        help="rank 0's port; 0 picks a free one (one node only)",
    )
    p.add_argument("--standalone", action="store_true", help="one node on a free port")
    p.add_argument(
        "--max_restarts",
        "--max-restarts",
        type=int,
        help="restart the whole gang up to N times after a failure",
    )
    p.add_argument(
        "--shutdown_timeout",
        "--shutdown-timeout",
        type=float,
        help="seconds between SIGTERM and SIGKILL when tearing down",
    )
    p.add_argument(
        "--monitor_interval",
        "--monitor-interval",
        type=float,
        help="accepted for torchrun compatibility and ignored: rankrun reacts to events",
    )
    p.add_argument("--no_python", "--no-python", action="store_true", help="run as given")
    p.add_argument("-m", "--module", action="store_true", help="run a module: python -u -m")
    p.add_argument("--run_id", "--run-id", "--rdzv_id", "--rdzv-id", help="TORCHELASTIC_RUN_ID")
    p.add_argument("--role", help="ROLE_NAME of the ranks")
    p.add_argument(
        "--use_env",
        "--use-env",
        action="store_true",
        help="accepted for torch.distributed.launch compatibility: the env is always set",
    )
    out = p.add_argument_group("output")
    out.add_argument(
        "--no_prefix",
        "--no-prefix",
        dest="prefix",
        action="store_false",
        help="pass the ranks' output through untouched, without [rankN]: labels",
    )
    out.add_argument(
        "--local_ranks_filter",
        "--local-ranks-filter",
        metavar="RANKS",
        help="show only these local ranks on the console, such as 0,3",
    )
    out.add_argument("--timestamps", action="store_true", help="add wall-clock time to lines")
    out.add_argument(
        "--log_dir",
        "--log-dir",
        metavar="DIR",
        help="also write each rank's stdout and stderr to DIR/<run-id>/attempt_<k>/rank_<r>/",
    )
    out.add_argument(
        "-r",
        "--redirects",
        metavar="SPEC",
        help="send streams to the log files only: 1 stdout, 2 stderr, 3 both, or 0:1,1:2",
    )
    out.add_argument(
        "-t",
        "--tee",
        metavar="SPEC",
        help="send streams to the log files and the console, with -r's syntax",
    )
    out.add_argument(
        "--summary_json",
        "--summary-json",
        metavar="PATH",
        help="write each rank's outcome and the root cause as JSON",
    )
    p.add_argument("training_script", help="the script or program each rank runs")
    p.add_argument(
        "training_script_args", nargs=argparse.REMAINDER, default=[], help="its arguments"
    )
    _show_defaults(p)
    return p


def _show_defaults(parser: argparse.ArgumentParser) -> None:
    """Append each setting's default, read from ``Options``, to its help."""
    for action in parser._actions:
        value = _DEFAULTS.get(action.dest)
        if action.help and value is not None and not isinstance(value, bool):
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


class Command(NamedTuple):
    script: str
    args: list[str]
    options: Options


def parse(argv: Sequence[str] | None) -> Command:
    """The command line as a script, its arguments and every setting; raises UsageError."""
    args = build_parser().parse_args(argv)
    options = Options(**{n: v for n, v in vars(args).items() if n in _DEFAULTS})
    return Command(args.training_script, args.training_script_args, options)
