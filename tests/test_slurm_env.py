"""Slurm step environments (rankrun.cli.slurm): against what srun and sbatch set, and a real
two-node cluster (bash tests/slurm/cluster.sh start) when one answers.

The env dicts below are what srun and sbatch really set on that cluster (Slurm 22.05), cut to
the SLURM_* variables rankrun could read. Hostlists are tests/test_hostlist.py; rankrun under
srun is tests/test_slurm.py.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import wait_until

from rankrun.base.errors import UsageError
from rankrun.cli.command_line import parse
from rankrun.cli.slurm import (
    SlurmStep,
    master_port,
    several_tasks_per_node,
    slurm_step,
    srun_command,
)

# --- slurm.py on environments seen on the test cluster ---------------------------------------

# `sbatch -N2 --ntasks-per-node=1 job.sh`: the batch script, on node1 only.
BATCH = {
    "SLURM_JOB_ID": "2",
    "SLURM_JOBID": "2",
    "SLURM_JOB_NODELIST": "node[1-2]",
    "SLURM_JOB_NUM_NODES": "2",
    "SLURM_NNODES": "2",
    "SLURM_NODELIST": "node[1-2]",
    "SLURM_NODEID": "0",
    "SLURM_PROCID": "0",
    "SLURM_LOCALID": "0",
    "SLURM_NTASKS": "2",
    "SLURM_NTASKS_PER_NODE": "1",
    "SLURM_TASKS_PER_NODE": "1(x2)",
    "SLURM_CPUS_ON_NODE": "1",
}
# `srun -N2 --ntasks-per-node=1 ...`, the task on node2.
SRUN_NODE2 = {
    **BATCH,
    "SLURM_JOB_ID": "1",
    "SLURM_JOBID": "1",
    "SLURM_NODEID": "1",
    "SLURM_PROCID": "1",
    "SLURM_STEP_ID": "0",
    "SLURM_STEPID": "0",
    "SLURM_STEP_NODELIST": "node[1-2]",
    "SLURM_STEP_NUM_NODES": "2",
    "SLURM_STEP_NUM_TASKS": "2",
    "SLURM_STEP_TASKS_PER_NODE": "1(x2)",
}
# `srun -N1 -w node2 ...` inside the two-node batch job above: the job's variables stay.
PART_STEP = {
    **BATCH,
    "SLURM_NNODES": "1",
    "SLURM_NTASKS": "1",
    "SLURM_TASKS_PER_NODE": "1",
    "SLURM_STEP_ID": "0",
    "SLURM_STEPID": "0",
    "SLURM_STEP_NODELIST": "node2",
    "SLURM_STEP_NUM_NODES": "1",
    "SLURM_STEP_NUM_TASKS": "1",
    "SLURM_STEP_TASKS_PER_NODE": "1",
}


def test_outside_a_step_nothing_changes() -> None:
    assert slurm_step({}) is None
    assert slurm_step({"PATH": "/bin"}) is None
    assert slurm_step(BATCH) is None  # runs once, on the first node: not a step
    # Slurm's batch, extern and interactive steps have ids from 0xfffffff0 up.
    assert slurm_step({**SRUN_NODE2, "SLURM_STEP_ID": str(0xFFFFFFFA)}) is None


def test_an_srun_step() -> None:
    assert slurm_step(SRUN_NODE2) == SlurmStep(
        job_id=1,
        step_id=0,
        nnodes=2,
        node_rank=1,
        master_addr="node1",
        master_port=20010,
        tasks_per_node=(1, 1),
        gpus_on_node=None,
    )


def test_a_step_on_part_of_its_job_follows_the_step() -> None:
    step = slurm_step(PART_STEP)
    assert step is not None
    assert (step.nnodes, step.node_rank, step.master_addr) == (1, 0, "node2")


def test_older_variables_stand_in() -> None:
    env = {k: v for k, v in SRUN_NODE2.items() if not k.startswith("SLURM_STEP_")}
    step = slurm_step({**env, "SLURM_STEPID": "3", "SLURM_GPUS_ON_NODE": "8"})
    assert step is not None
    assert (step.step_id, step.nnodes, step.master_addr) == (3, 2, "node1")
    assert (step.tasks_per_node, step.gpus_on_node) == ((1, 1), 8)
    env.pop("SLURM_TASKS_PER_NODE")
    step = slurm_step({**env, "SLURM_STEPID": "3"})
    assert step is not None and step.tasks_per_node == (1, 1)  # from SLURM_NTASKS_PER_NODE
    # The job's node list stands in for the step's only where the step spans the job.
    with pytest.raises(ValueError, match="SLURM_STEP_NODELIST"):
        slurm_step({**env, "SLURM_STEPID": "3", "SLURM_NNODES": "1", "SLURM_NODEID": "0"})


def test_several_tasks_per_node() -> None:
    env = {**SRUN_NODE2, "SLURM_STEP_NUM_NODES": "4", "SLURM_STEP_NODELIST": "gpu[07-10]"}
    step = slurm_step({**env, "SLURM_STEP_TASKS_PER_NODE": "2(x3),1"})
    assert step is not None
    assert step.tasks_per_node == (2, 2, 2, 1)
    assert several_tasks_per_node(step)
    assert srun_command(step, ["train.py", "--lr", "0.1 x"]) == (
        "srun -N4 --ntasks-per-node=1 rankrun train.py --lr '0.1 x'"
    )
    step = slurm_step({**env, "SLURM_STEP_TASKS_PER_NODE": "1(x4)"})
    assert step is not None and not several_tasks_per_node(step)
    assert step.master_addr == "gpu07"


@pytest.mark.parametrize(
    "change",
    [
        {"SLURM_NODEID": "2"},
        {"SLURM_NODEID": "x"},
        {"SLURM_STEP_NUM_NODES": "²"},
        {"SLURM_STEP_TASKS_PER_NODE": "1(x3)"},
        {"SLURM_STEP_TASKS_PER_NODE": "1(2)"},
        {"SLURM_STEP_NODELIST": "node[1-"},
    ],
)
def test_a_step_that_contradicts_itself(change: dict[str, str]) -> None:
    with pytest.raises(ValueError):
        slurm_step({**SRUN_NODE2, **change})


def test_flags_win_and_what_they_set_is_not_read_from_the_step() -> None:
    env = {**SRUN_NODE2, "SLURM_STEP_NODELIST": "node[1-"}
    with pytest.raises(UsageError, match=r"inside Slurm: SLURM_STEP_NODELIST: hostlist 'node\[1-'"):
        parse(["train.py"], env)
    placed = parse(["--nnodes", "1", "--node-rank", "0", "--master-port", "29400", "x.py"], env)
    assert (placed.options.nnodes, placed.options.node_rank, placed.notes) == (1, 0, ())
    options = parse(["--master-addr", "head", "train.py"], env).options
    assert (options.nnodes, options.node_rank, options.master_addr) == (2, 1, "head")


def test_the_port_shows_job_and_step() -> None:
    assert master_port(4321, 2) == 23212
    assert master_port(999, 9) == 29999
    assert master_port(1000, 0) == 20000
    assert len({master_port(job, 0) for job in range(5000, 6000)}) == 1000


# --- the real cluster ------------------------------------------------------------------------


def cluster_up() -> bool:
    """Two idle nodes answer, as cluster.sh start leaves them. Asked cheaply first: without a
    config, scontrol and sinfo retry for 60 s; without a controller, sinfo for 9 s."""
    conf = os.environ.get("SLURM_CONF", "/etc/slurm/slurm.conf")
    if shutil.which("sinfo") is None or not os.path.exists(conf):
        return False
    try:
        ping = subprocess.run(["scontrol", "ping"], capture_output=True, text=True, timeout=10)
        if "is UP" not in ping.stdout:
            return False
        done = subprocess.run(
            ["sinfo", "-h", "-N", "-o", "%T"], capture_output=True, text=True, timeout=10
        )
    except subprocess.TimeoutExpired:
        return False
    return done.returncode == 0 and done.stdout.split().count("idle") >= 2


needs_cluster = pytest.mark.skipif(
    not cluster_up(),
    reason="no Slurm controller with two idle nodes (bash tests/slurm/cluster.sh start)",
)


def task_envs(output: str) -> dict[int, dict[str, str]]:
    """``srun --label env`` output, per task."""
    envs: dict[int, dict[str, str]] = {}
    for line in output.splitlines():
        task, _, var = line.partition(": ")
        name, eq, value = var.partition("=")
        if task.strip().isdigit() and eq and name.startswith("SLURM_"):
            envs.setdefault(int(task), {})[name] = value
    return envs


@needs_cluster
def test_a_real_step() -> None:
    done = subprocess.run(
        ["srun", "-N2", "--ntasks-per-node=1", "--immediate=20", "-t", "1", "--label", "env"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    envs = task_envs(done.stdout)
    assert sorted(envs) == [0, 1], done.stdout
    first, second = slurm_step(envs[0]), slurm_step(envs[1])
    assert first is not None and second is not None
    assert (first.node_rank, second.node_rank) == (0, 1)
    assert first.nnodes == second.nnodes == 2
    assert first.master_addr == second.master_addr == "node1"
    assert first.master_port == second.master_port == master_port(first.job_id, first.step_id)
    assert first.tasks_per_node == second.tasks_per_node == (1, 1)


@needs_cluster
def test_a_real_batch_script_is_not_a_step(tmp_path: Path) -> None:
    # Polled here: sbatch --wait polls every 2 to 10 s, and a batch job here starts 2-3 s
    # after it is submitted.
    (tmp_path / "job.sh").write_text("#!/bin/sh\nenv > env.tmp && mv env.tmp batch.env\n")
    submit = ["sbatch", "--parsable", "-N2", "--ntasks-per-node=1", "-t", "1", "-o", "/dev/null"]
    job = subprocess.run(
        [*submit, "job.sh"], cwd=tmp_path, capture_output=True, text=True, timeout=30, check=True
    ).stdout.strip()
    ran = lambda: (tmp_path / "batch.env").exists()  # noqa: E731
    if not wait_until(ran, 60, "the batch job", fail=False, every=0.1):
        subprocess.run(["scancel", job], timeout=30)
        pytest.fail(f"batch job {job} did not run within 60 s")
    lines = (tmp_path / "batch.env").read_text().splitlines()
    env = {name: value for name, _, value in (line.partition("=") for line in lines)}
    assert env["SLURM_NNODES"] == "2" and env["SLURM_PROCID"] == "0"  # it looks like a task...
    assert slurm_step(env) is None  # ...but is not one
