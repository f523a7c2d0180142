"""The plan of a run: the job's settings and, for each rank, its argv and environment.

Building a plan is pure: the caller's environment is read once, and each rank's environment
is built as data and handed to the child as ``env=``.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping, Sequence

from rankrun.command import resolve_command
from rankrun.errors import UsageError
from rankrun.layout import Layout, default_log_dir
from rankrun.options import Options
from rankrun.streams import (
    STREAMS,
    OutputOptions,
    Route,
    check_writable_dir,
    parse_ranks_filter,
    parse_stream_spec,
    rank_routes,
)
from rankrun.values import NamedTuple


class RankSpec(NamedTuple):
    rank: int
    local_rank: int
    argv: tuple[str, ...]
    env: Mapping[str, str]
    stdout: Route
    stderr: Route
    error_file: str | None = None


class Plan(NamedTuple):
    argv: tuple[str, ...]
    nproc_per_node: int
    nnodes: int
    node_rank: int
    master_addr: str
    master_port: int
    run_id: str
    role: str
    max_restarts: int
    shutdown_timeout: float
    omp_num_threads: int | None
    base_env: Mapping[str, str]
    output: OutputOptions
    layout: Layout | None
    """Where the log files go, or None without a log directory."""

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
        stdout, stderr = rank_routes(self.output, local_rank, self.world_size, files)
        env = self._env(rank, local_rank, attempt)
        if error_file is not None:
            env["TORCHELASTIC_ERROR_FILE"] = error_file
        return RankSpec(rank, local_rank, self.argv, env, stdout, stderr, error_file)

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
        env.setdefault("TORCH_NCCL_ASYNC_ERROR_HANDLING", "1")
        env.setdefault("PYTHONUNBUFFERED", "1")
        if self.omp_num_threads is not None:
            env["OMP_NUM_THREADS"] = str(self.omp_num_threads)
        return env


def usable_cores() -> int:
    """Cores this process may run on: its CPU affinity where the OS has one."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def omp_threads_for(env: Mapping[str, str], nproc_per_node: int) -> int | None:
    """OMP_NUM_THREADS to set: cores shared among local ranks, unless the user chose."""
    if "OMP_NUM_THREADS" in env or nproc_per_node < 2:
        return None
    return max(1, usable_cores() // nproc_per_node)


def build_plan(
    script: str, args: Sequence[str], o: Options, env: Mapping[str, str] | None = None
) -> Plan:
    """Validate the options and build the plan, or raise UsageError. Spawns nothing."""
    _check(o.nnodes >= 1, f"--nnodes must be at least 1, not {o.nnodes}")
    _check(o.nproc_per_node >= 1, f"--nproc-per-node must be at least 1, not {o.nproc_per_node}")
    _check(
        0 <= o.node_rank < o.nnodes,
        f"--node-rank {o.node_rank} is outside [0, {o.nnodes}) for --nnodes {o.nnodes}: "
        f"number the nodes 0 to {o.nnodes - 1}",
    )
    _check(0 <= o.master_port <= 65535, f"--master-port {o.master_port} is outside 0..65535")
    _check(o.max_restarts >= 0, f"--max-restarts must be 0 or more, not {o.max_restarts}")
    _check(
        o.shutdown_timeout >= 0, f"--shutdown-timeout must be 0 or more, not {o.shutdown_timeout}"
    )
    _check(not (o.standalone and o.nnodes != 1), "--standalone runs one node: drop one of them")
    base_env = dict(os.environ if env is None else env)
    output = _output_options(o, base_env)
    if o.summary_json is not None:
        check_writable_dir(os.path.dirname(o.summary_json) or ".", "--summary-json")
    argv = resolve_command(script, args, module=o.module, no_python=o.no_python)
    master_port = _choose_port(0 if o.standalone else o.master_port, o.nnodes)
    run_id = o.run_id or _new_run_id()
    return Plan(
        argv=argv,
        nproc_per_node=o.nproc_per_node,
        nnodes=o.nnodes,
        node_rank=o.node_rank,
        master_addr=o.master_addr,
        master_port=master_port,
        run_id=run_id,
        role=o.role,
        max_restarts=o.max_restarts,
        shutdown_timeout=o.shutdown_timeout,
        omp_num_threads=omp_threads_for(base_env, o.nproc_per_node),
        base_env=base_env,
        output=output,
        layout=Layout(os.path.join(output.log_dir, run_id)) if output.log_dir else None,
    )


def _output_options(o: Options, env: Mapping[str, str]) -> OutputOptions:
    redirects = parse_stream_spec(o.redirects, "--redirects")
    tee = parse_stream_spec(o.tee, "--tee")
    log_dir = o.log_dir
    if log_dir is None and (redirects.used or tee.used):
        log_dir = default_log_dir(env)
    if log_dir is not None:
        check_writable_dir(log_dir, "--log-dir")
    ranks_filter = None
    if o.local_ranks_filter is not None:
        ranks_filter = parse_ranks_filter(o.local_ranks_filter)
    return OutputOptions(o.prefix, ranks_filter, o.timestamps, log_dir, redirects, tee)


def _choose_port(port: int, nnodes: int) -> int:
    if nnodes > 1:
        _check(port != 0, "--master-port 0 needs one node: give every node the same fixed port")
        return port
    from rankrun.ports import free_port, port_in_use  # socket: only for these checks

    if port == 0:
        return free_port()
    _check(
        not port_in_use(port),
        f"--master-port {port} is already in use on this host, perhaps by a stale run: "
        "end it, or pass --master-port 0 to pick a free port",
    )
    return port


def _new_run_id() -> str:
    return f"{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise UsageError(message)
