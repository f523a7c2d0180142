"""``--dry-run``: what each rank of this node would run, and nothing started.

One row per rank: its global and local rank, its argv, and each variable of its environment
that rankrun sets or changes, shell-quoted. The plan is built as for a real run, so bad input
gives the same one-line errors; a chosen free port and the run's token are this plan's, and
a real run picks its own (across nodes, each attempt's ranks meet at a port node 0 opens then).
"""

from __future__ import annotations

import shlex

from rankrun.plan.plan import Plan, default_error_dir


def dry_run_lines(plan: Plan) -> list[str]:
    """The table: a header, then one line per rank of this node."""
    if plan.layout is None and plan.error_dir is None:
        plan = plan._replace(error_dir=default_error_dir(plan))
    rows = [("RANK", "LOCAL", "CPUS", "ARGV", "ENVIRONMENT SET BY RANKRUN")]
    for spec in plan.ranks(0):
        changed = [
            f"{name}={shlex.quote(value)}"
            for name, value in spec.env.items()
            if plan.base_env.get(name) != value
        ]
        argv = shlex.join(spec.argv)
        cpus = _cpulist(spec.cpus) if spec.cpus is not None else "all"
        rows.append((str(spec.rank), str(spec.local_rank), cpus, argv, " ".join(changed)))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    return [
        "  ".join(cell.ljust(w) for cell, w in zip(row[:4], widths, strict=True)) + "  " + row[4]
        for row in rows
    ]


def _cpulist(cpus: frozenset[int]) -> str:
    """Linux's cpulist syntax: ``0-3,8-11``."""
    runs: list[list[int]] = []
    for cpu in sorted(cpus):
        if runs and cpu == runs[-1][-1] + 1:
            runs[-1].append(cpu)
        else:
            runs.append([cpu])
    return ",".join(f"{r[0]}-{r[-1]}" if len(r) > 1 else str(r[0]) for r in runs)
