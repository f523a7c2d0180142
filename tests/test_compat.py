"""torchrun's and torch.distributed.launch's command lines run unchanged."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from conftest import Runs

ARGV_RANK = 'echo "$LOCAL_RANK $*" > "args.$RANK"\n'


def _outputs(runs: Runs, pattern: str) -> dict[str, str]:
    return {f.name: f.read_text().strip() for f in sorted(runs.workdir.glob(pattern))}


def test_abbreviated_flags_and_underscores_work_as_in_torchrun(runs: Runs) -> None:
    runs.script("rank.sh", "echo out\n")
    result = runs.run("--nproc_per_node=2", "--master-p=0", "--log-d", "logs", "--redirect=3",
                      "--run-id", "r", "./rank.sh")  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout == ""
    logs = sorted(runs.workdir.glob("logs/r/attempt_0/rank_*/stdout.log"))
    assert [p.read_text() for p in logs] == ["out\n", "out\n"]


def test_local_rank_macro_in_the_arguments(runs: Runs) -> None:
    runs.script("rank.sh", ARGV_RANK)
    assert runs.gang(2, "./rank.sh", "--gpu=${local_rank}", "x").returncode == 0
    assert _outputs(runs, "args.*") == {"args.0": "0 --gpu=0 x", "args.1": "1 --gpu=1 x"}


@pytest.mark.parametrize("use_env, expected", [(False, "0 --local_rank=0"), (True, "0")])
def test_local_rank_arg_as_torch_distributed_launch(
    runs: Runs, use_env: bool, expected: str
) -> None:
    runs.script("rank.sh", ARGV_RANK)
    flags = ["--use-env"] if use_env else []
    assert runs.gang(1, "--local-rank-arg", *flags, "./rank.sh").returncode == 0
    assert _outputs(runs, "args.*") == {"args.0": expected}


def test_python_m_rankrun_launch_takes_the_old_launchers_command_line(runs: Runs) -> None:
    runs.script("train.py", "import sys, os\nopen(f'args.{os.environ[\"RANK\"]}', 'w')"
                ".write(' '.join(sys.argv[1:]))\n", executable=False)  # fmt: skip
    argv = [sys.executable, "-m", "rankrun.launch", "--nproc_per_node=2", "--master_port=0",
            "train.py", "--lr", "0.1"]  # fmt: skip
    result = subprocess.run(argv, env=runs.env, cwd=runs.workdir, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert _outputs(runs, "args.*") == {
        "args.0": "--local_rank=0 --lr 0.1",
        "args.1": "--local_rank=1 --lr 0.1",
    }


def test_python_m_rankrun_launch_names_itself_and_its_local_rank_arg(runs: Runs) -> None:
    launch = [sys.executable, "-m", "rankrun.launch"]
    result = subprocess.run([*launch, "--help"], env=runs.env, capture_output=True, text=True)
    assert result.returncode == 0
    assert result.stdout.startswith("usage: python -m rankrun.launch ")
    assert "--local-rank-arg is on" in " ".join(result.stdout.split())
    result = subprocess.run([*launch, "--nprc", "2"], env=runs.env, capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stderr.endswith("(see python -m rankrun.launch --help)\n")


def test_version(runs: Runs) -> None:
    result = runs.run("--version")
    assert (result.returncode, result.stdout) == (0, "rankrun 0.3.0\n")


def test_a_py_script_runs_with_rankruns_python_whatever_its_shebang(runs: Runs) -> None:
    body = "#!/no/such/python3\nimport sys\nopen('exe', 'w').write(sys.executable)\n"
    runs.script("train.py", body,
                executable=False)  # fmt: skip
    assert runs.gang(1, "train.py").returncode == 0
    assert (runs.workdir / "exe").read_text() == sys.executable


def test_error_file_is_always_set_and_its_message_reaches_the_report(runs: Runs) -> None:
    runs.script("rank.sh", """
        echo "$TORCHELASTIC_ERROR_FILE" > "file.$RANK"
        [ "$RANK" = 1 ] || exec sleep 300
        printf '{"message": {"message": "RuntimeError: shard 7 is corrupt"}}' \\
            > "$TORCHELASTIC_ERROR_FILE"
        exit 1
    """)  # fmt: skip
    result = runs.gang(2, "./rank.sh")
    assert result.returncode == 1
    assert "rankrun:   RuntimeError: shard 7 is corrupt" in result.stderr
    paths = {f.read_text().strip() for f in runs.workdir.glob("file.*")}
    assert len(paths) == 2 and all(p.endswith(".json") for p in paths)
    assert not any(os.path.exists(os.path.dirname(p)) for p in paths), "removed at the end"


def test_rdzv_endpoint_names_the_master_address_and_port(runs: Runs) -> None:
    runs.script("rank.sh", 'echo "$MASTER_ADDR:$MASTER_PORT" > "addr.$RANK"\n')
    result = runs.run("--rdzv-backend", "c10d", "--rdzv-endpoint", "localhost:0",
                      "--nproc-per-node", "1", "./rank.sh")  # fmt: skip
    assert result.returncode == 0, result.stderr
    addr, port = _outputs(runs, "addr.*")["addr.0"].split(":")
    assert addr == "localhost" and int(port) > 0


def test_log_line_prefix_template(runs: Runs) -> None:
    runs.script("rank.sh", "echo hi\n")
    result = runs.gang(2, "--role", "trainer", "--log-line-prefix-template",
                       "[${role_name}-${rank}/${local_rank}]", "./rank.sh")  # fmt: skip
    assert sorted(result.stdout.splitlines()) == ["[trainer-0/0] hi", "[trainer-1/1] hi"]


def test_nproc_per_node_cpu_counts_the_usable_cores(runs: Runs) -> None:
    runs.script("rank.sh", "touch ran.$RANK\n")
    assert runs.gang(0, "--nproc-per-node", "cpu", "./rank.sh").returncode == 0
    assert len(list(runs.workdir.glob("ran.*"))) == len(os.sched_getaffinity(0))
