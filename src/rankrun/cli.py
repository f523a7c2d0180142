"""The ``rankrun`` command: signals first, then the command line, then ``launch()``.

Every user mistake becomes one line and exit code 2. A terminating signal is handled from
the first instruction: before anything is spawned it ends the command with 128+N and one
line, never a traceback.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Sequence

from rankrun.watch import TERMINATING, Interrupted, interrupt


def main(argv: Sequence[str] | None = None) -> int:
    for signum in TERMINATING:
        signal.signal(signum, interrupt)
    _open_stdio()
    try:
        return _run(argv)
    except Interrupted as e:
        print(f"rankrun: stopped by {signal.Signals(e.signum).name}", file=sys.stderr)
        return 128 + e.signum


def _open_stdio() -> None:
    """Put /dev/null on a closed fd 0, 1 or 2 (``rankrun ... >&-``), so no pipe lands there."""
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
        except OSError:
            os.open(os.devnull, os.O_RDWR)


def _run(argv: Sequence[str] | None) -> int:
    from rankrun import launcher
    from rankrun.errors import UsageError
    from rankrun.flags import parse

    try:
        command = parse(argv, os.environ)
        outcome = launcher.launch(command.script, command.args, command.options)
    except UsageError as e:
        print(f"rankrun: error: {e}", file=sys.stderr)
        return 2
    return outcome.exit_code
