"""argparse, built from the flag tables: ``--help``, abbreviations, and the words for a mistake.

The launch path reads a plainly spelled command line without it (``command_line.parse``).
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence

from rankrun.base.errors import UsageError
from rankrun.cli.flags import GROUPS, LAUNCH_PROG, PROG, Flag, by_spelling, dest, spellings
from rankrun.plan.options import Options

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, NoReturn

    from rankrun.cli.flags import Read


def read(argv: Sequence[str], prog: str = PROG) -> Read:
    """What ``argv`` gives, as ``command_line.parse`` reads it; raises UsageError."""
    parser = build_parser(prog)
    namespace, unknown = parser.parse_known_args(argv)
    if unknown:
        parser.error(f"unrecognized arguments: {' '.join(unknown)}{_did_you_mean(unknown)}")
    given = vars(namespace)
    return given, given.pop("training_script"), given.pop("training_script_args")


def _did_you_mean(unknown: Sequence[str]) -> str:
    """The flag closest to the first unknown one, as argparse suggests a choice."""
    import difflib

    for arg in unknown:
        typo = arg.partition("=")[0]
        if not typo.startswith("--"):
            continue
        best, guess = 0.0, None
        for name in by_spelling():
            # An abbreviation is a flag too: --nprc is a slip of --nproc.
            for candidate, cutoff in ((name, 0.6), (name[: len(typo) + 1], 0.75)):
                ratio = difflib.SequenceMatcher(None, typo, candidate).ratio()
                if ratio >= cutoff and ratio > best:
                    best, guess = ratio, name
        if guess is not None:
            return f"; did you mean {guess}?"
    return ""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        if message.startswith("the following arguments are required"):
            message = f"no training script: give one, as {self.prog} [FLAGS] train.py [ARGS]"
        raise UsageError(f"{message} (see {self.prog} --help)")

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


def build_parser(prog: str = PROG) -> argparse.ArgumentParser:
    from rankrun.base.version import VERSION

    description = "Launch a gang of training ranks that live and die together."
    if prog == LAUNCH_PROG:
        description += (
            " This is torch.distributed.launch's command line: --local-rank-arg is on, so each "
            "rank gets --local_rank=N before its own arguments, unless --use-env is given."
        )
    p = _Parser(
        prog=prog,
        description=description,
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
