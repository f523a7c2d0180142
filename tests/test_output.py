"""Every line whole and labelled, logs byte-exact, and memory bounded whatever ranks write."""

from __future__ import annotations

import json
import os
import re
import subprocess
import time

import pytest
from conftest import Runs

# Writes lines in odd-sized pieces, so that lines cross the ranks' write() boundaries.
CHATTY_RANK = """
    import os, random, sys
    rank = os.environ["RANK"]
    rng = random.Random(int(rank))
    data = "".join(f"{rank} {i} {'x' * rng.randrange(200)}\\n" for i in range(20000))
    pos = 0
    while pos < len(data):
        step = rng.randrange(1, 5000)
        sys.stdout.write(data[pos:pos + step]); sys.stdout.flush()
        pos += step
"""


def test_lines_stay_whole_and_correctly_labelled_under_load(runs: Runs) -> None:
    runs.script("chatty.py", CHATTY_RANK, executable=False)
    result = runs.gang(4, "chatty.py")
    assert result.returncode == 0, result.stderr
    seen: dict[str, list[int]] = {str(r): [] for r in range(4)}
    for line in result.stdout.splitlines():
        m = re.fullmatch(r"\[rank(\d)\]: (\d) (\d+) x*", line)
        assert m and m[1] == m[2], f"torn or mislabelled line: {line[:80]!r}"
        seen[m[1]].append(int(m[3]))
    assert all(indices == list(range(20000)) for indices in seen.values())


def test_half_written_line_is_held_until_finished(runs: Runs) -> None:
    runs.script(
        "rank.sh",
        """
        if [ "$RANK" = 0 ]; then
            printf 'hello '; sleep 0.4; printf 'world\\n'
        else
            for i in 1 2 3 4 5 6 7 8; do echo "tick $i"; sleep 0.05; done
        fi
    """,
    )
    result = runs.gang(2, "./rank.sh")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert "[rank0]: hello world" in lines
    assert len(lines) == 9


def test_unterminated_last_line_is_printed_when_the_rank_exits(runs: Runs) -> None:
    runs.script("rank.sh", "printf 'no newline from %s' $RANK\n")
    result = runs.gang(2, "./rank.sh")
    assert sorted(result.stdout.splitlines()) == [
        "[rank0]: no newline from 0", "[rank1]: no newline from 1",
    ]  # fmt: skip


def test_stdout_and_stderr_stay_apart(runs: Runs) -> None:
    runs.script("rank.sh", "echo out $RANK; echo err $RANK >&2\n")
    result = runs.gang(2, "./rank.sh")
    assert sorted(result.stdout.splitlines()) == ["[rank0]: out 0", "[rank1]: out 1"]
    assert "[rank1]: err 1" in result.stderr.splitlines()
    assert "out" not in result.stderr


def test_torch_style_label_is_not_doubled(runs: Runs) -> None:
    runs.script("rank.sh", 'echo "[rank$RANK]: already labelled"; echo "[rank9]: other"\n')
    result = runs.gang(2, "./rank.sh")
    lines = result.stdout.splitlines()
    assert "[rank1]: already labelled" in lines
    assert "[rank1]: [rank9]: other" in lines


def test_single_rank_and_no_prefix_pass_output_through(runs: Runs) -> None:
    runs.script("rank.sh", "echo plain $RANK\n")
    result = runs.run("--master_port", "0", "./rank.sh")
    assert result.stdout == "plain 0\n"
    result = runs.gang(2, "--no-prefix", "./rank.sh")
    assert sorted(result.stdout.splitlines()) == ["plain 0", "plain 1"]


def test_timestamps(runs: Runs) -> None:
    runs.script("rank.sh", "echo hi\n")
    result = runs.gang(2, "--timestamps", "./rank.sh")
    for line in result.stdout.splitlines():
        assert re.fullmatch(r"\d\d:\d\d:\d\d\.\d{3} \[rank\d\]: hi", line), line


def test_filter_hides_ranks_from_the_console_but_not_from_their_logs(runs: Runs) -> None:
    runs.script("rank.sh", "echo out $RANK; echo err $RANK >&2\n")
    result = runs.gang(
        3,
        "--local-ranks-filter",
        "0,2",
        "--log-dir",
        "logs",
        "--run-id",
        "r",
        "./rank.sh",
    )
    assert sorted(result.stdout.splitlines()) == ["[rank0]: out 0", "[rank2]: out 2"]
    assert "err 1" not in result.stderr
    rank_dir = runs.workdir / "logs/r/attempt_0/rank_1"
    assert (rank_dir / "stdout.log").read_text() == "out 1\n"
    assert (rank_dir / "stderr.log").read_text() == "err 1\n"


BINARY_RANK = """
    import os, sys
    r = int(os.environ["RANK"])
    sys.stdout.buffer.write(bytes(range(256)) * (r + 1) + b"\\r\\n\\x00tail no newline")
    sys.stderr.buffer.write(b"err \\xff\\xfe " * (r + 2))
"""


def test_log_dir_layout_is_documented_and_byte_exact(runs: Runs) -> None:
    runs.script("bin.py", BINARY_RANK, executable=False)
    result = runs.gang(
        2,
        "--log-dir",
        "logs",
        "--run-id",
        "job1",
        "bin.py",
        errors="replace",
    )
    assert result.returncode == 0, result.stderr
    root = runs.workdir / "logs/job1"
    for r in range(2):
        rank_dir = root / "attempt_0" / f"rank_{r}"
        expected = bytes(range(256)) * (r + 1) + b"\r\n\x00tail no newline"
        assert (rank_dir / "stdout.log").read_bytes() == expected
        assert (rank_dir / "stderr.log").read_bytes() == b"err \xff\xfe " * (r + 2)
    assert "logs in logs/job1" in (root / "events.log").read_text()
    assert "[rank1]: " in result.stdout  # teed to the console too, labelled


def test_log_dir_keeps_each_attempt(runs: Runs) -> None:
    runs.script(
        "rank.sh",
        'echo "attempt $TORCHELASTIC_RESTART_COUNT"\n'
        '[ "$TORCHELASTIC_RESTART_COUNT" = 0 ] && exit 1; exit 0\n',
    )
    result = runs.run(
        "--master_port",
        "0",
        "--max-restarts",
        "1",
        "--log-dir",
        "logs",
        "--run-id",
        "j",
        "./rank.sh",
    )
    assert result.returncode == 0, result.stderr
    for k in range(2):
        assert (runs.workdir / f"logs/j/attempt_{k}/rank_0/stdout.log").read_text() == (
            f"attempt {k}\n"
        )
    events = (runs.workdir / "logs/j/events.log").read_text()
    assert "restart 1 of 1" in events


def test_redirects_send_to_files_only_and_tee_to_both(runs: Runs) -> None:
    runs.script("rank.sh", "echo out $RANK; echo err $RANK >&2\n")
    result = runs.gang(
        2,
        "-r",
        "3",
        "--log-dir",
        "a",
        "--run-id",
        "r",
        "./rank.sh",
    )
    assert result.stdout == "" and "err" not in result.stderr
    assert (runs.workdir / "a/r/attempt_0/rank_1/stderr.log").read_text() == "err 1\n"

    result = runs.gang(
        2,
        "-t",
        "1",
        "--log-dir",
        "b",
        "--run-id",
        "r",
        "./rank.sh",
    )
    assert sorted(result.stdout.splitlines()) == ["[rank0]: out 0", "[rank1]: out 1"]
    assert "[rank0]: err 0" in result.stderr
    assert (runs.workdir / "b/r/attempt_0/rank_0/stdout.log").read_text() == "out 0\n"
    assert not (runs.workdir / "b/r/attempt_0/rank_0/stderr.log").exists()

    result = runs.gang(
        2,
        "-r",
        "0:1",
        "--log-dir",
        "c",
        "--run-id",
        "r",
        "./rank.sh",
    )
    assert result.stdout.splitlines() == ["[rank1]: out 1"]
    assert (runs.workdir / "c/r/attempt_0/rank_0/stdout.log").read_text() == "out 0\n"


def test_tee_shows_a_stream_that_redirects_also_names(runs: Runs) -> None:
    # PyTorch's test_run.py::test_capture_logs_using_default_logs_specs: --redirect=3 --tee=3.
    runs.script("rank.sh", "echo creating $RANK; echo err $RANK >&2\n")
    result = runs.gang(2, "-r", "3", "-t", "3", "--log-dir", "a", "--run-id", "r", "./rank.sh")
    assert result.returncode == 0, result.stderr
    assert sorted(result.stdout.splitlines()) == ["[rank0]: creating 0", "[rank1]: creating 1"]
    assert "[rank1]: err 1" in result.stderr.splitlines()
    assert (runs.workdir / "a/r/attempt_0/rank_1/stdout.log").read_text() == "creating 1\n"
    assert (runs.workdir / "a/r/attempt_0/rank_1/stderr.log").read_text() == "err 1\n"

    result = runs.gang(2, "-r", "3", "-t", "0:1", "--log-dir", "b", "--run-id", "r", "./rank.sh")
    assert result.stdout.splitlines() == ["[rank0]: creating 0"]
    assert "err" not in result.stderr


def test_redirects_without_log_dir_use_a_temporary_one(runs: Runs) -> None:
    runs.script("rank.sh", "echo out\n")
    runs.env["TMPDIR"] = str(runs.workdir / "tmp")
    result = runs.run("--master_port", "0", "-r", "1", "--run-id", "t", "./rank.sh")
    assert result.returncode == 0 and result.stdout == ""
    assert f"logs in {runs.workdir}/tmp/rankrun-logs/t" in result.stderr
    assert (runs.workdir / "tmp/rankrun-logs/t/attempt_0/rank_0/stdout.log").read_text() == "out\n"


def test_a_log_dir_with_a_newline_is_quoted_on_one_line(runs: Runs) -> None:
    runs.script("rank.sh", "echo out\n")
    result = runs.gang(2, "--log-dir", "my\nlogs", "--run-id", "r", "./rank.sh")
    assert result.returncode == 0, result.stderr
    assert "rankrun: logs in 'my'$'\\n''logs/r'\n" in result.stderr
    assert (runs.workdir / "my\nlogs/r/attempt_0/rank_0/stdout.log").read_text() == "out\n"


def test_a_rank_writes_a_mebibyte_before_it_waits_for_the_relay(runs: Runs) -> None:
    fcntl = pytest.importorskip("fcntl")
    if not hasattr(fcntl, "F_GETPIPE_SZ"):
        pytest.skip("pipes are widened on Linux only")
    runs.script(
        "size.py",
        """
        import fcntl
        print(fcntl.fcntl(1, fcntl.F_GETPIPE_SZ), fcntl.fcntl(2, fcntl.F_GETPIPE_SZ))
    """,
        executable=False,
    )
    result = runs.gang(2, "size.py")
    assert result.returncode == 0, result.stderr
    assert sorted(result.stdout.splitlines()) == [f"[rank{r}]: {1 << 20} {1 << 20}" for r in (0, 1)]


@pytest.mark.slow
def test_a_slow_console_slows_the_ranks_and_memory_stays_bounded(runs: Runs) -> None:
    runs.script("rank.sh", 'yes "$(printf %099d "$RANK")" | head -c 16000000\n')
    launcher = subprocess.Popen(
        runs.argv("--nproc_per_node", "2", "--master_port", "0", "./rank.sh"),
        env=runs.env,
        cwd=runs.workdir,
        stdout=subprocess.PIPE,
    )
    assert launcher.stdout is not None
    lines, peak_kib = 0, 0
    while chunk := os.read(launcher.stdout.fileno(), 64 << 10):
        lines += chunk.count(b"\n")
        peak_kib = max(peak_kib, _vm_hwm_kib(launcher.pid))
        time.sleep(0.002)
    assert launcher.wait(timeout=20) == 0
    assert lines == 2 * 160000
    assert 0 < peak_kib < 30 * 1024  # what the ranks wrote: 32 MB


@pytest.mark.slow
def test_a_one_gigabyte_line_streams_out_in_bounded_memory(runs: Runs) -> None:
    runs.script(
        "big.py",
        """
        import os
        block = b"x" * (1 << 20)
        for _ in range(1024):
            os.write(1, block)
    """,
        executable=False,
    )
    counter = subprocess.Popen(["wc", "-l", "-c"], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    launcher = subprocess.Popen(
        runs.argv(
            "--nproc_per_node", "2", "--master_port", "0", "--local-ranks-filter", "0", "big.py"
        ),
        env=runs.env,
        cwd=runs.workdir,
        stdout=counter.stdin,
    )
    assert counter.stdin is not None and counter.stdout is not None
    counter.stdin.close()
    # The launcher's own high-water mark: ru_maxrss would count pytest's, inherited at fork.
    peak_kib = 0
    while launcher.poll() is None:
        peak_kib = max(peak_kib, _vm_hwm_kib(launcher.pid))
        time.sleep(0.02)
    lines, size = map(int, counter.stdout.read().split())
    counter.wait(timeout=20)
    assert launcher.returncode == 0
    assert lines == (1 << 30) // (1 << 16)  # 64 KiB pieces, each a labelled line
    assert size == (1 << 30) + lines * len("[rank0]: \n")
    assert 0 < peak_kib < 100 * 1024  # the line alone would be 1 GiB


def _vm_hwm_kib(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))
    except (OSError, StopIteration):
        return 0


def test_colour_only_on_a_tty_and_never_with_no_color(runs: Runs) -> None:
    runs.script("rank.sh", "echo hi\n")
    args = ("--nproc_per_node", "2", "--master_port", "0", "./rank.sh")
    assert "\x1b[" not in runs.run(*args).stdout
    assert "\x1b[" in _run_on_tty(runs, args)
    runs.env["NO_COLOR"] = "1"
    assert "\x1b[" not in _run_on_tty(runs, args)


def _run_on_tty(runs: Runs, args: tuple[str, ...]) -> str:
    primary, secondary = os.openpty()
    proc = subprocess.Popen(runs.argv(*args), env=runs.env, cwd=runs.workdir, stdout=secondary)
    os.close(secondary)
    chunks = []
    while True:
        try:
            chunk = os.read(primary, 4096)
        except OSError:
            break
        if not chunk:
            break
        chunks.append(chunk)
    proc.wait(timeout=20)
    os.close(primary)
    return b"".join(chunks).decode()


TRACEBACK_RANK = """
    import os, signal, time
    if os.environ["RANK"] == "1":
        while not os.path.exists("ready.0"):
            time.sleep(0.01)
        raise ValueError("boom from rank 1")
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})  # to take it, not die of it
    open("ready.0", "w").close()
    signal.sigwait({signal.SIGTERM})  # rank 1 has failed: the teardown has begun
    raise RuntimeError("Connection closed by peer")  # its own secondary error, later
"""


def test_report_names_the_first_failure_and_its_exception(runs: Runs) -> None:
    runs.script("train.py", TRACEBACK_RANK, executable=False)
    result = runs.gang(2, "--summary-json", "s.json", "train.py")
    assert result.returncode == 1
    report = result.stderr[result.stderr.index("root cause") :].splitlines()
    assert report[0].startswith("root cause: rank 1 (local rank 1, host ")
    assert report[1] == "rankrun:   Traceback (most recent call last):"
    assert "rankrun:   ValueError: boom from rank 1" in report
    assert not any("Connection closed" in line for line in report)
    assert "others: exited with code 1 during the teardown: 0" in report[-2]

    summary = json.loads((runs.workdir / "s.json").read_text())
    assert summary["exit_code"] == 1
    assert summary["root_cause"]["rank"] == 1
    assert "ValueError: boom from rank 1" in summary["root_cause"]["error"]
    (attempt,) = summary["attempts"]
    assert [r["state"] for r in attempt["ranks"]] == ["terminated", "failed"]
    assert attempt["ranks"][0]["signal"] is None  # it exited 1 after taking SIGTERM
    assert all(r["pid"] > 0 and r["ended_at"] >= r["started_at"] for r in attempt["ranks"])


def test_report_falls_back_to_the_error_file_then_the_tail(runs: Runs) -> None:
    runs.script(
        "rank.sh",
        """
        echo "line $RANK"
        printf '{"message": {"message": "KeyError: lost", "extraInfo": {}}}' \\
            > "$TORCHELASTIC_ERROR_FILE"
        exit 2
    """,
    )
    result = runs.run("--master_port", "0", "-r", "1", "--log-dir", "l", "./rank.sh")
    assert "rankrun:   KeyError: lost" in result.stderr.splitlines()

    runs.script("rank2.sh", 'for i in $(seq 30); do echo "err $i" >&2; done; exit 2\n')
    result = runs.gang(2, "./rank2.sh")
    report = result.stderr[result.stderr.index("root cause") :].splitlines()
    assert report[1:21] == [f"rankrun:   err {i}" for i in range(11, 31)]


@pytest.mark.slow
def test_torch_record_writes_its_error_file_into_the_layout(runs: Runs) -> None:
    pytest.importorskip("torch")
    runs.script(
        "train.py",
        """
        from torch.distributed.elastic.multiprocessing.errors import record
        @record
        def main():
            raise KeyError("missing shard")
        main()
    """,
        executable=False,
    )
    result = runs.run("--master_port", "0", "--log-dir", "logs", "--run-id", "j", "train.py")
    assert result.returncode == 1
    error = json.loads((runs.workdir / "logs/j/attempt_0/rank_0/error.json").read_text())
    assert "missing shard" in json.dumps(error)
    assert "KeyError: 'missing shard'" in result.stderr


def test_a_console_that_goes_away_does_not_end_the_run(runs: Runs) -> None:
    # As with `rankrun ... | head -1`: the reader leaves, and the ranks' work must go on.
    runs.script("rank.sh", 'for i in $(seq 20000); do echo "line $i"; done; touch "done.$RANK"\n')
    launcher = runs.start_gang(2, "./rank.sh")
    assert launcher.stdout is not None
    assert launcher.stdout.readline().startswith("[rank")
    launcher.stdout.close()
    _, err = launcher.communicate(timeout=30)
    assert launcher.returncode == 0, err
    assert "Traceback" not in err
    assert len(list(runs.workdir.glob("done.*"))) == 2


# Writes to both streams (a failed write exits 5), notes where they lead, and exits 3 once
# every rank has.
STDIO_RANK = """
    echo "out $RANK" || exit 5
    echo "err $RANK" >&2 || exit 5
    readlink /proc/$$/fd/1 /proc/$$/fd/2 > "tmp.$RANK" && mv "tmp.$RANK" "fds.$RANK"
    until [ "$(ls fds.* | wc -l)" = "$WORLD_SIZE" ]; do sleep 0.01; done
    exit 3
"""


@pytest.mark.parametrize("closed", [1, 2])
@pytest.mark.parametrize(
    "ranks", [["1"], ["2"], ["2", "--no-prefix"]], ids=["single", "labelled", "no-prefix"]
)
def test_a_closed_stdout_or_stderr_becomes_dev_null(
    runs: Runs, closed: int, ranks: list[str]
) -> None:
    # `rankrun ... >&-`: Python leaves sys.stdout None, and a rank must not inherit a hole.
    runs.script("rank.sh", STDIO_RANK)
    argv = runs.argv("--master-port", "0", "--nproc-per-node", *ranks, "./rank.sh")
    launcher = subprocess.Popen(argv, env=runs.env, cwd=runs.workdir, text=True,
                                stdout=None if closed == 1 else subprocess.PIPE,
                                stderr=None if closed == 2 else subprocess.PIPE,
                                preexec_fn=lambda: os.close(closed))  # fmt: skip
    out, err = launcher.communicate(timeout=30)
    assert launcher.returncode == 3, (out, err)
    assert "Traceback" not in (out or err)
    for fds in runs.wait_for_files("fds.*", int(ranks[0]), timeout=1):
        leads = fds.read_text().split()
        assert len(leads) == 2, leads
        assert leads[closed - 1] == "/dev/null" or leads[closed - 1].startswith("pipe:"), leads
