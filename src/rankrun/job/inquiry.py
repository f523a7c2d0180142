"""``rankrun stacks`` and ``rankrun status`` on node 0 of a multi-node job: the whole job.

Node 0's registry entry names the job's store. ``stacks`` asks every node there the question
a stall asks (``what="stacks"``), waits for the answers, bounded, and prints the verdict a
stall prints: every node's ranks grouped, the smallest groups first, the silent nodes named.
Then node 0's own ranks in full, read here as on one node: after the answers, since py-spy
can't read a rank that node 0's agent is reading. ``status`` adds a line per node from the
store (its host, its agent, how quiet its ranks were at its last beat), in one request.
"""

from __future__ import annotations

import os
import sys

from rankrun.base.errors import RankrunError
from rankrun.inspect import inquiry
from rankrun.inspect.registry import RunEntry
from rankrun.job import control
from rankrun.job.stall import job_verdict

CONNECT_S = 10.0  # to reach node 0's store, on this host, and read whose job it holds


def whole_job(command: str, run: RunEntry, native: bool, wait: float) -> int:
    """``rankrun stacks`` (waiting ``wait`` s for the nodes' answers) or ``rankrun status``
    of the multi-node job whose node 0 is ``run``."""
    store = _connect(run)
    if command == "stacks":
        return _stacks(store, run, native, wait)
    code = inquiry.status(run)
    _nodes(store, run)
    return code


def _connect(run: RunEntry) -> control.JobStore:
    addr, _, port = run.job_store.rpartition(":")
    try:
        client = control.connect(addr.strip("[]"), int(port), timeout=CONNECT_S)
        job = control.read_job(client, CONNECT_S)
    except control.ControlError as e:
        raise RankrunError(f"job {run.run_id}'s store at {run.job_store}: {e}") from None
    if job.run_id != run.run_id:
        raise RankrunError(f"{run.job_store} holds job {job.run_id}, not {run.run_id}")
    return control.JobStore(client, run.run_id)


def _stacks(store: control.JobStore, run: RunEntry, native: bool, wait: float) -> int:
    nodes = list(range(run.nnodes))
    reason = f"rankrun stacks, pid {os.getpid()}"
    try:
        number = control.bounded(
            lambda: control.ask(store, "stacks", reason, nodes), CONNECT_S, "the job's store"
        )
        answers = control.await_answers(store, number, nodes, wait)
    except (control.ControlError, RuntimeError) as e:
        raise RankrunError(f"job {run.run_id}'s store at {run.job_store}: {e}") from None
    for line in job_verdict(f"stacks of job {run.run_id}", answers, nodes, wait):
        print(line)
    print(f"node 0 ({run.host}), every thread:")
    sys.stdout.flush()
    return inquiry.stacks(run, native=native)


def _nodes(store: control.JobStore, run: RunEntry) -> None:
    try:
        beats = control.bounded(
            lambda: control.node_beats(store, run.nnodes), CONNECT_S, "the job's store"
        )
    except (control.ControlError, RuntimeError) as e:
        raise RankrunError(f"job {run.run_id}'s store at {run.job_store}: {e}") from None
    print(f"job {run.run_id}: {run.nnodes} nodes, whose store node 0 hosts at {run.job_store}")
    rows = [["NODE", "HOST", "AGENT PID", "QUIET AT LAST BEAT"]]
    for b in beats:
        quiet = "-" if b.quiet is None else f"{b.quiet:.1f} s"
        rows.append([str(b.node), b.hostname, str(b.pid), quiet])
    inquiry.print_table(rows)
