"""The ``rankrun`` command: signals first, then the command line, then ``launch()``.

``rankrun stacks`` and ``rankrun status`` look into a running job instead: only when the
first argument is exactly one of those words (a training script so named runs as ./stacks).

Every user mistake becomes one line and exit code 2. A terminating signal is handled from
the first instruction: before anything is spawned it ends the command with 128+N and one
line, never a traceback.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Sequence

from rankrun.run.watch import (
    TERMINATING,
    Interrupted,
    forget_interrupt,
    interrupt,
    raise_unraised,
)

TYPE_CHECKING = False
if TYPE_CHECKING:
    from rankrun.inspect.registry import RunEntry
    from rankrun.plan.options import Options


def main(argv: Sequence[str] | None = None, *, prog: str = "rankrun") -> int:
    """The command; ``prog`` names it in its help (``python -m rankrun.launch``)."""
    try:
        for signum in TERMINATING:  # a signal may land between two of these
            signal.signal(signum, interrupt)
        sys.unraisablehook = _unraisable
        _open_stdio()
        code = _run(argv, prog)
        raise_unraised()  # one that no watch took: it still ends the command
    except Interrupted as e:
        forget_interrupt()
        print(f"rankrun: stopped by {signal.Signals(e.signum).name}", file=sys.stderr)
        code = 128 + e.signum
    if argv is None:
        # The command's work is done. Finalizing the interpreter would cost 5 ms of every
        # launch, and 0.35 s of a node agent's exit, once torch is loaded; and a store call
        # still in torch's C++ on a daemon thread would abort the process as it finalizes.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code


def _unraisable(unraisable: sys.UnraisableHookArgs) -> None:
    """Python's words for an exception it could not raise, except for an Interrupted: the
    signal it stands for is kept, and ends the command all the same (``raise_unraised``)."""
    if not isinstance(unraisable.exc_value, Interrupted):
        sys.__unraisablehook__(unraisable)


def _open_stdio() -> None:
    """Put /dev/null on a closed fd 0, 1 or 2 (``rankrun ... >&-``), as the README promises.

    The ranks inherit it, so no pipe or log file lands on their fd, and ``sys`` gets a stream
    in place of the None Python leaves there.
    """
    for fd, name in ((0, "stdin"), (1, "stdout"), (2, "stderr")):
        try:
            os.fstat(fd)
        except OSError:
            os.open(os.devnull, os.O_RDWR)  # the lowest free fd: this one
            os.set_inheritable(fd, True)
            setattr(sys, name, open(fd, "r" if fd == 0 else "w", closefd=False))  # noqa: SIM115


def _run(argv: Sequence[str] | None, prog: str) -> int:
    from rankrun.base.errors import RankrunError

    args = sys.argv[1:] if argv is None else list(argv)
    try:
        if args and args[0] in ("stacks", "status"):
            from rankrun.inspect.inquiry import main as inquire

            return inquire(args, _whole_job)
        return _launch(args, prog)
    except RankrunError as e:
        print(f"rankrun: error: {e}", file=sys.stderr)
        return 2


def _whole_job(command: str, run: RunEntry, native: bool, wait: float) -> int:
    """``stacks`` or ``status`` on node 0 of a multi-node job: torch's store, imported here."""
    from rankrun.job.inquiry import whole_job

    return whole_job(command, run, native, wait)


def _launch(args: Sequence[str], prog: str) -> int:
    from rankrun.base.errors import UsageError
    from rankrun.cli.command_line import blame_environment, parse
    from rankrun.job import launcher

    command = parse(args, os.environ, prog)
    for note in () if command.options.quiet else command.notes:
        print(f"rankrun: {note}", file=sys.stderr)
    try:
        if command.options.dry_run:
            return _dry_run(command.script, command.args, command.options)
        return launcher.launch(command.script, command.args, command.options).exit_code
    except UsageError as e:
        raise UsageError(blame_environment(str(e), command)) from None


def _dry_run(script: str, args: Sequence[str], options: Options) -> int:
    """Print each rank's argv and environment, as a real run would build them; start none."""
    from rankrun.inspect.dry_run import dry_run_lines
    from rankrun.plan.plan import build_plan

    for line in dry_run_lines(build_plan(script, args, options)):
        print(line)
    return 0
