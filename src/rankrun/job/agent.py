"""The node agent: rankrun on one node of a multi-node job.

It sits above the gang, which stays the single-node supervisor it is: the agent joins the
other nodes through node 0's TCPStore before anything starts, gives each attempt a fresh
workers' store, lets its link end the gang when the job ends elsewhere, restarts with the
whole job, and leaves node 0 one report for every node.
"""

from __future__ import annotations

import functools
import os
import signal
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from rankrun.base.errors import UsageError
from rankrun.job import control
from rankrun.job.link import Link
from rankrun.output.outcome import Attempt, Halt, Outcome, signal_name
from rankrun.output.printer import Printer
from rankrun.plan.layout import Layout
from rankrun.plan.plan import Plan
from rankrun.run.gang import Gang
from rankrun.run.host import Host
from rankrun.run.watch import TERMINATING, Signalled

T = TypeVar("T")


class Agent:
    def __init__(self, plan: Plan, store: control.JobStore, joined: control.Joined,
                 server: Any, workers: Any) -> None:  # fmt: skip
        self.plan, self.store, self.nodes = plan, store, joined.nodes
        self._server = server  # node 0's store: it serves as long as this object lives
        self._workers = workers  # node 0's store for the attempt's ranks
        self._opened = joined.opened  # the first attempt's workers' store port
        self.link = Link(store, joined.nodes, plan.node_rank, plan.nnodes,
                         plan.rendezvous.node_timeout)  # fmt: skip

    @classmethod
    def join(cls, plan: Plan, script: str, args: Sequence[str], run_id_given: bool,
             printer: Printer, quiet: bool = False) -> Agent:  # fmt: skip
        """Meet the other nodes and agree on the job, or raise UsageError. Spawns nothing."""
        try:
            return cls._join(plan, script, args, run_id_given, printer, quiet)
        except control.ControlError as e:
            raise UsageError(str(e)) from None

    @classmethod
    def _join(cls, plan: Plan, script: str, args: Sequence[str], run_id_given: bool,
              printer: Printer, quiet: bool) -> Agent:  # fmt: skip
        from rankrun.base.version import VERSION

        _bound_name_lookups()
        meeting = plan.rendezvous
        addr, port = meeting.master_addr, meeting.master_port
        name = os.uname().nodename
        server = None
        if plan.node_rank == 0:
            control.open_files_for(2 * plan.nnodes)
            server = control.serve(addr, port)
            client = server
            job = control.JobInfo(plan.run_id, name, port, _now(), plan.nnodes, "")
            control.announce(client, job)
            note = control.listen_queue_note(plan.nnodes)
            if note is not None:
                printer.event(note)
        else:
            client = control.connect(addr, port, timeout=meeting.join_timeout,
                                     on_wait=printer.event)  # fmt: skip
            job = control.read_job(client)
        if not run_id_given and plan.node_rank != 0:
            plan = _with_run_id(plan, job.run_id)
        me = control.NodeInfo(plan.node_rank, name, os.getpid(), plan.nnodes,
                              plan.nproc_per_node, plan.run_id, VERSION,
                              control.command_hash(script, args))  # fmt: skip
        store = control.JobStore(client, plan.run_id)
        workers: list[Any] = []

        def opening() -> str:  # node 0, once every node agrees: the first attempt's store
            workers.append(control.serve(addr, 0))
            return str(workers[0].port)

        command = control.command_line(script, args)
        joined = control.join(store, me, meeting.join_timeout, printer.event, command=command,
                              opening=opening)  # fmt: skip
        if not quiet:
            me_in = f"node {plan.node_rank} of job {plan.run_id}"
            printer.event(f"joined {plan.nnodes} nodes as {me_in}")
        return cls(plan, store, joined, server, workers[0] if workers else None)

    def run(self, host: Host, printer: Printer) -> Outcome:
        """Every attempt of the job, restarted on every node together."""
        host.add_source(self.link.fd, self.link.take)
        attempts: list[Attempt] = []
        try:
            for number in range(self.plan.max_restarts + 1):
                if number:
                    printer.event(f"restart {number} of {self.plan.max_restarts}")
                attempt = self._attempt(number, host, printer)
                attempts.append(attempt)
                if not self._restarts(number):
                    break
                self._opened = control.barrier(
                    self.store, f"attempt_{number + 1}", self.plan.node_rank, self.plan.nnodes,
                    self.plan.rendezvous.join_timeout, self._open_workers,
                )  # fmt: skip
        finally:
            host.remove_source(self.link.fd)
        return Outcome(tuple(attempts))

    def _open_workers(self) -> str:
        """Node 0, once every node is at the restart barrier: a fresh store for the ranks."""
        self._workers = control.serve(self.plan.rendezvous.master_addr, 0)
        return str(self._workers.port)

    def _attempt(self, number: int, host: Host, printer: Printer) -> Attempt:
        self.link.attempt_number = number
        meeting = self.plan.rendezvous._replace(master_port=int(self._opened))
        plan = self.plan._replace(rendezvous=meeting)
        attempt = Gang(plan, number, host, printer, self.link).supervise()
        result = self._result(attempt)
        self._try(self.link.flush)
        if attempt.interrupted_by:
            self._try(lambda: control.publish_interrupt(self.store, number))
        self._try(lambda: control.publish_result(self.store, number, result, self.plan.nnodes))
        end, signum = self._await_job(number, host)
        if signum is not None and not attempt.interrupted_by:
            attempt = attempt._replace(interrupted_by=signum)
        if end is not None and end.halts(self.plan.node_rank):
            attempt = attempt._replace(cause=None, halted=Halt(end.reason, end.code))
        elif self.link.cut_off and attempt.exit_code == 0:
            # This node's ranks finished, but the job did not: it may not end 0.
            attempt = attempt._replace(halted=Halt(self.link.cut_off_reason(), 1))
        return attempt

    def _result(self, attempt: Attempt) -> control.NodeResult:
        from rankrun.output.summary import rank_row

        rows = tuple(rank_row(r) for r in attempt.ranks)
        name = self.nodes[self.plan.node_rank].hostname
        return control.NodeResult(self.plan.node_rank, name, os.getpid(), attempt.exit_code, rows)

    def _await_job(self, number: int, host: Host) -> tuple[control.AttemptEnd | None, int | None]:
        """Wait for every node to end the attempt; return how the job's attempt ended, and the
        terminating signal that ended the wait, if one did.

        A node whose ranks all finished waits here for the others, so that a failure on
        another node still decides its exit code, and a restart still includes it. The link
        wakes it when the store says the attempt is over, or when this node is cut off.
        """
        link = self.link
        while True:
            if number in link.overs or link.cut_off:
                self._say_seen(number)
                return link.ends.get(number), None
            for e in host.wait(link.heartbeat.interval):
                if not isinstance(e, Signalled):
                    continue
                if e.signum in TERMINATING:  # wait no more: the user asked to stop
                    self._try(functools.partial(link.publish_interrupt, number, e.signum))
                    self._say_seen(number)
                    return link.ends.get(number), e.signum
                if e.signum == signal.SIGTSTP:
                    host.pause()  # no rank is left here to pause

    def _say_seen(self, number: int) -> None:
        """Node 0 serves the store until every node has seen the attempt's end."""
        self._try(lambda: control.say_seen(self.store, number))

    def _try(self, call: Callable[[], T]) -> T | None:
        """A store call at the end of an attempt: skipped once cut off, and bounded."""
        if self.link.cut_off:
            return None
        try:
            return control.bounded(call, self.plan.rendezvous.node_timeout, "the job's store")
        except (control.ControlError, RuntimeError):
            return None  # cut off now: the other nodes declare this one lost

    def conclude(
        self, outcome: Outcome, printer: Printer, summary: str | None, quiet: bool = False
    ) -> None:
        """Node 0: one report for the whole job. Other nodes: one line on how it ended."""
        from rankrun.job.job_report import finished_job_line, job_report, other_node_line

        number = len(outcome.attempts) - 1
        end = self.link.ends.get(number)
        if self.link.cut_off:
            self._conclude_alone(outcome, printer, summary)
            return
        if self.plan.node_rank != 0:
            signum = outcome.attempts[-1].interrupted_by
            if end is not None and end.kind != control.EndKind.DONE:
                printer.event(other_node_line(end, self.nodes[0], outcome.exit_code))
            elif signum is not None:
                printer.event(f"stopped: {signal_name(signum)}; exit code {outcome.exit_code}")
            return
        results = self._gather(number)
        root = None
        if end is not None and end.kind == control.EndKind.FAILURE:
            root = control.first_failure(self.store, number)
        lines = job_report(outcome, end, root, results, self.nodes)
        if not lines and outcome.ok and len(results) == len(self.nodes) and not quiet:
            lines = [finished_job_line(results)]
        for line in lines:
            printer.event(line)
        if summary is not None:
            from rankrun.job.job_report import write_job_summary

            write_job_summary(summary, self.plan.run_id, outcome, root, results)

    def _conclude_alone(self, outcome: Outcome, printer: Printer, summary: str | None) -> None:
        """A node cut off from the job reports only its own ranks, and says so."""
        halted = outcome.attempts[-1].halted
        reason = halted.reason if halted else "cut off from the job"
        printer.event(f"stopped: {reason}; no report of the other nodes")
        printer.event(f"exit code {outcome.exit_code}")
        if summary is not None:
            from rankrun.output.summary import write_summary

            hostname = self.nodes[self.plan.node_rank].hostname
            try:
                write_summary(summary, outcome, hostname, self.plan.run_id)
            except OSError as e:
                printer.event(f"could not write --summary-json {summary}: {e.strerror}")

    def _gather(self, number: int) -> dict[int, control.NodeResult]:
        """Node 0: every node's result, and every node's word that it saw the end, so that
        this node's exit (which ends the store) comes after the others read what they need."""
        lost = self.link.overs.get(number, ()) or tuple(self.link.heartbeat.lost())
        wait = self.plan.shutdown_timeout + self.plan.rendezvous.node_timeout + 5
        results = control.gather_results(self.store, number, self.plan.nnodes, wait, lost)
        control.await_seen(self.store, number, len(results), 5.0)
        return results

    def _restarts(self, number: int) -> bool:
        """Whether the job restarts after attempt ``number``: a failure, with restarts left."""
        end = self.link.ends.get(number)
        if end is None or end.kind != control.EndKind.FAILURE:
            return False
        if number >= self.plan.max_restarts:
            return False
        # A signal during the failure's teardown ends the job, as on one node. Every node
        # has every result by now, and a node publishes its interrupt before its result.
        return self._try(lambda: control.interrupted(self.store, number)) is False

    def close(self) -> None:
        self.link.close()
        _restore_name_lookups()


_RES_OPTIONS = "timeout:1 attempts:1"
_res_options_set = False


def _bound_name_lookups() -> None:
    """Bound each of this agent's DNS lookups to 1 s, unless the user set RES_OPTIONS.

    torch's store looks up the peer's name by reverse DNS after every connection, on its one
    thread (see ``control``'s notes); glibc waits 5 s per lost query, twice. One failed
    lookup also turns torch's lookups off for the process. glibc reads the variable when a
    thread first resolves; the ranks' environment was built before, without it.
    """
    global _res_options_set
    if "RES_OPTIONS" not in os.environ:
        os.environ["RES_OPTIONS"] = _RES_OPTIONS
        _res_options_set = True


def _restore_name_lookups() -> None:
    global _res_options_set
    if _res_options_set and os.environ.get("RES_OPTIONS") == _RES_OPTIONS:
        del os.environ["RES_OPTIONS"]
    _res_options_set = False


def _with_run_id(plan: Plan, run_id: str) -> Plan:
    layout = plan.layout
    if layout is not None and plan.output.log_dir is not None:
        layout = Layout(os.path.join(plan.output.log_dir, run_id))
    return plan._replace(run_id=run_id, layout=layout)


def _now() -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S")
