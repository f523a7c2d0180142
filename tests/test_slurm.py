"""rankrun under srun, on a real two-node Slurm cluster (bash tests/slurm/cluster.sh start).

Both nodes are this host, so the tests' files are shared, and the leftovers check sees every
process: srun passes its environment, RANKRUN_TEST_TAG included, to each task and so to every
rank. The cluster's slurmstepd tracks a step's processes with proctrack/linuxproc: it signals
every descendant of the step, ranks in their own sessions included.

Without a cluster these tests skip; .ci/run starts one, and fails if it can't.
"""

from __future__ import annotations

import re
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import Runs, wait_gone
from test_deformable_detr import write_config_and_main
from test_slurm_env import cluster_up

from rankrun.cli.slurm import master_port

pytest.importorskip("torch")

pytestmark = [
    pytest.mark.skipif(
        not cluster_up(),
        reason="no Slurm cluster: needs a controller with two idle nodes, as "
        "`bash tests/slurm/cluster.sh start` (root) makes",
    ),
    pytest.mark.slow,  # a real cluster: every test here takes seconds
]

# A gloo rank: all_reduce across the nodes, say where it ran, then fail, hold, or finish.
RANK = """
import os, signal, subprocess, sys, time, traceback

rank = int(os.environ["RANK"])


def note(what, text=""):
    # Whole when seen. Under srun a signal may come twice (from slurmstepd, and forwarded by
    # rankrun), the second inside this handler: each call writes its own file.
    tmp = f"tmp.{what}.{rank}.{time.monotonic_ns()}"
    with open(tmp, "w") as f:
        f.write(text or f"{time.time():.3f}")
    os.replace(tmp, f"{what}.{rank}")


def on_term(signum, frame):
    note("term")
    time.sleep(2)  # a checkpoint
    note("saved")
    sys.exit(0)


if os.environ.get("ON_SIGNALS"):
    signal.signal(signal.SIGUSR1, lambda signum, frame: note("usr1"))
    signal.signal(signal.SIGTERM, on_term)
import torch, torch.distributed as dist  # after the handlers: this takes about 2 s

dist.init_process_group("gloo")
total = torch.tensor([rank + 1.0])
dist.all_reduce(total)
helper = subprocess.Popen(["sleep", "300"]) if os.environ.get("HELPER") else None
note("up", f"{os.environ['SLURMD_NODENAME']} {total.item():g} {os.getpid()} "
           f"{helper.pid if helper else ''}")
if os.environ.get("FAIL_RANK") == str(rank):
    time.sleep(0.3)
    try:
        raise ValueError("shard 7 is corrupt")
    except ValueError:
        traceback.print_exc()
    sys.exit(7)
if os.environ.get("HOLD"):
    while True:
        time.sleep(0.1)
dist.barrier()
dist.destroy_process_group()
"""


class Step:
    """``srun ... rankrun ...`` from the test's directory, under a job name of its own."""

    def __init__(self, runs: Runs) -> None:
        self.runs = runs
        self.name = f"rankrun-test-{uuid.uuid4().hex[:12]}"
        self.srun: subprocess.Popen[str] | None = None

    def argv(self, shape: list[str], *args: str) -> list[str]:
        """``shape``: srun's flags. --immediate: a test fails, never waits, when the nodes are
        busy; -t 5: a backstop, which a later -t in ``shape`` replaces."""
        return ["srun", "--immediate=60", "-t", "5", "-J", self.name, "--label", *shape,
                *self.runs.argv(*args)]  # fmt: skip

    def run(self, shape: list[str], *args: str, timeout: float = 120) -> tuple[int, str]:
        """srun's exit code, and its stdout and stderr together (each line has its task)."""
        self.start(shape, *args)
        return self.finish(timeout)

    def start(self, shape: list[str], *args: str) -> subprocess.Popen[str]:
        self.srun = subprocess.Popen(
            self.argv(shape, *args),
            env=self.runs.env,
            cwd=self.runs.workdir,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        return self.srun

    def scancel(self, *flags: str) -> None:
        subprocess.run(["scancel", *flags, "--name", self.name], check=True, timeout=30)

    def finish(self, timeout: float = 60) -> tuple[int, str]:
        assert self.srun is not None
        out, _ = self.srun.communicate(timeout=timeout)
        return self.srun.returncode, out


@pytest.fixture
def step(runs: Runs) -> Iterator[Step]:
    runs.script("rank.py", RANK, executable=False)
    made = Step(runs)
    yield made
    # Whatever a failed test left running is cancelled (a killed srun leaves its step running),
    # and gone, before the leftovers check.
    subprocess.run(["scancel", "--name", made.name], timeout=30, check=False)
    if made.srun is not None:
        try:
            made.srun.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            made.srun.kill()
            made.srun.communicate()
    wait_gone(runs.tag, timeout=30)


def task_lines(out: str, task: int) -> list[str]:
    """rankrun's lines from one task of ``srun --label``."""
    prefix = f"{task}: rankrun: "
    return [line[len(prefix) :] for line in out.splitlines() if line.lstrip().startswith(prefix)]


def ups(workdir: Path) -> list[list[str]]:
    """What each rank wrote once up, in rank order: node, sum, pid, helper pid."""
    return [p.read_text().split() for p in sorted(workdir.glob("up.*"))]


def read_times(workdir: Path, what: str) -> dict[int, float]:
    found = {}
    for path in workdir.glob(f"{what}.*"):
        found[int(path.suffix[1:])] = float(path.read_text().split()[0])
    return found


TWO_NODES = ["-N2", "--ntasks-per-node=1"]


def test_srun_trains_across_both_nodes(runs: Runs, step: Step) -> None:
    code, out = step.run(TWO_NODES, "--nproc-per-node", "2", "rank.py")
    assert code == 0, out
    assert [up[:2] for up in ups(runs.workdir)] == [
        ["node1", "10"], ["node1", "10"], ["node2", "10"], ["node2", "10"],
    ]  # fmt: skip
    notes = [line for task in (0, 1) for line in task_lines(out, task) if "from Slurm" in line]
    assert len(notes) == 2, out
    found = re.match(r"from Slurm job (\d+) step 0: ", notes[0])
    assert found, notes
    job = int(found[1])
    for node, note in enumerate(notes):
        assert note == (
            f"from Slurm job {job} step 0: --nnodes 2 --node-rank {node} --master-addr node1 "
            f"--master-port {master_port(job, 0)} --run-id slurm-{job}.0"
        )


def test_a_failing_rank_on_node_2_ends_the_job_on_both(runs: Runs, step: Step) -> None:
    runs.env.update(FAIL_RANK="3", HOLD="1")
    started = time.monotonic()
    code, out = step.run(TWO_NODES, "--nproc-per-node", "2", "rank.py")
    took = time.monotonic() - started
    assert code == 7, out  # srun exits with the largest of its tasks' codes
    for node, task in (("node1", 0), ("node2", 1)):
        assert re.search(rf"srun: error: {node}: task {task}: Exited with exit code 7$", out, re.M)
    assert out.count("root cause:") == 1, out  # one report, on node 0
    report = "\n".join(task_lines(out, 0))
    report = report[report.index("root cause:") :]
    assert report.startswith("root cause: rank 3 (local rank 1, node 1, host "), out
    assert "ValueError: shard 7 is corrupt" in report
    assert re.search(r"^node 0 \(.*\): terminated \(SIGTERM\): 0, 1$", report, re.M), report
    assert report.endswith("exit code 7")
    assert "the job ended: rank 3 on node 1" in task_lines(out, 1)[-1]
    assert took < 60, out  # the blocked ranks were ended, not waited for


def test_scancel_ends_every_rank_and_leaves_nothing(runs: Runs, step: Step) -> None:
    runs.env.update(HOLD="1", HELPER="1")
    step.start(TWO_NODES, "--nproc-per-node", "2", "rank.py")
    runs.wait_for_files("up.*", 4, timeout=90)
    pids = [int(pid) for up in ups(runs.workdir) for pid in up[2:]]
    assert len(pids) == 8  # each rank and its helper
    step.scancel()
    code, out = step.finish(timeout=60)
    assert code != 0, out
    assert "CANCELLED" in out
    assert wait_gone(runs.tag, timeout=20) == []


def test_preemption_signal_then_scancel_reach_every_rank(runs: Runs, step: Step) -> None:
    """`scancel --signal=USR1` tears nothing down; the SIGTERM of `scancel` leaves each rank
    the time to save a checkpoint."""
    runs.env.update(HOLD="1", ON_SIGNALS="1")
    step.start(TWO_NODES, "--nproc-per-node", "2", "rank.py")
    runs.wait_for_files("up.*", 4, timeout=90)
    step.scancel("--signal=USR1")
    runs.wait_for_files("usr1.*", 4, timeout=30)
    time.sleep(1)
    assert step.srun is not None and step.srun.poll() is None
    assert not list(runs.workdir.glob("term.*"))
    step.scancel()
    code, out = step.finish(timeout=60)
    assert "forwarded SIGUSR1 to 2 rank group(s)" in "\n".join(task_lines(out, 0))
    assert sorted(read_times(runs.workdir, "saved")) == [0, 1, 2, 3], out
    assert code == 143, out


def test_a_time_limit_signals_every_rank_and_leaves_it_its_grace(runs: Runs, step: Step) -> None:
    """`srun -t 1 --signal=USR1@10`: USR1 before the limit, then at the limit SIGTERM, then
    SIGKILL KillWait (5 s here) later. slurmctld looks at limits every 30 s, and sends the
    warning as soon as it finds it due within 30 s more: USR1 comes 10 to 40 s before the
    end (20 to 50 s into the step); the limit, 60 to 90 s in. Slurm 22.05 sends the SIGTERM
    twice, a few ms apart, to every process of the step."""
    runs.env.update(HOLD="1", ON_SIGNALS="1")
    shape = [*TWO_NODES, "-t", "1", "--signal=USR1@10"]
    code, out = step.run(shape, "--nproc-per-node", "2", "rank.py", timeout=180)
    assert "DUE TO TIME LIMIT" in out, out
    usr1, term = read_times(runs.workdir, "usr1"), read_times(runs.workdir, "term")
    assert sorted(usr1) == [0, 1, 2, 3], out
    assert sorted(term) == [0, 1, 2, 3], out
    assert max(usr1.values()) < min(term.values())
    assert sorted(read_times(runs.workdir, "saved")) == [0, 1, 2, 3], out
    assert code == 143, out


def test_the_deformable_detr_config_runs_through_srun(runs: Runs, step: Step) -> None:
    write_config_and_main(runs)
    shape = ["-N2", "--ntasks-per-node=1"]
    args = ["--nproc-per-node", "2", "./configs/r50_deformable_detr.sh", "--epochs", "3"]
    code, out = step.run(shape, *args)
    assert code == 0, out
    outputs = sorted((runs.workdir / "exps/r50_deformable_detr").iterdir())
    assert [p.read_text() for p in outputs] == [
        "node1 0 4 3 10", "node1 1 4 3 10", "node2 0 4 3 10", "node2 1 4 3 10",
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("shape", "suggested", "tasks"),
    [
        (["-N1", "--ntasks-per-node=2"], "srun -N1 --ntasks-per-node=1", 2),
        (["-N2", "-n3"], "srun -N2 --ntasks-per-node=1", 3),  # 2 tasks on node1, 1 on node2
    ],
)
def test_several_tasks_per_node_is_one_line_with_the_right_srun(
    runs: Runs, step: Step, shape: list[str], suggested: str, tasks: int
) -> None:
    code, out = step.run(shape, "--nproc-per-node", "2", "rank.py", timeout=60)
    assert code == 2, out
    errors = [line for task in range(tasks) for line in task_lines(out, task)]
    assert len(errors) == tasks, out  # each task: one line, and the same one
    assert set(errors) == {
        f"error: srun started 2 rankruns on one node, and each starts every rank of that "
        f"node: run one per node, as {suggested} rankrun --nproc-per-node 2 rank.py"
    }
    assert not list(runs.workdir.glob("up.*")), "no rank started"
