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
from rankrun.output.outcome import (
    Attempt,
    Ending,
    Halt,
    JobOutcome,
    NodeRecord,
    Outcome,
    RankResult,
    signal_name,
)
from rankrun.output.printer import Printer
from rankrun.plan.layout import Layout
from rankrun.plan.plan import Plan
from rankrun.run.gang import STALL_EXIT_CODE, Gang
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
        self._job_attempts: list[Attempt] = []  # node 0: each attempt across every node
        self._results: dict[int, control.NodeResult] = {}  # node 0: the last attempt's
        stall, halt = plan.stall_timeout or 0.0, None
        if stall and plan.on_stall == "stop":
            halt = Halt(f"stalled: no rank wrote a line for {stall:g} s", STALL_EXIT_CODE)
        self.link = Link(store, joined.nodes, plan.node_rank, plan.nnodes,
                         plan.rendezvous.node_timeout, halt, stall)  # fmt: skip

    @classmethod
    def join(cls, plan: Plan, script: str, args: Sequence[str], run_id_given: bool,
             printer: Printer, quiet: bool = False, held: int | None = None) -> Agent:  # fmt: skip
        """Meet the other nodes and agree on the job, or raise UsageError. Spawns nothing.
        ``held``: the store's port, listened on already (``hold_store_port``)."""
        try:
            return cls._join(plan, script, args, run_id_given, printer, quiet, held)
        except control.ControlError as e:
            raise UsageError(str(e)) from None

    @classmethod
    def _join(cls, plan: Plan, script: str, args: Sequence[str], run_id_given: bool,
              printer: Printer, quiet: bool, held: int | None) -> Agent:  # fmt: skip
        from rankrun.base.version import VERSION

        _bound_name_lookups()
        meeting = plan.rendezvous
        addr, port = meeting.master_addr, meeting.master_port
        name = os.uname().nodename
        server = _host(plan, name, printer, held)
        if server is not None:
            client = server
        else:
            client = control.connect(addr, port, timeout=meeting.join_timeout,
                                     on_wait=printer.event)  # fmt: skip
            job = control.read_job(client)
            if not run_id_given:
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
        ticketed = server is None and meeting.node_rank_at_join
        joined = control.join(store, me, meeting.join_timeout, printer.event, command=command,
                              opening=opening, ticketed=ticketed)  # fmt: skip
        plan = plan._replace(node_rank=joined.node_rank)  # every rank's RANK follows it
        if not quiet:
            me_in = f"node {plan.node_rank} of job {plan.run_id}"
            printer.event(f"joined {plan.nnodes} nodes as {me_in}")
        return cls(plan, store, joined, server, workers[0] if workers else None)

    def listen(self, host: Host) -> None:
        """From now on, the job's news wakes the host's loop."""
        host.add_source(self.link.fd, self.link.take)

    def stop_listening(self, host: Host) -> None:
        host.remove_source(self.link.fd)

    def meet_again(self, number: int, host: Host, printer: Printer) -> bool:
        """Between attempts: every node at the barrier; node 0 opens it with a fresh store
        for the next attempt's ranks. False, and a line, where the job can't meet again: a
        node lost or stopped, this one cut off or signalled, or the barrier's time out."""
        try:
            self._opened = control.barrier(
                self.store, f"attempt_{number + 1}", self.plan.node_rank, self.plan.nnodes,
                self.plan.rendezvous.join_timeout, self._open_workers,
                functools.partial(self._gone, host),
            )  # fmt: skip
        except (control.ControlError, RuntimeError) as e:  # torch's: the store went away
            printer.event(f"no restart: {control.first_line(e)}")
            return False
        return True

    def _gone(self, host: Host) -> str | None:
        """Why the nodes can't all meet again, if they can't."""
        signum = host.terminating()
        if signum is not None:
            return f"stopped by {signal.Signals(signum).name}"
        if self.link.cut_off:
            return self.link.cut_off_reason()
        lost = self.link.heartbeat.lost()
        return self.link.lost_reason(lost) if lost else None

    def _open_workers(self) -> str:
        """Node 0, once every node is at the restart barrier: a fresh store for the ranks."""
        self._workers = control.serve(self.plan.rendezvous.master_addr, 0)
        return str(self._workers.port)

    def attempt(self, number: int, host: Host, printer: Printer) -> Attempt:
        """This node's part of attempt ``number``, once every node has ended it."""
        self.link.attempt_number = number
        meeting = self.plan.rendezvous._replace(master_port=int(self._opened))
        # A stall is the whole job's: node 0's link judges it, from every node's quiet time.
        store = f"{self.plan.master_addr}:{self.plan.master_port}"  # for rankrun stacks
        plan = self.plan._replace(rendezvous=meeting, stall_timeout=None, job_store=store)
        self.link.heartbeat.quiet = lambda: host.now() - host.last_output
        try:
            attempt = Gang(plan, number, host, printer, self.link).supervise()
        finally:
            self.link.heartbeat.quiet = lambda: None
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
        if self.plan.node_rank == 0 and not self.link.cut_off:
            self._job_attempts.append(self._job_attempt(attempt, end))
        return attempt

    def _result(self, attempt: Attempt) -> control.NodeResult:
        name = self.nodes[self.plan.node_rank].hostname
        ranks = attempt.ranks
        return control.NodeResult(self.plan.node_rank, name, os.getpid(), attempt.exit_code, ranks)

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
                    self._try(lambda: control.publish_interrupt(self.store, number))
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

    def _job_attempt(self, attempt: Attempt, end: control.AttemptEnd | None) -> Attempt:
        """Node 0: the attempt across every node, from the store's facts: every node's ranks,
        and the root cause the store recorded first, never the earliest by a host's clock."""
        number = attempt.number
        self._results = self._gather(number)
        ranks = [r for n, res in sorted(self._results.items()) if n != 0 for r in res.ranks]
        ranks = sorted([*attempt.ranks, *ranks], key=lambda r: r.rank)
        cause = None
        if end is not None and end.kind == control.EndKind.FAILURE:
            root = control.first_failure(self.store, number)
            if root is not None:
                cause = _root_cause(root, ranks)
        halted = attempt.halted if cause is None else None
        return attempt._replace(ranks=tuple(ranks), cause=cause, halted=halted)

    def conclude(self, outcome: Outcome, printer: Printer) -> JobOutcome | None:
        """Node 0: the whole job, for its one report. Other nodes: one line on how it ended,
        and None; a node cut off from the job reports its own ranks."""
        if self.link.cut_off:
            return self._conclude_alone(outcome)
        if self.plan.node_rank != 0:
            end = self.link.ends.get(len(outcome.attempts) - 1)
            signum = outcome.attempts[-1].interrupted_by
            if end is not None and end.kind != control.EndKind.DONE:
                node0 = self.nodes[0]
                printer.event(f"the job ended: {end.reason}; node 0 ({node0.hostname}) has the "
                              f"report; exit code {outcome.exit_code}")  # fmt: skip
            elif signum is not None:
                printer.event(f"stopped: {signal_name(signum)}; exit code {outcome.exit_code}")
            return None
        nodes = tuple(
            NodeRecord(r, n.hostname, n.pid, _exit_code(self._results.get(r)))
            for r, n in sorted(self.nodes.items())
        )
        return JobOutcome(nodes, tuple(self._job_attempts), outcome.exit_code)

    def _conclude_alone(self, outcome: Outcome) -> JobOutcome:
        """A node cut off from the job reports only its own ranks, and says so."""
        last = outcome.attempts[-1]
        if last.halted is not None:
            reason = f"{last.halted.reason}; no report of the other nodes"
            last = last._replace(halted=last.halted._replace(reason=reason))
        me = self.nodes[self.plan.node_rank]
        alone = Outcome((*outcome.attempts[:-1], last))
        return JobOutcome.of_node(alone, me.hostname, me.pid, me.node_rank)

    def _gather(self, number: int) -> dict[int, control.NodeResult]:
        """Node 0: every node's result, and every node's word that it saw the end, so that
        this node's exit (which ends the store) comes after the others read what they need."""
        over = self.link.overs.get(number)
        lost = over or tuple(self.link.heartbeat.lost())
        wait = self.plan.shutdown_timeout + self.plan.rendezvous.node_timeout + 5
        complete = over is not None and not over  # every node published: no wait
        results = control.gather_results(self.store, number, self.plan.nnodes, wait, lost,
                                          complete)  # fmt: skip
        control.await_seen(self.store, number, len(results), 5.0)
        return results

    def restarts(self, number: int) -> bool:
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


def hold_store_port(plan: Plan) -> int | None:
    """The store's port, listened on before torch's import, where this agent hosts the job;
    None where it joins as a client.

    Given a node rank, node 0 hosts. Given none (c10d), the agent that can host the endpoint
    does, as torchrun's: its address is this host's and the port binds. Of several agents
    on this host, the first to bind hosts; the others find the port in use, and join.
    """
    meeting = plan.rendezvous
    at_join = meeting.node_rank_at_join
    if not control.is_local(meeting.master_addr) if at_join else plan.node_rank != 0:
        return None
    try:
        return control.hold(meeting.master_port)
    except control.PortInUse:
        if not at_join:
            raise  # node 0's port, taken: a stale run?
        return None  # another agent on this host hosts the job


def _host(plan: Plan, hostname: str, printer: Printer, held: int | None) -> Any | None:
    """Node 0's store, served on the port it holds and announced; None for a client."""
    if held is None:
        return None
    addr, port = plan.rendezvous.master_addr, plan.rendezvous.master_port
    control.open_files_for(2 * plan.nnodes)
    server = control.serve(addr, port, held=held)
    job = control.JobInfo(plan.run_id, hostname, port, _now(), plan.nnodes, "")
    control.announce(server, job)
    note = control.listen_queue_note(plan.nnodes)
    if note is not None:
        printer.event(note)
    return server


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


def _root_cause(root: control.FailureFact, ranks: list[RankResult]) -> RankResult:
    """The rank the store recorded first, as its node reported it; from the fact alone when
    its node published no result (lost after the failure)."""
    for r in ranks:
        if (r.node_rank, r.rank) == (root.node_rank, root.rank):
            return r
    ending = Ending(root.exit_code, root.signal, root.duration)
    return RankResult(root.rank, root.local_rank, root.pid, 0.0, ending, root.error_text,
                      node_rank=root.node_rank)  # fmt: skip


def _exit_code(result: control.NodeResult | None) -> int | None:
    return None if result is None else result.exit_code


def _with_run_id(plan: Plan, run_id: str) -> Plan:
    layout = plan.layout
    if layout is not None and plan.output.log_dir is not None:
        layout = Layout(os.path.join(plan.output.log_dir, run_id))
    return plan._replace(run_id=run_id, layout=layout)


def _now() -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S")
