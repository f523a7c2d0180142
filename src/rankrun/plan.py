"""The plan of a run: the job's settings and, for each rank, its argv and environment.

Building a plan is pure: the caller's environment is read once, and each rank's environment
is built as data and handed to the child as ``env=``.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from rankrun.command import resolve_command
from rankrun.errors import UsageError
from rankrun.ports import free_port, port_in_use


@dataclass(frozen=True)
class RankSpec:
    rank: int
    local_rank: int
    argv: tuple[str, ...]
    env: Mapping[str, str]


@dataclass(frozen=True)
class Plan:
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
    base_env: Mapping[str, str] = field(default_factory=dict)

    @property
    def world_size(self) -> int:
        return self.nproc_per_node * self.nnodes

    def ranks(self, attempt: int) -> tuple[RankSpec, ...]:
        return tuple(
            RankSpec(
                rank=self.nproc_per_node * self.node_rank + local_rank,
                local_rank=local_rank,
                argv=self.argv,
                env=self.rank_env(local_rank, attempt),
            )
            for local_rank in range(self.nproc_per_node)
        )

    def rank_env(self, local_rank: int, attempt: int) -> dict[str, str]:
        """The whole environment of one rank: the caller's, plus the launch contract."""
        rank = self.nproc_per_node * self.node_rank + local_rank
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
) -> Plan:
    """Validate the options and build the plan, or raise UsageError. Spawns nothing."""
    _check(nnodes >= 1, f"--nnodes must be at least 1, not {nnodes}")
    _check(nproc_per_node >= 1, f"--nproc_per_node must be at least 1, not {nproc_per_node}")
    _check(
        0 <= node_rank < nnodes,
        f"--node_rank {node_rank} is outside [0, {nnodes}) for --nnodes {nnodes}: "
        f"number the nodes 0 to {nnodes - 1}",
    )
    _check(0 <= master_port <= 65535, f"--master_port {master_port} is outside 0..65535")
    _check(max_restarts >= 0, f"--max-restarts must be 0 or more, not {max_restarts}")
    _check(shutdown_timeout >= 0, f"--shutdown-timeout must be 0 or more, not {shutdown_timeout}")
    if standalone:
        _check(nnodes == 1, "--standalone runs one node: drop --nnodes or --standalone")
        master_port = 0
    argv = resolve_command(script, args, module=module, no_python=no_python)
    master_port = _choose_port(master_port, nnodes)
    base_env = dict(os.environ if env is None else env)
    return Plan(
        argv=argv,
        nproc_per_node=nproc_per_node,
        nnodes=nnodes,
        node_rank=node_rank,
        master_addr=master_addr,
        master_port=master_port,
        run_id=run_id or _new_run_id(),
        role=role,
        max_restarts=max_restarts,
        shutdown_timeout=shutdown_timeout,
        omp_num_threads=omp_threads_for(base_env, nproc_per_node),
        base_env=base_env,
    )


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
