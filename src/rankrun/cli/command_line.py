"""The command line read into a script, its arguments and ``Options``.

A command line spelled plainly (whole flag names, a value after each, then the script) is
read straight from the flag tables. Anything else (help, an abbreviation, a mistake) goes to
argparse, built from the same tables, which reads it the same way and words the error. Every
flag may also come from ``PET_<FLAG>`` in the environment, as torchrun reads it (a Kubernetes
PyTorchJob configures torchrun that way), and from Slurm's step; a flag on the command line
wins.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from rankrun.base.errors import UsageError
from rankrun.base.values import NamedTuple
from rankrun.cli.flags import GROUPS, PROG, Flag, by_spelling, dest, spellings
from rankrun.plan.options import Options

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from rankrun.cli.flags import Read

_DEFAULTS = Options._field_defaults


class CommandLine(NamedTuple):
    script: str
    args: list[str]
    options: Options
    notes: tuple[str, ...] = ()
    """What the command took from its surroundings (Slurm), for the user to read."""
    from_environment: tuple[tuple[Flag, str], ...] = ()
    """Each flag a ``PET_*`` variable gave, with the variable as ``PET_NNODES='0'``."""


def parse(argv: Sequence[str], env: Mapping[str, str], prog: str = PROG) -> CommandLine:
    """The command line as a script, its arguments and every setting; raises UsageError.

    A setting comes from its flag, else from ``PET_<FLAG>``, else from Slurm's step. ``prog``
    names the command in its help and its mistakes.
    """
    argv = list(argv)
    plain = _read_plain(argv)
    if plain is None:
        from rankrun.cli.flag_parser import read

        plain = read(argv, prog)
    given, script, args = plain
    # A flag without effect still reads its variable: a value that does not parse is a mistake.
    from_environment = tuple(
        found
        for _, flags in GROUPS
        for flag in flags
        if dest(flag) not in given and (found := _from_environment(flag, env, given))
    )
    notes: tuple[str, ...] = ()
    if "SLURM_JOB_ID" in env:
        from rankrun.cli.slurm import from_slurm

        notes = from_slurm(env, given, argv)
    options = Options(**{n: v for n, v in given.items() if n in _DEFAULTS})
    return CommandLine(script, args, options, notes, from_environment)


def blame_environment(message: str, command: CommandLine) -> str:
    """A mistake about a flag that a ``PET_*`` variable gave, worded with the variable first."""
    import re

    for flag, variable in command.from_environment:
        names = "|".join(re.escape(name) for name in spellings(flag))
        if re.search(rf"(?<![\w-])(?:{names})(?![\w-])", message):
            return f"{variable} in the environment: {message}"
    return message


def _read_plain(argv: list[str]) -> Read | None:
    """A command line spelled plainly, read from the tables; None for argparse to read."""
    table = by_spelling()
    given: dict[str, Any] = {}
    i = 0
    while i < len(argv):
        arg = argv[i]
        if not arg.startswith("-"):
            rest = argv[i + 1 :]
            # argparse drops a -- right after the script, as torchrun's does: let it.
            return None if rest[:1] == ["--"] else (given, arg, rest)
        name, eq, value = arg.partition("=")
        flag = table.get(name)
        if flag is None or (eq and (flag.switch is not None or not name.startswith("--"))):
            return None
        if eq and value == "--":  # argparse's own reading of this is odd; keep it
            return None
        if flag.switch is not None:
            given[dest(flag)] = flag.switch
        else:
            if not eq:
                i += 1
                if i == len(argv) or argv[i].startswith("-"):
                    return None
                value = argv[i]
            if flag.choices and value not in flag.choices:
                return None
            try:
                given[dest(flag)] = value if flag.type is None else flag.type(value)
            except (ValueError, UsageError):
                return None
        i += 1
    return None


def _from_environment(
    flag: Flag, env: Mapping[str, str], given: dict[str, Any]
) -> tuple[Flag, str] | None:
    for spelled in flag.names:
        name = "PET_" + spelled.lstrip("-").upper().replace("-", "_")
        if name in env:
            given[dest(flag)] = _convert(flag, name, env[name])
            return flag, f"{name}={env[name]!r}"
    return None


def _convert(flag: Flag, name: str, value: str) -> object:
    if flag.choices and value not in flag.choices:
        choices = ", ".join(flag.choices)
        raise UsageError(f"{name}={value!r} in the environment: give one of {choices}")
    try:
        if flag.switch is not None:  # torchrun reads 1 or 0
            return bool(int(value)) == flag.switch
        return flag.type(value) if flag.type is not None else value
    except (ValueError, UsageError) as e:
        reason = e if isinstance(e, UsageError) else "not a valid value"
        if flag.switch is not None:
            reason = "give 1 or 0"
        elif flag.type in (int, float):
            reason = "give a number"
        raise UsageError(f"{name}={value!r} in the environment: {reason}") from None
