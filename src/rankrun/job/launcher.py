"""``launch()``: plan the run, supervise its attempts, report how it ended."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

from rankrun.base.errors import UsageError
from rankrun.base.quoting import quote
from rankrun.job.job import Job
from rankrun.output.outcome import Outcome, signal_name
from rankrun.output.printer import Printer
from rankrun.plan.options import Options
from rankrun.plan.plan import Plan, build_plan, default_error_dir, usable_cpus
from rankrun.run.host import Host
from rankrun.run.watch import Interrupted, forget_interrupt

TYPE_CHECKING = False
if TYPE_CHECKING:
    from rankrun.job.agent import Agent
    from rankrun.run.guardian import Guardian


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
    if options.dry_run:
        raise UsageError("dry_run is the command's: build_plan() shows what a run would do")
    plan = build_plan(script, args, options, env)
    if plan.layout is None:
        plan = plan._replace(error_dir=_make_error_dir(plan))
    try:
        return _launch(plan, script, args, options)
    finally:
        if plan.error_dir is not None:
            _remove_error_dir(plan.error_dir)


def _launch(plan: Plan, script: str, args: Sequence[str], options: Options) -> Outcome:
    printer = Printer(timestamps=options.timestamps)
    agent = guardian = None
    try:
        if plan.nnodes > 1:
            agent, guardian = _agent(plan, script, args, options, printer)
            plan = agent.plan  # its run id may be node 0's, and with it the log directory
        return _supervise(plan, options, printer, agent, guardian)
    finally:
        if guardian is not None:
            guardian.close()  # where no Host took it


def _agent(
    plan: Plan, script: str, args: Sequence[str], options: Options, printer: Printer
) -> tuple[Agent, Guardian]:
    """This node's agent, joined, and the guardian of its ranks, forked before torch's import:
    a copy of a process without torch forks and exits in a fraction of the time (the
    guardians of 8 agents that had torch took a third of the CPU of a failure's teardown)."""
    from rankrun.run.guardian import Guardian
    from rankrun.run.job_control import start_threads

    guardian = Guardian(plan.shutdown_timeout, plan.token)
    try:
        return start_threads(lambda: _join(plan, script, args, options, printer)), guardian
    except BaseException:
        guardian.close()
        raise


def _supervise(
    plan: Plan, options: Options, printer: Printer, agent: Agent | None,
    guardian: Guardian | None,
) -> Outcome:  # fmt: skip
    if plan.layout is not None:
        _make_log_root(plan.layout.root, options)
        printer.events_to(plan.layout.events)
    outcome = None
    try:
        _announce(plan, options, printer)
        grace, nproc = plan.shutdown_timeout, plan.nproc_per_node
        with Host(printer, grace, nproc, plan.token, guardian) as host:
            job = Job(plan, agent)
            outcome = job.run(host, printer)
            _end_escaped(host, printer)
            host.raise_on_terminating()
            job.conclude(outcome, printer, options.summary_json, options.quiet)
    except Interrupted as e:
        if outcome is None:
            raise
        forget_interrupt()
        printer.event(
            f"got {signal_name(e.signum)} after the ranks had ended: stopped the report; "
            f"the exit code stays {outcome.exit_code}"
        )
    finally:
        printer.close()
        if agent is not None:
            agent.close()
    return outcome


def _join(
    plan: Plan, script: str, args: Sequence[str], options: Options, printer: Printer
) -> Agent:
    """A multi-node run: meet the other nodes through torch's store, or say why not."""
    from rankrun.job import control
    from rankrun.job.agent import hold_store_port

    try:
        held = hold_store_port(plan)
    except control.ControlError as e:
        raise UsageError(str(e)) from None
    try:
        control.torch_distributed()
    except ImportError:
        if held is not None:
            os.close(held)
        raise UsageError(
            f"--nnodes {plan.nnodes} needs torch, to coordinate the nodes: pip install torch"
        ) from None
    from rankrun.job.agent import Agent

    return Agent.join(plan, script, args, options.run_id is not None, printer, options.quiet,
                      held)  # fmt: skip


def _make_log_root(root: str, options: Options) -> None:
    """The run's log directory, made before any rank starts: where it can't be, one line."""
    try:
        os.makedirs(root, exist_ok=True)
    except OSError as e:
        flag = "--log-dir" if options.log_dir is not None else "-r/-t (in $TMPDIR)"
        raise UsageError(f"{flag}: cannot create {quote(root)}: {e.strerror}") from None


def _make_error_dir(plan: Plan) -> str | None:
    """Where ranks write error.json without a log directory, as torchrun always lets them."""
    path = default_error_dir(plan)
    try:
        os.mkdir(path, 0o700)
    except OSError:
        return None  # no writable temporary directory: the ranks go without
    return path


def _remove_error_dir(path: str) -> None:
    try:
        for name in os.listdir(path):
            os.unlink(os.path.join(path, name))
        os.rmdir(path)
    except OSError:
        pass


def _end_escaped(host: Host, printer: Printer) -> None:
    ended = host.end_escaped()
    if ended:
        printer.event(
            f"ended {len(ended)} process(es) that had left their rank's group: " + ", ".join(ended)
        )


def _announce(plan: Plan, options: Options, printer: Printer) -> None:
    if options.quiet:
        return
    if plan.layout is not None:
        printer.event(f"logs in {quote(plan.layout.root)}")
    if plan.omp_num_threads is not None:
        printer.event(
            f"OMP_NUM_THREADS={plan.omp_num_threads} for each rank ({usable_cpus()} "
            f"usable CPUs / {plan.nproc_per_node} local ranks); set it to choose another"
        )
