"""The plan of a run: the job's settings and, for each rank, its argv and environment.

Building a plan is pure: the caller's environment is read once, and each rank's environment
is built as data and handed to the child as ``env=``.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping, Sequence
from typing import NamedTuple

from rankrun.command import resolve_command
from rankrun.errors import UsageError
from rankrun.ports import free_port, port_in_use
from rankrun.streams import (
    OutputOptions,
    Route,
    check_writable_dir,
    parse_ranks_filter,
    parse_stream_spec,
    rank_routes,
)


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
    nproc_per_node: int = 1
    nnodes: int = 1
    node_rank: int = 0
    master_addr: str = "127.0.0.1"
    master_port: int = 29500
    run_id: str = "none"
    role: str = "default"
    max_restarts: int = 0
    shutdown_timeout: float = 30.0
    omp_num_threads: int | None = None
    base_env: Mapping[str, str] = {}
    output: OutputOptions = OutputOptions()

    @property
    def log_root(self) -> str | None:
        """Where this run's logs go: ``<log dir>/<run id>``, or None without a log dir."""
        log_dir = self.output.log_dir
        return os.path.join(log_dir, self.run_id) if log_dir else None

    @property
    def world_size(self) -> int:
        return self.nproc_per_node * self.nnodes

    def ranks(self, attempt: int) -> tuple[RankSpec, ...]:
        return tuple(self._rank(local_rank, attempt) for local_rank in range(self.nproc_per_node))

    def _rank(self, local_rank: int, attempt: int) -> RankSpec:
        rank = self.nproc_per_node * self.node_rank + local_rank
        rank_dir = None
        if self.log_root is not None:
            rank_dir = os.path.join(self.log_root, f"attempt_{attempt}", f"rank_{rank}")
        stdout, stderr = rank_routes(self.output, local_rank, self.world_size, rank_dir)
        error_file = os.path.join(rank_dir, "error.json") if rank_dir else None
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


class Options(NamedTuple):
    """Every setting of a run, as the command line gives them; the defaults are torchrun's."""

    nproc_per_node: int = 1
    nnodes: int = 1
    node_rank: int = 0
    master_addr: str = "127.0.0.1"
    master_port: int = 29500
    standalone: bool = False
    module: bool = False
    no_python: bool = False
    max_restarts: int = 0
    shutdown_timeout: float = 30.0
    run_id: str | None = None
    role: str = "default"
    prefix: bool = True
    local_ranks_filter: str | None = None
    timestamps: bool = False
    log_dir: str | None = None
    redirects: str = "0"
    tee: str = "0"
    summary_json: str | None = None


def build_plan(
    script: str, args: Sequence[str], o: Options, env: Mapping[str, str] | None = None
) -> Plan:
    """Validate the options and build the plan, or raise UsageError. Spawns nothing."""
    _check(o.nnodes >= 1, f"--nnodes must be at least 1, not {o.nnodes}")
    _check(o.nproc_per_node >= 1, f"--nproc_per_node must be at least 1, not {o.nproc_per_node}")
    _check(
        0 <= o.node_rank < o.nnodes,
        f"--node_rank {o.node_rank} is outside [0, {o.nnodes}) for --nnodes {o.nnodes}: "
        f"number the nodes 0 to {o.nnodes - 1}",
    )
    _check(0 <= o.master_port <= 65535, f"--master_port {o.master_port} is outside 0..65535")
    _check(o.max_restarts >= 0, f"--max-restarts must be 0 or more, not {o.max_restarts}")
    _check(
        o.shutdown_timeout >= 0, f"--shutdown-timeout must be 0 or more, not {o.shutdown_timeout}"
    )
    _check(not (o.standalone and o.nnodes != 1), "--standalone runs one node: drop one of them")
    output = _output_options(o)
    if o.summary_json is not None:
        check_writable_dir(os.path.dirname(o.summary_json) or ".", "--summary-json")
    argv = resolve_command(script, args, module=o.module, no_python=o.no_python)
    master_port = _choose_port(0 if o.standalone else o.master_port, o.nnodes)
    base_env = dict(os.environ if env is None else env)
    return Plan(
        argv=argv,
        nproc_per_node=o.nproc_per_node,
        nnodes=o.nnodes,
        node_rank=o.node_rank,
        master_addr=o.master_addr,
        master_port=master_port,
        run_id=o.run_id or _new_run_id(),
        role=o.role,
        max_restarts=o.max_restarts,
        shutdown_timeout=o.shutdown_timeout,
        omp_num_threads=omp_threads_for(base_env, o.nproc_per_node),
        base_env=base_env,
        output=output,
    )


def _output_options(o: Options) -> OutputOptions:
    redirects = parse_stream_spec(o.redirects, "--redirects")
    tee = parse_stream_spec(o.tee, "--tee")
    log_dir = o.log_dir
    if log_dir is None and (redirects or tee):
        log_dir = os.path.join(os.environ.get("TMPDIR", "/tmp"), "rankrun-logs")
    if log_dir is not None:
        check_writable_dir(log_dir, "--log-dir")
    ranks_filter = None
    if o.local_ranks_filter is not None:
        ranks_filter = parse_ranks_filter(o.local_ranks_filter)
    return OutputOptions(o.prefix, ranks_filter, o.timestamps, log_dir, redirects, tee)


def _choose_port(port: int, nnodes: int) -> int:
    if nnodes > 1:
        _check(port != 0, "--master_port 0 needs one node: give every node the same fixed port")
        return port
    if port == 0:
        return free_port()
    _check(
        not port_in_use(port),
        f"--master_port {port} is already in use on this host, perhaps by a stale run: "
        "end it, or pass --master_port 0 to pick a free port",
    )
    return port


def _new_run_id() -> str:
    return f"{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise UsageError(message)
