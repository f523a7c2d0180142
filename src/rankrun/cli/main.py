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

from rankrun.run.watch import TERMINATING, Interrupted, interrupt

TYPE_CHECKING = False
if TYPE_CHECKING:
    from rankrun.plan.options import Options


def main(argv: Sequence[str] | None = None) -> int:
    for signum in TERMINATING:
        signal.signal(signum, interrupt)
    _open_stdio()
    try:
        code = _run(argv)
    except Interrupted as e:
        print(f"rankrun: stopped by {signal.Signals(e.signum).name}", file=sys.stderr)
        return 128 + e.signum
    if argv is None:
        # The command's work is done. Finalizing the interpreter would cost 5 ms of every
        # launch, and 0.35 s of a node agent's exit, once torch is loaded.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code


def _open_stdio() -> None:
    """Put /dev/null on a closed fd 0, 1 or 2 (``rankrun ... >&-``), so no pipe lands there."""
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
        except OSError:
            os.open(os.devnull, os.O_RDWR)


def _run(argv: Sequence[str] | None) -> int:
    from rankrun.base.errors import UsageError

    args = sys.argv[1:] if argv is None else list(argv)
    try:
        if args and args[0] in ("stacks", "status"):
            from rankrun.inspect.inquiry import main as inquire

            return inquire(args)
        return _launch(args)
    except UsageError as e:
        print(f"rankrun: error: {e}", file=sys.stderr)
        return 2


def _launch(args: Sequence[str]) -> int:
    from rankrun.cli.command_line import parse
    from rankrun.job import launcher

    command = parse(args, os.environ)
    for note in () if command.options.quiet else command.notes:
        print(f"rankrun: {note}", file=sys.stderr)
    if command.options.dry_run:
        return _dry_run(command.script, command.args, command.options)
    return launcher.launch(command.script, command.args, command.options).exit_code


def _dry_run(script: str, args: Sequence[str], options: Options) -> int:
    """Print each rank's argv and environment, as a real run would build them; start none."""
    from rankrun.inspect.dry_run import dry_run_lines
    from rankrun.plan.plan import build_plan

    for line in dry_run_lines(build_plan(script, args, options)):
        print(line)
    return 0
