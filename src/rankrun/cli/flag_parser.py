"""argparse, built from the flag tables: ``--help``, abbreviations, and the words for a mistake.

The launch path reads a plainly spelled command line without it (``command_line.parse``).
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence

from rankrun.base.errors import UsageError
from rankrun.cli.flags import GROUPS, Flag, dest, spellings
from rankrun.plan.options import Options

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, NoReturn

    from rankrun.cli.flags import Read


def read(argv: Sequence[str]) -> Read:
    """What ``argv`` gives, as ``command_line.parse`` reads it; raises UsageError."""
    given = vars(build_parser().parse_args(argv))
    return given, given.pop("training_script"), given.pop("training_script_args")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see rankrun --help)")

    def _get_option_tuples(self, option_string: str) -> list[tuple[Any, ...]]:
        """An abbreviation of one flag's two spellings (--nproc) names that flag."""
        by_flag: dict[int, tuple[Any, ...]] = {}
        for match in super()._get_option_tuples(option_string):
            by_flag.setdefault(id(match[0]), match)
        return list(by_flag.values())


class _Formatter(argparse.HelpFormatter):
    """argparse's formatter, sized without importing shutil, which the launch path does without."""

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
    from rankrun.base.version import VERSION

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
    p.add_argument("--version", action="version", version=f"rankrun {VERSION}")
    for title, flags in GROUPS:
        group = p if title is None else p.add_argument_group(title)
        for flag in flags:
            _add(group, flag)
    p.add_argument("training_script", help="the script or program each rank runs")
    p.add_argument(
        "training_script_args", nargs=argparse.REMAINDER, default=[], help="its arguments"
    )
    return p


def _add(group: argparse._ActionsContainer, flag: Flag) -> None:
    kw: dict[str, object] = {"dest": dest(flag), "help": _with_default(flag)}
    if flag.switch is not None:
        kw["action"] = "store_true" if flag.switch else "store_false"
    else:
        kw.update(type=flag.type, metavar=flag.metavar)
        if flag.choices:
            kw["choices"] = flag.choices
    group.add_argument(*spellings(flag), **kw)  # type: ignore[arg-type]


def _with_default(flag: Flag) -> str:
    """The help, and the default as ``Options`` spells it."""
    value = Options._field_defaults.get(dest(flag))
    if value in (None, "") or isinstance(value, bool):
        return flag.help
    return f"{flag.help} (default: {value})"
