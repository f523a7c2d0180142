"""``--dry-run``: each rank's argv and the environment rankrun sets, as a real run would set
them, and nothing started; bad input is the same one line as for a real run."""

from __future__ import annotations

import json
import os
import re
import shlex

import pytest
from conftest import Runs
from test_cli_errors import CASES, MARKING_RANK, _assert_usage_error

DUMP_ENV = 'python3 -c "import json, os; print(json.dumps(dict(os.environ)))" > "env.$RANK"\n'
FLAGS = ["--nproc-per-node", "2", "--master-port", "0", "--run-id", "exp1", "--log-dir", "logs"]


def _table(runs: Runs, *args: str) -> list[tuple[str, str, str, dict[str, str]]]:
    return [(rank, local, argv, env) for rank, local, _, argv, env in _rows(runs, *args)]


def _rows(runs: Runs, *args: str) -> list[tuple[str, str, str, str, dict[str, str]]]:
    result = runs.run("--dry-run", *args)
    assert (result.returncode, result.stderr) == (0, ""), result.stderr
    lines = result.stdout.splitlines()
    header = ["RANK", "LOCAL", "CPUS", "ARGV", "ENVIRONMENT", "SET", "BY", "RANKRUN"]
    assert lines[0].split() == header
    rows = []
    for line in lines[1:]:
        rank, local, cpus, argv, env = re.split(r" {2,}", line, maxsplit=4)
        rows.append((rank, local, cpus, argv, dict(v.split("=", 1) for v in shlex.split(env))))
    return rows


def test_a_row_per_rank_with_its_argv_and_what_rankrun_sets(runs: Runs) -> None:
    runs.script("rank.sh", DUMP_ENV)
    for name in ("PYTHONUNBUFFERED", "TORCH_NCCL_ASYNC_ERROR_HANDLING", "PYTHONFAULTHANDLER"):
        runs.env.pop(name, None)
    runs.env.update(RANK="7", PYTHONFAULTHANDLER="", KEPT="as it was")

    rows = _table(runs, *FLAGS, "./rank.sh", "--lr", "3 e-4", "${local_rank}")

    assert [row[:3] for row in rows] == [
        ("0", "0", "./rank.sh --lr '3 e-4' 0"),
        ("1", "1", "./rank.sh --lr '3 e-4' 1"),
    ]
    for rank, (_, _, _, env) in enumerate(rows):
        assert env["RANK"] == env["LOCAL_RANK"] == str(rank)  # RANK=7 is overridden
        assert env["WORLD_SIZE"] == "2" and env["TORCHELASTIC_RUN_ID"] == "exp1"
        assert env["TORCHELASTIC_ERROR_FILE"] == f"logs/exp1/attempt_0/rank_{rank}/error.json"
        assert env["PYTHONUNBUFFERED"] == "1"
        assert "PYTHONFAULTHANDLER" not in env and "KEPT" not in env  # the user's, unchanged
        assert 0 < int(env["MASTER_PORT"]) < 65536
        token = env["RANKRUN_RUN_TOKEN"]
        assert env["TORCH_WORKER_SERVER_SOCKET"].endswith(f"/rankrun-{token}/w0-{rank}.sock")
    assert not list(runs.workdir.glob("env.*")), "a rank ran"
    assert not (runs.workdir / "logs").exists()

    # A real run sets the same, but for what each run picks anew.
    assert runs.run(*FLAGS, "./rank.sh").returncode == 0
    for rank, (_, _, _, shown) in enumerate(rows):
        real = json.loads((runs.workdir / f"env.{rank}").read_text())
        anew = ("MASTER_PORT", "RANKRUN_RUN_TOKEN", "TORCH_WORKER_SERVER_SOCKET")
        assert {k: real[k] for k in shown if k not in anew} == {
            k: v for k, v in shown.items() if k not in anew
        }


def test_without_a_log_dir_each_rank_still_shows_its_error_file(runs: Runs) -> None:
    runs.script("train.py", "print('hi')\n", executable=False)
    ((rank, local, argv, env),) = _table(runs, "--master-port", "0", "train.py")
    assert argv.endswith(" -u train.py") and (rank, local) == ("0", "0")
    token = env["RANKRUN_RUN_TOKEN"]
    assert env["TORCHELASTIC_ERROR_FILE"].endswith(f"/rankrun-{token}/error_0_0.json")


@pytest.mark.parametrize("case", CASES)
def test_bad_input_is_the_same_one_line_as_for_a_real_run(runs: Runs, case: str) -> None:
    flags, message = CASES[case]
    runs.script("rank.sh", MARKING_RANK)
    _assert_usage_error(runs, ["--dry-run", *flags, "./rank.sh"], message)


def test_a_missing_script_is_the_same_one_line(runs: Runs) -> None:
    _assert_usage_error(runs, ["--dry-run", "missing.sh"], "does not exist")


def test_cpu_bind_cores_shows_each_ranks_share_and_its_omp_threads(runs: Runs) -> None:
    runs.script("rank.sh", DUMP_ENV)
    runs.env.pop("OMP_NUM_THREADS", None)
    cpus = sorted(os.sched_getaffinity(0))
    rows = _rows(runs, "--nproc-per-node", "2", "--master-port", "0", "--cpu-bind", "cores",
                 "./rank.sh")  # fmt: skip
    shares = [row[2] for row in rows]
    if len(cpus) >= 2:
        assert shares[0] != shares[1] and "all" not in shares
    assert all(row[4]["OMP_NUM_THREADS"] >= "1" for row in rows)


def test_a_worker_server_socket_the_user_chose_stands(runs: Runs) -> None:
    runs.script("train.py", "print('hi')\n", executable=False)
    runs.env["TORCH_WORKER_SERVER_SOCKET"] = "/tmp/mine.sock"
    ((_, _, _, env),) = _table(runs, "--master-port", "0", "train.py")
    assert "TORCH_WORKER_SERVER_SOCKET" not in env, "the user's, unchanged"
