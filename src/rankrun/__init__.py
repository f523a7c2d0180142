"""rankrun: a launcher for multi-process distributed training whose ranks live and die together.

``launch()`` is the whole public API; the ``rankrun`` command is a thin layer over it.
"""

from __future__ import annotations

import socket
from collections.abc import Mapping, Sequence

from rankrun import gang
from rankrun.errors import UsageError
from rankrun.outcome import Attempt, Outcome, RankResult
from rankrun.plan import Plan, RankSpec, build_plan, usable_cores
from rankrun.printer import Printer
from rankrun.report import format_report

__all__ = ["Attempt", "Outcome", "Plan", "RankResult", "RankSpec", "UsageError", "launch"]
__version__ = "0.1.0"


def launch(
    script: str,
    args: Sequence[str] = (),
    *,
    nproc_per_node: int = 1,
    nnodes: int = 1,
    node_rank: int = 0,
    master_addr: str = "127.0.0.1",
    master_port: int = 29500,
    standalone: bool = False,
    module: bool = False,
    no_python: bool = False,
    max_restarts: int = 0,
    shutdown_timeout: float = 30.0,
    run_id: str | None = None,
    role: str = "default",
    env: Mapping[str, str] | None = None,
) -> Outcome:
    """Run ``script`` with ``args`` as a gang of ranks and return each rank's outcome.

    Raises UsageError for bad input, before anything is spawned. Call it from the main
    thread: it handles SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2 and SIGCHLD while
    it runs, and restores the previous handlers when it returns.
    """
    plan = build_plan(
        script,
        args,
        nproc_per_node=nproc_per_node,
        nnodes=nnodes,
        node_rank=node_rank,
        master_addr=master_addr,
        master_port=master_port,
        standalone=standalone,
        module=module,
        no_python=no_python,
        max_restarts=max_restarts,
        shutdown_timeout=shutdown_timeout,
        run_id=run_id,
        role=role,
        env=env,
    )
    printer = Printer()
    if plan.omp_num_threads is not None:
        printer.event(
            f"OMP_NUM_THREADS={plan.omp_num_threads} for each rank ({usable_cores()} usable "
            f"cores / {plan.nproc_per_node} local ranks); set it yourself to choose another"
        )
    outcome = gang.run(plan, printer)
    for line in format_report(outcome, socket.gethostname()):
        printer.event(line)
    return outcome
