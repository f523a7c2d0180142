"""The environment contract of every rank: torch.distributed.launch's, torchrun's, and nothing
else changed."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from conftest import Runs

from rankrun.plan.ports import free_port

DUMP_ENV = 'python3 -c "import json, os; print(json.dumps(dict(os.environ)))" > "env.$RANK"\n'


def _envs(runs: Runs, count: int) -> dict[int, dict[str, str]]:
    files = runs.wait_for_files("env.*", count, timeout=5)
    return {int(f.suffix[1:]): json.loads(f.read_text()) for f in files}


@pytest.mark.slow
def test_second_node_of_two_gets_the_launch_and_torchrun_contract(runs: Runs) -> None:
    runs.script("rank.sh", DUMP_ENV)
    runs.env["SOME_USER_VAR"] = "kept"
    port = str(free_port())
    common = ["--nnodes", "2", "--nproc_per_node", "3", "--master_addr", "127.0.0.1",
              "--master_port", port, "--max-restarts", "0", "--run-id", "job7",
              "./rank.sh"]  # fmt: skip
    node0 = runs.start("--node_rank", "0", *common)
    result = runs.run("--node_rank", "1", *common)
    node0.communicate(timeout=60)
    assert (result.returncode, node0.returncode) == (0, 0), result.stderr
    envs = _envs(runs, 6)
    omp = max(1, len(os.sched_getaffinity(0)) // 3)  # the usable CPUs shared, at least 1
    for local_rank in range(3):
        env = envs[3 + local_rank]
        assert {k: env[k] for k in EXPECTED} == {
            **EXPECTED,
            "RANK": str(3 + local_rank),
            "LOCAL_RANK": str(local_rank),
            "ROLE_RANK": str(3 + local_rank),
        }
        assert env["MASTER_PORT"] == envs[0]["MASTER_PORT"] != port, "the attempt's own store"
        assert env["TORCHELASTIC_USE_AGENT_STORE"] == "True"
        assert env["SOME_USER_VAR"] == "kept"
        assert env["OMP_NUM_THREADS"] == str(omp)
    assert f"OMP_NUM_THREADS={omp} for each rank" in result.stderr


EXPECTED = {
    "MASTER_ADDR": "127.0.0.1",
    "WORLD_SIZE": "6",
    "RANK": "",
    "LOCAL_RANK": "",
    "LOCAL_WORLD_SIZE": "3",
    "GROUP_RANK": "1",
    "GROUP_WORLD_SIZE": "2",
    "ROLE_RANK": "",
    "ROLE_NAME": "default",
    "ROLE_WORLD_SIZE": "6",
    "TORCHELASTIC_RESTART_COUNT": "0",
    "TORCHELASTIC_MAX_RESTARTS": "0",
    "TORCHELASTIC_RUN_ID": "job7",
    "TORCH_NCCL_ASYNC_ERROR_HANDLING": "1",
    "PYTHONUNBUFFERED": "1",
}


def test_user_settings_win_where_the_contract_allows(runs: Runs) -> None:
    runs.script("rank.sh", DUMP_ENV)
    runs.env.update(OMP_NUM_THREADS="5", PYTHONUNBUFFERED="", TORCH_NCCL_ASYNC_ERROR_HANDLING="0")
    result = runs.gang(2, "./rank.sh")
    assert result.returncode == 0, result.stderr
    env = _envs(runs, 2)[1]
    assert (env["OMP_NUM_THREADS"], env["PYTHONUNBUFFERED"]) == ("5", "")
    assert env["TORCH_NCCL_ASYNC_ERROR_HANDLING"] == "0"
    assert "OMP_NUM_THREADS" not in result.stderr


def test_single_rank_leaves_omp_alone(runs: Runs) -> None:
    runs.script("rank.sh", DUMP_ENV)
    result = runs.run("--master_port", "0", "./rank.sh")
    assert result.returncode == 0, result.stderr
    assert "OMP_NUM_THREADS" not in _envs(runs, 1)[0]


def test_port_0_and_standalone_pick_a_free_port(runs: Runs) -> None:
    runs.script("rank.sh", DUMP_ENV)
    for flag in ("--master_port=0", "--standalone"):
        result = runs.run(flag, "--nproc-per-node", "2", "./rank.sh")
        assert result.returncode == 0, result.stderr
        envs = _envs(runs, 2)
        assert envs[0]["MASTER_PORT"] == envs[1]["MASTER_PORT"] != "29500"
        assert 0 < int(envs[0]["MASTER_PORT"]) < 65536
        for f in runs.workdir.glob("env.*"):
            f.unlink()


@pytest.mark.slow
def test_torchruns_fixed_nnodes_range_is_accepted(runs: Runs) -> None:
    runs.script("rank.sh", DUMP_ENV)
    port = str(free_port())
    node0 = runs.start("--nnodes", "2:2", "--node_rank", "0", "--master_port", port, "./rank.sh")
    result = runs.run("--nnodes", "2:2", "--node_rank", "1", "--master_port", port, "./rank.sh")
    node0.communicate(timeout=60)
    assert (result.returncode, node0.returncode) == (0, 0), result.stderr
    assert _envs(runs, 2)[1]["GROUP_WORLD_SIZE"] == "2"


# Rank 0 holds MASTER_PORT, as a store would, until rank 0 of both runs holds its own.
PORT_HOLDING_RANK = """
import os, pathlib, socket, sys, time
run, port = sys.argv[-1], os.environ["MASTER_PORT"]
pathlib.Path(f"port.{run}.{os.environ['RANK']}").write_text(port)
if os.environ["RANK"] == "0":
    held = socket.socket()
    held.bind(("", int(port)))
    held.listen()
    pathlib.Path(f"held.{run}").touch()
    deadline = time.monotonic() + 20
    while len(list(pathlib.Path().glob("held.*"))) < 2:
        assert time.monotonic() < deadline, "the other run's rank 0 never held its port"
        time.sleep(0.02)
"""


@pytest.mark.parametrize("module", ["rankrun", "rankrun.launch"])
def test_two_single_node_runs_without_a_port_each_pick_a_free_one(runs: Runs, module: str) -> None:
    # As torch 2.13's torchrun and torch.distributed.launch do, where 29500 made them collide.
    runs.script("holder.py", PORT_HOLDING_RANK, executable=False)
    for name in ("MASTER_PORT", "PET_MASTER_PORT"):
        runs.env.pop(name, None)
    launchers = [
        subprocess.Popen([sys.executable, "-m", module, "--nproc-per-node", "2", "holder.py", run],
                         env=runs.env, cwd=runs.workdir, stderr=subprocess.PIPE, text=True)
        for run in ("a", "b")
    ]  # fmt: skip
    errors = [launcher.communicate(timeout=60)[1] for launcher in launchers]
    assert [launcher.returncode for launcher in launchers] == [0, 0], errors
    ports = {p.name: p.read_text() for p in runs.workdir.glob("port.*")}
    assert ports["port.a.0"] == ports["port.a.1"] != ports["port.b.0"] == ports["port.b.1"]
    assert "29500" not in ports.values()


def test_a_port_given_keeps_its_meaning(runs: Runs) -> None:
    runs.script("rank.sh", DUMP_ENV)
    given = [str(free_port()) for _ in range(3)]
    runs.env["MASTER_PORT"] = given[2]
    runs.env["PET_MASTER_PORT"] = given[1]
    for flags, port in ((["--master-port", given[0]], given[0]), ([], given[1])):
        assert runs.run(*flags, "./rank.sh").returncode == 0
        assert _envs(runs, 1)[0]["MASTER_PORT"] == port
        (runs.workdir / "env.0").unlink()
    del runs.env["PET_MASTER_PORT"]
    assert runs.run("./rank.sh").returncode == 0
    assert _envs(runs, 1)[0]["MASTER_PORT"] == given[2]
    # Across nodes, torchrun's 29500 stays the port no one gave.
    del runs.env["MASTER_PORT"]
    shown = runs.run("--dry-run", "--nnodes", "2", "--node-rank", "1", "./rank.sh").stdout
    assert " MASTER_PORT=29500 " in shown
