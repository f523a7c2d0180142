"""Every user mistake: one line on stderr, exit code 2, no traceback, nothing spawned."""

from __future__ import annotations

import os
import shutil
import socket
from collections.abc import Iterator

import pytest
from conftest import Runs

from rankrun.plan.ports import free_port

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
    "procs_not_a_number": (["--nproc-per-node", "many"], "give a number, or auto, cpu or gpu"),
    "procs_xpu": (["--nproc-per-node", "xpu"], "rankrun does not count XPUs; give their number"),
    "procs_gpu_without_gpus": (["--nproc-per-node", "gpu"], "--nproc-per-node gpu"),
    "procs_past_the_open_files_limit": (["--nproc-per-node", "100000"], "open files"),
    "grace_infinite": (["--shutdown-timeout", "inf"], "--shutdown-timeout inf is outside"),
    "grace_too_long": (["--shutdown-timeout", "1e7"], "is outside 0..86400 seconds"),
    "module_and_no_python": (["-m", "--no-python"], "contradict each other"),
    "filter_no_such_rank": (
        ["--nproc-per-node", "2", "--local-ranks-filter", "9"],
        "local rank 9 does not exist with 2 rank(s)",
    ),
    "redirect_no_such_rank": (["--nproc-per-node", "2", "-r", "5:3"], "local rank 5 does not"),
    "empty_master_addr": (["--master-addr", ""], "--master-addr is empty"),
    "unknown_master_addr": (["--master-addr", "no-such-host.invalid"], "no such host"),
    "run_id_climbs_out": (["--run-id", "../x"], "--run-id '../x'"),
    "run_id_absolute": (["--run-id", "/tmp/x"], "--run-id '/tmp/x'"),
    "log_dir_not_utf8": (["--log-dir", "logs\udcff"], "is not valid UTF-8"),
    "summary_is_a_directory": (["--summary-json", "."], "is a directory"),
    "summary_in_no_directory": (["--summary-json", "nodir/s.json"], "nodir does not exist"),
    "summary_name_too_long": (["--summary-json", "s" * 300], "the file name is 300 bytes long"),
    "etcd_backend": (["--rdzv-backend", "etcd"], "invalid choice"),
    "endpoint_port": (["--rdzv-endpoint", "host:abc"], "give HOST:PORT"),
    "endpoint_bare_ipv6": (
        ["--rdzv-endpoint", "::1"],
        "'::1': put an IPv6 address in brackets, as [::1]:PORT",
    ),
    "endpoint_open_bracket": (
        ["--rdzv-endpoint", "[::1"],
        "'[::1': close the bracket, as [::1]:PORT",
    ),
    "endpoint_no_host": (
        ["--rdzv-endpoint", ":32001"],
        "--rdzv-endpoint ':32001': name node 0's host",
    ),
    "endpoint_unknown_host": (
        ["--rdzv-endpoint", "no-such-host.invalid:29400"],
        "--rdzv-endpoint no-such-host.invalid: no such host",
    ),
    "rdzv_conf": (["--rdzv-conf", "join_timeout"], "give key=value pairs"),
    "stall_timeout_0": (["--stall-timeout", "0"], "--stall-timeout 0 is outside"),
    "port_0_multinode": (["--nnodes", "2", "--master_port", "0"], "--master-port 0 needs one"),
    "negative_grace": (["--shutdown-timeout", "-1"], "--shutdown-timeout -1 is outside"),
    "negative_restarts": (["--max-restarts", "-1"], "--max-restarts must be 0 or more"),
    "standalone_multinode": (["--standalone", "--nnodes", "2"], "--standalone runs one node"),
    "unknown_flag": (["--nproc-per-nodes", "2"], "unrecognized arguments"),
    "misspelt_flag": (
        ["--nprc", "2"],
        "unrecognized arguments: --nprc; did you mean --nproc-per-node? (see rankrun --help)",
    ),
    "no_such_flag": (["--frobnicate", "2"], "unrecognized arguments: --frobnicate (see"),
    "ambiguous_abbreviation": (["--no", "2"], "ambiguous option"),
}


@pytest.mark.parametrize("case", CASES)
def test_bad_flags(runs: Runs, case: str) -> None:
    flags, message = CASES[case]
    runs.script("rank.sh", MARKING_RANK)
    _assert_usage_error(runs, [*flags, "./rank.sh"], message)


@pytest.mark.parametrize("meet", ["--master-port", "--rdzv-endpoint"])
def test_static_rendezvous_across_nodes_needs_a_node_rank(runs: Runs, meet: str) -> None:
    # torchrun's static rendezvous would take every such node for node 0 (its default).
    runs.script("rank.sh", MARKING_RANK)
    port = free_port()
    where = f"127.0.0.1:{port}" if meet == "--rdzv-endpoint" else str(port)
    _assert_usage_error(
        runs,
        ["--nnodes", "2", meet, where, "--rdzv-timeout", "2", "./rank.sh"],
        "--nnodes 2 with the static rendezvous (the default) needs --node-rank on every node, "
        "0 to 1: add --node-rank to each node's command, or pass --rdzv-backend c10d",
    )


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
        ("fifo", None, False, "is not a regular file"),
        ("/dev/null", None, False, "is not a regular file"),
        ("empty.sh", "", True, "is empty"),
        ("program", None, False, "is a program without its run bit"),
    ],
)
def test_scripts_that_cannot_run(
    runs: Runs, name: str, body: str | None, executable: bool, message: str
) -> None:
    if name == "adir":
        (runs.workdir / name).mkdir()
    elif name == "fifo":
        os.mkfifo(runs.workdir / name)  # reading it for a #! line would block for ever
    elif name == "program":
        shutil.copy("/bin/true", runs.workdir / name)
        (runs.workdir / name).chmod(0o644)
    elif body is not None:
        path = runs.workdir / name
        path.write_text(body)
        path.chmod(0o755 if executable else 0o644)
    _assert_usage_error(runs, [name], message)


def test_a_script_named_with_a_newline_is_one_quoted_line(runs: Runs) -> None:
    _assert_usage_error(runs, ["no\nsuch.py"], "training script 'no'$'\\n''such.py' does not")


def test_no_python_program_not_on_path(runs: Runs) -> None:
    _assert_usage_error(runs, ["--no-python", "no-such-program-xyz"], "not found on PATH")


@pytest.mark.parametrize("args", [[], ["--nproc_per_node", "2"]])
def test_missing_script_argument(runs: Runs, args: list[str]) -> None:
    message = "no training script: give one, as rankrun [FLAGS] train.py [ARGS]"
    _assert_usage_error(runs, args, message)


def test_a_log_dir_that_cannot_be_made_is_one_line_before_any_rank(runs: Runs) -> None:
    # /proc looks writable to root; only making the directory tells.
    runs.script("rank.sh", MARKING_RANK)
    _assert_usage_error(runs, ["--log-dir", "/proc/rankrun-logs", "./rank.sh"], "cannot create")


def test_run_id_naming_a_file_in_the_log_dir(runs: Runs) -> None:
    (runs.workdir / "logs").mkdir()
    (runs.workdir / "logs" / "exp").write_text("not a directory")
    runs.script("rank.sh", MARKING_RANK)
    args = ["--log-dir", "logs", "--run-id", "exp", "./rank.sh"]
    _assert_usage_error(runs, args, "exists and is not a directory")


def _assert_usage_error(runs: Runs, args: list[str], message: str) -> None:
    result = runs.run(*args)
    assert result.returncode == 2
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("rankrun: error: ")
    assert message in lines[0]
    assert not list(runs.workdir.glob("ran.*")), "a rank ran despite the bad input"


def test_port_held_only_over_ipv6_counts_as_in_use(runs: Runs) -> None:
    with socket.socket(socket.AF_INET6) as s:
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        s.bind(("::1", 0))
        s.listen()
        runs.script("rank.sh", MARKING_RANK)
        _assert_usage_error(
            runs, ["--master-port", str(s.getsockname()[1]), "./rank.sh"], "already in use"
        )
