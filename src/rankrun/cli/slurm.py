"""What a Slurm step tells rankrun: how many nodes, which one this is, and where to meet.

Under ``srun -N<n> --ntasks-per-node=1 rankrun ...`` one rankrun starts on each node, and
each can read --nnodes, --node_rank and --master_addr from its own environment, so a single
command line serves every node. Only a *step* counts. An sbatch batch script (and salloc's
shell) carries SLURM_JOB_ID, SLURM_NNODES, even SLURM_NODEID=0 and SLURM_PROCID=0, yet runs
once, on the first node: a rankrun started there must stay a one-node launcher. srun alone
sets SLURM_STEP_ID and the SLURM_STEP_* variables, so they decide.

In a step that uses part of its job, SLURM_JOB_NUM_NODES and SLURM_JOB_NODELIST still
describe the whole job, while SLURM_NODEID counts from the step's first node; so the step's
own variables come first and the job's are used only where they must agree.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Mapping, Sequence

from rankrun.base.errors import UsageError
from rankrun.base.values import NamedTuple
from rankrun.cli.hostlist import first_host

PORT_BASE = 20000  # ports 20000-29999: below Linux's ephemeral range (32768 up)
_SPECIAL_STEP = 0xFFFFFFF0  # Slurm's batch, extern and interactive steps sit above this
_TASKS = re.compile(r"([0-9]+)(?:\(x([0-9]+)\))?")


class SlurmStep(NamedTuple):
    job_id: int
    step_id: int
    nnodes: int
    node_rank: int
    master_addr: str  # the step's first node, the same on every node
    master_port: int
    tasks_per_node: tuple[int, ...]  # tasks srun started on each node of the step
    gpus_on_node: int | None


def slurm_step(env: Mapping[str, str], master_addr: str | None = None) -> SlurmStep | None:
    """The srun step ``env`` belongs to; None outside one. ValueError if it contradicts itself.

    Given ``master_addr`` (a flag gave it), the node list is not read.
    """
    step = env.get("SLURM_STEP_ID", env.get("SLURM_STEPID", ""))
    if "SLURM_JOB_ID" not in env or not _digits(step) or int(step) >= _SPECIAL_STEP:
        return None
    job_id, step_id = _int(env, "SLURM_JOB_ID"), int(step)
    nnodes = _int(env, "SLURM_STEP_NUM_NODES", "SLURM_NNODES")
    node_rank = _int(env, "SLURM_NODEID")
    if not 0 <= node_rank < nnodes:
        raise ValueError(f"SLURM_NODEID={node_rank} is not below the step's {nnodes} nodes")
    if master_addr is None:
        master_addr = _first_node(env, nnodes)
    tasks = _tasks_per_node(env, nnodes)
    gpus = env.get("SLURM_GPUS_ON_NODE")
    return SlurmStep(
        job_id=job_id,
        step_id=step_id,
        nnodes=nnodes,
        node_rank=node_rank,
        master_addr=master_addr,
        master_port=master_port(job_id, step_id),
        tasks_per_node=tasks,
        gpus_on_node=_int(env, "SLURM_GPUS_ON_NODE") if gpus else None,
    )


def from_slurm(
    env: Mapping[str, str], given: dict[str, object], argv: Sequence[str]
) -> tuple[str, ...]:
    """Fill the settings a step decides (nodes, node rank, node 0's address and port, GPUs)
    into ``given`` where no flag or PET_ variable set them; return the note to print."""
    if "nnodes" in given and "node_rank" in given:
        return ()  # the flags place this node, and the step is not read
    try:
        step = slurm_step(env, str(given["master_addr"]) if "master_addr" in given else None)
    except ValueError as e:
        raise UsageError(f"inside Slurm: {e}") from None
    if step is None:
        return ()
    if several_tasks_per_node(step):
        raise UsageError(
            f"srun started {max(step.tasks_per_node)} rankruns on one node, and each starts "
            f"every rank of that node: run one per node, as {srun_command(step, argv)}"
        )
    taken = {"nnodes": step.nnodes, "node_rank": step.node_rank,
             "master_addr": step.master_addr, "master_port": step.master_port}  # fmt: skip
    if step.gpus_on_node:
        taken["nproc_per_node"] = step.gpus_on_node
    taken["run_id"] = f"slurm-{step.job_id}.{step.step_id}"
    taken = {name: value for name, value in taken.items() if name not in given}
    given.update(taken)
    flags = " ".join(f"--{name.replace('_', '-')} {value}" for name, value in taken.items())
    return (f"from Slurm job {step.job_id} step {step.step_id}: {flags}",) if flags else ()


def master_port(job_id: int, step_id: int) -> int:
    """20000 + the job id's last three digits, then the step id's last digit: job 4321 step 2
    meets on 23212. Every node derives the same port; jobs up to 1000 apart, and up to ten
    steps of one job running side by side, get different ones."""
    return PORT_BASE + job_id % 1000 * 10 + step_id % 10


def several_tasks_per_node(step: SlurmStep) -> bool:
    """True when srun started more than one rankrun on some node: each would start its own
    ranks on it. rankrun wants one task per node, and starts the ranks itself."""
    return max(step.tasks_per_node) > 1


def srun_command(step: SlurmStep, args: Sequence[str]) -> str:
    """The srun line that runs ``rankrun args`` once on each of the step's nodes."""
    return shlex.join(["srun", f"-N{step.nnodes}", "--ntasks-per-node=1", "rankrun", *args])


def _first_node(env: Mapping[str, str], nnodes: int) -> str:
    name = "SLURM_STEP_NODELIST"
    if name not in env and env.get("SLURM_JOB_NUM_NODES") == str(nnodes):
        name = "SLURM_JOB_NODELIST"  # the step spans the whole job
    if not env.get(name):
        raise ValueError("a Slurm step without SLURM_STEP_NODELIST")
    try:
        return first_host(env[name])
    except ValueError as e:
        raise ValueError(f"{name}: {e}") from None


def _digits(text: str) -> bool:
    return text.isascii() and text.isdigit()


def _int(env: Mapping[str, str], *names: str) -> int:
    for name in names:
        if name in env:
            if not _digits(env[name]):
                raise ValueError(f"{name}={env[name]!r} is not a number")
            return int(env[name])
    raise ValueError(f"a Slurm step without {' or '.join(names)}")


def _tasks_per_node(env: Mapping[str, str], nnodes: int) -> tuple[int, ...]:
    """``2(x3),1`` is 2, 2, 2, 1. The step's own list first: srun rewrites the others."""
    for name in ("SLURM_STEP_TASKS_PER_NODE", "SLURM_TASKS_PER_NODE"):
        if name in env:
            counts: list[int] = []
            for part in env[name].split(","):
                match = _TASKS.fullmatch(part)
                if not match:
                    raise ValueError(f"{name}={env[name]!r}: cannot read {part!r}")
                counts += [int(match[1])] * int(match[2] or 1)
            if len(counts) != nnodes:
                raise ValueError(f"{name}={env[name]!r} does not name {nnodes} nodes")
            return tuple(counts)
    return (_int(env, "SLURM_NTASKS_PER_NODE"),) * nnodes
