"""A job: its attempts, run and restarted together, and concluded in one report.

One node is the case with no store: the gang runs each attempt. Across nodes, the node
agent runs each attempt with the others, decides restarts with them, and gives node 0 the
facts of every node; the loop, the report and the summary are the same.
"""

from __future__ import annotations

import os

from rankrun.base.quoting import quote
from rankrun.output.outcome import Attempt, JobOutcome, Outcome, finished_line
from rankrun.output.printer import Printer
from rankrun.plan.plan import Plan
from rankrun.run.gang import Gang
from rankrun.run.host import Host

TYPE_CHECKING = False
if TYPE_CHECKING:
    from rankrun.job.agent import Agent


class Job:
    def __init__(self, plan: Plan, agent: Agent | None = None) -> None:
        self.plan, self.agent = plan, agent

    def run(self, host: Host, printer: Printer) -> Outcome:
        """Every attempt: the first, and one more after each failure while restarts are left."""
        attempts: list[Attempt] = []
        if self.agent is not None:
            self.agent.listen(host)
        try:
            for number in range(self.plan.max_restarts + 1):
                if number:
                    printer.event(f"restart {number} of {self.plan.max_restarts}")
                attempt = self._attempt(number, host, printer)
                attempts.append(attempt)
                if number == self.plan.max_restarts or not self._restarts(attempt):
                    break
                if self.agent is not None and not self.agent.meet_again(number, host, printer):
                    if (signum := host.terminating()) is not None:  # 128+N, as anywhere else
                        attempts[-1] = attempt._replace(interrupted_by=signum)
                    break
        finally:
            if self.agent is not None:
                self.agent.stop_listening(host)
        return Outcome(tuple(attempts))

    def _attempt(self, number: int, host: Host, printer: Printer) -> Attempt:
        if self.agent is None:
            return Gang(self.plan, number, host, printer).supervise()
        return self.agent.attempt(number, host, printer)

    def _restarts(self, attempt: Attempt) -> bool:
        """After a failure, with restarts left; never after a signal to the launcher. Across
        nodes, after a rank's failure anywhere, and no node's signal."""
        if attempt.interrupted_by:
            return False
        if self.agent is not None:
            return self.agent.restarts(attempt.number)
        return not (attempt.exit_code == 0 or attempt.launcher_error)

    def conclude(
        self, outcome: Outcome, printer: Printer, summary: str | None, quiet: bool = False
    ) -> None:
        """The report, where it belongs: on the only node, or node 0. Another node of a
        multi-node job says in a line how the job ended, and that node 0 has the report."""
        if self.agent is None:
            job = JobOutcome.of_node(outcome, os.uname().nodename, os.getpid())
        else:
            concluded = self.agent.conclude(outcome, printer)
            if concluded is None:
                return
            job = concluded
        report(job, self.plan, printer, summary, quiet)


def report(job: JobOutcome, plan: Plan, printer: Printer, summary: str | None, quiet: bool) -> None:
    if job.exit_code == 0 and len(job.attempts) == 1:
        # One rank stays as silent as the python it replaces.
        if plan.world_size > 1 and not quiet:
            printer.event(finished_line(job))
        if summary is None:
            return
    from rankrun.output.report import format_report

    for line in format_report(job):
        printer.event(line)
    if summary is not None:
        from rankrun.output.summary import write_summary

        try:
            write_summary(summary, job, plan.run_id)
        except OSError as e:
            printer.event(f"could not write --summary-json {quote(summary)}: {e.strerror}")
