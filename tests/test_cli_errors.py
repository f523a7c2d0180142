"""Every user mistake: one line on stderr, exit code 2, no traceback, nothing spawned."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest
from conftest import Runs

# The script leaves a mark if anything runs it.
MARKING_RANK = "touch ran.$RANK\n"


@pytest.fixture
def listening_port() -> Iterator[int]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield s.getsockname()[1]


CASES = {
    "node_rank_too_high": (["--nnodes", "2", "--node_rank", "2"], "outside [0, 2)"),
    "node_rank_negative": (["--node-rank", "-1"], "outside [0, 1)"),
    "no_procs": (["--nproc_per_node", "0"], "--nproc-per-node must be at least 1"),
    "no_nodes": (["--nnodes", "0"], "--nnodes must be at least 1"),
    "elastic_nnodes": (["--nnodes", "1:4"], "elastic ranges are not supported"),
    "bad_nnodes": (["--nnodes", "two"], "invalid --nnodes"),
    "port_too_big": (["--master_port", "70000"], "outside 0..65535"),
    "port_not_a_number": (["--master_port", "abc"], "invalid int value"),
    "procs_not_a_number": (["--nproc-per-node", "auto"], "invalid int value"),
    "port_0_multinode": (["--nnodes", "2", "--master_port", "0"], "--master-port 0 needs one"),
    "negative_grace": (["--shutdown-timeout", "-1"], "--shutdown-timeout must be 0 or more"),
    "negative_restarts": (["--max-restarts", "-1"], "--max-restarts must be 0 or more"),
    "standalone_multinode": (["--standalone", "--nnodes", "2"], "--standalone runs one node"),
    "unknown_flag": (["--nproc_per_nod", "2"], "unrecognized arguments"),
}


@pytest.mark.parametrize("case", CASES)
def test_bad_flags(runs: Runs, case: str) -> None:
    flags, message = CASES[case]
    runs.script("rank.sh", MARKING_RANK)
    _assert_usage_error(runs, [*flags, "./rank.sh"], message)


def test_port_in_use_suggests_port_0(runs: Runs, listening_port: int) -> None:
    runs.script("rank.sh", MARKING_RANK)
    _assert_usage_error(
        runs, ["--master_port", str(listening_port), "./rank.sh"], "--master-port 0"
    )


@pytest.mark.parametrize(
    ("name", "body", "executable", "message"),
    [
        ("missing.sh", None, True, "does not exist"),
        ("plain.txt", "echo hi\n", False, "is not executable and has no #! line"),
        ("noshebang.run", "echo hi\n", True, "has no #! line"),
        ("badinterp.sh", "#!/no/such/shell\necho hi\n", False, "not an executable file"),
        ("adir", "", True, "is a directory"),
    ],
)
def test_scripts_that_cannot_run(
    runs: Runs, name: str, body: str | None, executable: bool, message: str
) -> None:
    if name == "adir":
        (runs.workdir / name).mkdir()
    elif body is not None:
        path = runs.workdir / name
        path.write_text(body)
        path.chmod(0o755 if executable else 0o644)
    _assert_usage_error(runs, [name], message)


def test_no_python_program_not_on_path(runs: Runs) -> None:
    _assert_usage_error(runs, ["--no-python", "no-such-program-xyz"], "not found on PATH")


def test_missing_script_argument(runs: Runs) -> None:
    _assert_usage_error(runs, ["--nproc_per_node", "2"], "training_script")


def _assert_usage_error(runs: Runs, args: list[str], message: str) -> None:
    result = runs.run(*args)
    assert result.returncode == 2
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("rankrun: error: ")
    assert message in lines[0]
    assert not list(runs.workdir.glob("ran.*")), "a rank ran despite the bad input"
