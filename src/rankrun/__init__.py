"""rankrun: a launcher for multi-process distributed training whose ranks live and die together.

``launch()`` is the whole public API; the ``rankrun`` command is a thin layer over it.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping, Sequence

from rankrun import gang
from rankrun.errors import UsageError
from rankrun.outcome import Attempt, Outcome, RankResult
from rankrun.plan import Options, Plan, RankSpec, build_plan, usable_cores
from rankrun.printer import Printer
from rankrun.report import format_report

__all__ = [
    "Attempt",
    "Options",
    "Outcome",
    "Plan",
    "RankResult",
    "RankSpec",
    "UsageError",
    "launch",
]
__version__ = "0.1.0"


def launch(
    script: str,
    args: Sequence[str] = (),
    options: Options | None = None,
    *,
    env: Mapping[str, str] | None = None,
) -> Outcome:
    """Run ``script`` with ``args`` as a gang of ranks and return each rank's outcome.

    ``env`` replaces ``os.environ`` as the ranks' base environment. Raises UsageError for
    bad input, before anything is spawned. Call it from the main thread: it handles SIGINT,
    SIGTERM, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2, SIGTSTP, SIGCONT and SIGCHLD while it runs, and
    restores the previous handlers when it returns.
    """
    options = options or Options()
    plan = build_plan(script, args, options, env)
    log_root = plan.log_root
    events = os.path.join(log_root, "events.log") if log_root else None
    printer = Printer(timestamps=options.timestamps, events_path=events)
    try:
        if log_root is not None:
            printer.event(f"logs in {log_root}")
        if plan.omp_num_threads is not None:
            printer.event(
                f"OMP_NUM_THREADS={plan.omp_num_threads} for each rank ({usable_cores()} "
                f"usable cores / {plan.nproc_per_node} local ranks); set it to choose another"
            )
        outcome = gang.run(plan, printer)
        host = socket.gethostname()
        for line in format_report(outcome, host):
            printer.event(line)
        if options.summary_json is not None:
            from rankrun.summary import write_summary

            write_summary(options.summary_json, outcome, host, plan.run_id)
        return outcome
    finally:
        printer.close()
