"""The plan of a run: the job's settings and, for each rank, its argv and environment.

Building a plan changes nothing and spawns nothing. It reads the caller's environment once,
and the machine only where a setting needs it: a free port for ``--standalone``, the topology
for ``--cpu-bind`` or ``--nproc-per-node gpu``, the script's file, random bytes for the run's
token. Each rank's environment is built as data and handed to the child as ``env=``.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping, Sequence

from rankrun.base.errors import UsageError
from rankrun.base.values import NamedTuple
from rankrun.plan.checks import (
    MAX_SHUTDOWN_TIMEOUT,
    check,
    check_host,
    check_limits,
    check_log_root,
    check_new_file,
    check_run_id,
    check_seconds,
)
from rankrun.plan.command import resolve_command
from rankrun.plan.layout import Layout
from rankrun.plan.options import Options
from rankrun.plan.rendezvous import Rendezvous, rendezvous
from rankrun.plan.streams import STREAMS, OutputOptions, Route, output_options, rank_routes

TYPE_CHECKING = False
if TYPE_CHECKING:
    from rankrun.plan.binding import Binding

LOCAL_RANK_MACRO = "${local_rank}"
TOKEN_VAR = "RANKRUN_RUN_TOKEN"
"""Every process of a run carries ``TOKEN_VAR=<the plan's token>`` in its environment."""
WORKER_SOCKET_VAR = "TORCH_WORKER_SERVER_SOCKET"
"""Where a script wrapped in torch's ``worker_main`` serves its stack and flight recorder."""
_MAX_SOCKET_PATH = 107  # bytes in a Unix socket's address, less its NUL


class RankSpec(NamedTuple):
    rank: int
    local_rank: int
    argv: tuple[str, ...]
    env: Mapping[str, str]
    stdout: Route
    stderr: Route
    error_file: str | None
    label: str
    """The prefix of the rank's lines, without colour: ``[rank3]:`` by default."""
    run_id: str
    node_rank: int
    local_world_size: int
    attempt: int
    """0 for the first attempt, then 1, 2, ... as TORCHELASTIC_RESTART_COUNT counts them."""
    cpus: frozenset[int] | None = None
    """The CPUs the rank is bound to, or None when it is not bound."""
    gpu: str | None = None
    """The GPU the rank's local rank names, as ``cuda:N (PCI bus id)``, on a node with GPUs."""
    worker_socket: str | None = None
    """The worker server socket rankrun chose for the rank: the host makes its directory
    before the rank starts and removes the socket after; None where the user chose one."""
    nnodes: int = 1
    job_store: str = ""
    """Across nodes, node 0's store as ``addr:port``, where the whole job can be asked."""


class Plan(NamedTuple):
    command: tuple[str, ...]
    """What runs the script: ``(python, -u, train.py)``, ``(./config.sh,)``."""
    args: tuple[str, ...]
    """The script's own arguments."""
    nproc_per_node: int
    nnodes: int
    node_rank: int
    rendezvous: Rendezvous
    run_id: str
    role: str
    max_restarts: int
    shutdown_timeout: float
    omp_num_threads: int | None
    base_env: Mapping[str, str]
    output: OutputOptions
    layout: Layout | None
    """Where the log files go, or None without a log directory."""
    local_rank_arg: bool
    stall_timeout: float | None
    """--stall-timeout: seconds without output before every rank's stack is shown."""
    binding: Binding | None
    """Each local rank's CPUs and OMP_NUM_THREADS, with --cpu-bind."""
    gpus: tuple[str, ...]
    """This node's GPUs, as CUDA numbers them for the ranks."""
    on_stall: str
    token: str
    """Carried by every process of the run, so that what escapes its group can be found."""
    error_dir: str | None = None
    """Without a log directory: the run's own directory for each rank's error.json."""
    job_store: str = ""
    """Across nodes, node 0's store as ``addr:port``: the agent sets it, since each attempt's
    rendezvous names the workers' store instead."""

    @property
    def master_addr(self) -> str:
        return self.rendezvous.master_addr

    @property
    def master_port(self) -> int:
        return self.rendezvous.master_port

    @property
    def world_size(self) -> int:
        return self.nproc_per_node * self.nnodes

    def ranks(self, attempt: int) -> tuple[RankSpec, ...]:
        return tuple(self._rank(local_rank, attempt) for local_rank in range(self.nproc_per_node))

    def _rank(self, local_rank: int, attempt: int) -> RankSpec:
        rank = self.nproc_per_node * self.node_rank + local_rank
        files, error_file = None, None
        if self.layout is not None:
            files = {s: self.layout.stream_file(attempt, rank, s) for s in STREAMS}
            error_file = self.layout.error_file(attempt, rank)
        elif self.error_dir is not None:
            error_file = os.path.join(self.error_dir, f"error_{attempt}_{rank}.json")
        stdout, stderr = rank_routes(self.output, local_rank, self.world_size, files)
        env = self._env(rank, local_rank, attempt)
        socket = self._worker_socket(rank, attempt)
        if socket is not None:
            env[WORKER_SOCKET_VAR] = socket
        if error_file is not None:
            env["TORCHELASTIC_ERROR_FILE"] = error_file
        label = self.output.label(rank=rank, local_rank=local_rank, role_name=self.role)
        argv = self._argv(local_rank)
        cpus = self.binding.cpus[local_rank] if self.binding else None
        gpu = self.gpus[local_rank % len(self.gpus)] if self.gpus else None
        return RankSpec(
            rank, local_rank, argv, env, stdout, stderr, error_file, label,
            self.run_id, self.node_rank, self.nproc_per_node, attempt, cpus, gpu, socket,
            self.nnodes, self.job_store,
        )  # fmt: skip

    def _worker_socket(self, rank: int, attempt: int) -> str | None:
        """A socket of the rank's own for torch's worker server, which only scripts wrapped
        in ``worker_main`` open: in the run's temporary directory, or ``/tmp`` where that
        path would be too long for a socket. Named by attempt, since a rank killed leaves its
        socket behind, and torch's server will not bind over one. The user's choice stands."""
        if WORKER_SOCKET_VAR in self.base_env:
            return None
        name = f"w{attempt}-{rank}.sock"
        path = os.path.join(default_error_dir(self), name)
        if len(os.fsencode(path)) > _MAX_SOCKET_PATH:
            path = os.path.join(f"/tmp/rankrun-{self.token}", name)
        return path

    def _argv(self, local_rank: int) -> tuple[str, ...]:
        """torchrun's ``${local_rank}`` in the arguments, and the old launcher's flag."""
        args = tuple(a.replace(LOCAL_RANK_MACRO, str(local_rank)) for a in self.args)
        if self.local_rank_arg:
            args = (f"--local_rank={local_rank}", *args)
        return (*self.command, *args)

    def _env(self, rank: int, local_rank: int, attempt: int) -> dict[str, str]:
        """The environment of one rank: the caller's, plus the launch contract."""
        env = dict(self.base_env)
        env.update(
            MASTER_ADDR=self.master_addr,
            MASTER_PORT=str(self.master_port),
            WORLD_SIZE=str(self.world_size),
            RANK=str(rank),
            LOCAL_RANK=str(local_rank),
            LOCAL_WORLD_SIZE=str(self.nproc_per_node),
            GROUP_RANK=str(self.node_rank),
            GROUP_WORLD_SIZE=str(self.nnodes),
            ROLE_RANK=str(rank),
            ROLE_NAME=self.role,
            ROLE_WORLD_SIZE=str(self.world_size),
            TORCHELASTIC_RESTART_COUNT=str(attempt),
            TORCHELASTIC_MAX_RESTARTS=str(self.max_restarts),
            TORCHELASTIC_RUN_ID=self.run_id,
        )
        if self.nnodes > 1:  # each attempt's ranks meet at the workers' store node 0 hosts
            env["TORCHELASTIC_USE_AGENT_STORE"] = "True"
        env[TOKEN_VAR] = self.token
        env.setdefault("TORCH_NCCL_ASYNC_ERROR_HANDLING", "1")
        env.setdefault("PYTHONUNBUFFERED", "1")
        # A crash in native code then prints each thread's Python stack, for the report.
        env.setdefault("PYTHONFAULTHANDLER", "1")
        if self.binding is not None and "OMP_NUM_THREADS" not in self.base_env:
            env["OMP_NUM_THREADS"] = str(self.binding.omp[local_rank])
        elif self.omp_num_threads is not None:
            env["OMP_NUM_THREADS"] = str(self.omp_num_threads)
        return env


def default_error_dir(plan: Plan) -> str:
    """Where ranks write error.json without a log directory; ``launch()`` creates it."""
    return os.path.join(plan.base_env.get("TMPDIR") or "/tmp", f"rankrun-{plan.token}")


def usable_cpus() -> int:
    """Cores this process may run on: its CPU affinity where the OS has one."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def omp_threads_for(env: Mapping[str, str], nproc_per_node: int) -> int | None:
    """OMP_NUM_THREADS to set: cores shared among local ranks, unless the user chose."""
    if "OMP_NUM_THREADS" in env or nproc_per_node < 2:
        return None
    return max(1, usable_cpus() // nproc_per_node)


def build_plan(
    script: str, args: Sequence[str], o: Options, env: Mapping[str, str] | None = None
) -> Plan:
    """Validate the options and build the plan, or raise UsageError. Spawns nothing."""
    base_env = dict(os.environ if env is None else env)
    _check_numbers(o)
    nproc = _nproc(o.nproc_per_node, base_env)
    check_limits(nproc)
    meeting = rendezvous(o, base_env)
    check_host(meeting.master_addr, "--rdzv-endpoint" if o.rdzv_endpoint else "--master-addr")
    run_id = o.run_id or _new_run_id()
    check_run_id(run_id)
    output = output_options(o, nproc, base_env)
    layout = Layout(os.path.join(output.log_dir, run_id)) if output.log_dir else None
    if layout is not None:
        check_log_root(layout.root)
    if o.summary_json is not None:
        check_new_file(o.summary_json, "--summary-json")
    command = resolve_command(script, (), module=o.module, no_python=o.no_python)
    return Plan(
        command=command,
        args=tuple(args),
        nproc_per_node=nproc,
        nnodes=o.nnodes,
        node_rank=o.node_rank or 0,  # not given: node 0, or a placeholder until the join
        rendezvous=meeting.with_port_chosen(o.standalone) if o.nnodes == 1 else meeting,
        run_id=run_id,
        role=o.role,
        max_restarts=o.max_restarts,
        shutdown_timeout=o.shutdown_timeout,
        omp_num_threads=omp_threads_for(base_env, nproc),
        base_env=base_env,
        output=output,
        layout=layout,
        local_rank_arg=o.local_rank_arg and not o.use_env,
        stall_timeout=o.stall_timeout,
        binding=_binding(o, nproc, base_env),
        gpus=_gpus(base_env),
        on_stall=o.on_stall,
        token=os.urandom(8).hex(),
    )


def _check_numbers(o: Options) -> None:
    check(o.nnodes >= 1, f"--nnodes must be at least 1, not {o.nnodes}")
    check(
        o.node_rank is None or 0 <= o.node_rank < o.nnodes,
        f"--node-rank {o.node_rank} is outside [0, {o.nnodes}) for --nnodes {o.nnodes}: "
        f"number the nodes 0 to {o.nnodes - 1}",
    )
    port = o.master_port
    check(port is None or 0 <= port <= 65535, f"--master-port {port} is outside 0..65535")
    check(o.max_restarts >= 0, f"--max-restarts must be 0 or more, not {o.max_restarts}")
    check_seconds(o.shutdown_timeout, "--shutdown-timeout", low=0, high=MAX_SHUTDOWN_TIMEOUT)
    check(not (o.standalone and o.nnodes != 1), "--standalone runs one node: drop one of them")
    if o.stall_timeout is not None:
        check_seconds(o.stall_timeout, "--stall-timeout", low=0.1, high=7 * 86400)


def _nproc(value: int | str, env: Mapping[str, str]) -> int:
    if isinstance(value, str):
        from rankrun.plan.topology import nproc_auto

        try:
            value = nproc_auto(value, env)
        except ValueError as e:
            raise UsageError(str(e)) from None
    check(value >= 1, f"--nproc-per-node must be at least 1, not {value}")
    return value


def _binding(o: Options, nproc: int, env: Mapping[str, str]) -> Binding | None:
    if o.cpu_bind == "none" and o.numa_binding is None:
        return None  # without reading, or importing, the topology
    from rankrun.plan.binding import binding_for

    return binding_for(o, nproc, env)


def _gpus(env: Mapping[str, str]) -> tuple[str, ...]:
    """The node's GPUs, named for the report; on a node without NVIDIA's driver, one stat."""
    if not os.path.exists("/proc/driver/nvidia") and not os.path.exists("/dev/nvidiactl"):
        return ()
    from rankrun.plan import topology

    found = topology.gpus(env)
    return tuple(f"cuda:{g.index} ({g.pci_bus_id})" if g.pci_bus_id else f"cuda:{g.index}"
                 for g in found)  # fmt: skip


def _new_run_id() -> str:
    return f"{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
