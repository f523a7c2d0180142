"""The gang end to end: real launchers, ranks and signals. It lives and dies together, and
nothing it started outlives it.

The gang's decisions alone, on a scripted fake Host in milliseconds, are
tests/test_gang_decisions.py: a decision belongs there, and here what only real processes show.
"""

from __future__ import annotations

import os
import re
import resource
import signal
import subprocess
import time

import pytest
from conftest import (
    BLOCKING_RANK,
    Runs,
    alive,
    process_state,
    tagged_pids,
    wait_gone,
    wait_until,
)

FAILING_RANK = """
    #!/bin/bash
    sleep 300 &
    echo "$$ $!" > "tmp.$RANK" && mv "tmp.$RANK" "pids.$RANK"  # whole when seen
    if [ "$RANK" = 1 ]; then
        while [ "$(ls pids.* | wc -l)" -lt "$WORLD_SIZE" ]; do sleep 0.01; done
        exit 3
    fi
    wait
"""


def test_first_failure_tears_down_the_gang_and_its_helpers(runs: Runs) -> None:
    runs.script("rank.sh", FAILING_RANK)
    started = time.monotonic()
    # The default 30 s grace: the others must go on SIGTERM, long before any SIGKILL.
    result = runs.gang(4, "./rank.sh")
    assert time.monotonic() - started < 10
    assert result.returncode == 3
    assert "root cause: rank 1 (local rank 1" in result.stderr
    assert "others: terminated (SIGTERM): 0, 2, 3" in result.stderr


def test_every_rank_exiting_0_is_success_even_at_different_times(runs: Runs) -> None:
    runs.script("rank.sh", 'sleep "0.$RANK"; echo "done $RANK"\n')
    result = runs.gang(3, "./rank.sh")
    assert result.returncode == 0, result.stderr
    assert sorted(result.stdout.splitlines()) == [f"[rank{r}]: done {r}" for r in range(3)]
    assert "root cause" not in result.stderr
    last = result.stderr.splitlines()[-1]
    took = re.fullmatch(r"rankrun: 3 ranks exited 0 in (\d+\.\d) s", last)
    assert took and 0.2 <= float(took[1]) < 10, result.stderr


def test_quiet_success_prints_nothing_of_rankruns_and_a_failure_still_reports(
    runs: Runs,
) -> None:
    runs.script("rank.sh", 'echo "done $RANK"\nexit "${CODE:-0}"\n')
    # Without -q: the OMP_NUM_THREADS notice, the Slurm note, the closing line.
    runs.env.update(SLURM_JOB_ID="77", SLURM_STEP_ID="0", SLURM_NNODES="1", SLURM_NODEID="0",
                    SLURM_STEP_NODELIST="localhost", SLURM_NTASKS_PER_NODE="1")  # fmt: skip
    loud = runs.gang(2, "./rank.sh")
    assert loud.returncode == 0, loud.stderr
    assert "rankrun: from Slurm job 77 step 0: " in loud.stderr
    assert "rankrun: OMP_NUM_THREADS=1 for each rank" in loud.stderr
    assert loud.stderr.splitlines()[-1].startswith("rankrun: 2 ranks exited 0 in ")
    for quiet in ("-q", "--quiet"):
        result = runs.gang(2, quiet, "./rank.sh")
        assert (result.returncode, result.stderr) == (0, ""), result.stderr
        assert sorted(result.stdout.splitlines()) == ["[rank0]: done 0", "[rank1]: done 1"]
    runs.env["CODE"] = "3"
    failed = runs.gang(2, "-q", "./rank.sh")
    assert failed.returncode == 3
    assert "root cause: rank 0 (local rank 0" in failed.stderr or (
        "root cause: rank 1 (local rank 1" in failed.stderr
    )
    assert failed.stderr.splitlines()[-1] == "rankrun: exit code 3"


def test_one_rank_ends_as_silently_as_python_would(runs: Runs) -> None:
    runs.script("rank.sh", "echo done\n")
    result = runs.gang(1, "./rank.sh")
    assert (result.returncode, result.stdout, result.stderr) == (0, "done\n", ""), result.stderr


@pytest.mark.parametrize("code", [1, 7, 255])
def test_exit_code_is_the_root_causes(runs: Runs, code: int) -> None:
    runs.script("rank.sh", f'[ "$RANK" = 1 ] && exit {code}; sleep 300\n')
    result = runs.gang(2, "./rank.sh")
    assert result.returncode == code


def test_rank_killed_by_a_signal_gives_128_plus_n_and_names_it(runs: Runs) -> None:
    runs.script("rank.sh", '[ "$RANK" = 0 ] && kill -KILL $$; sleep 300\n')
    result = runs.gang(2, "./rank.sh")
    assert result.returncode == 128 + signal.SIGKILL
    # Where the kernel log or a memory cgroup can tell, the OOM killer is ruled out.
    told = "was killed by SIGKILL, not by the kernel's OOM killer"
    assert "SIGKILL (often the kernel's OOM killer)" in result.stderr or told in result.stderr
    assert "root cause: rank 0" in result.stderr


def test_terminated_ranks_are_never_the_root_cause(runs: Runs) -> None:
    # Rank 0 exits 5 when terminated; it must not displace rank 1's exit 3.
    runs.script(
        "rank.sh",
        """
        #!/bin/bash
        trap 'exit 5' TERM
        touch "up.$RANK"
        if [ "$RANK" = 1 ]; then
            while [ ! -e up.0 ]; do sleep 0.01; done
            exit 3
        fi
        sleep 300 & wait
    """,
    )
    result = runs.gang(2, "./rank.sh")
    assert result.returncode == 3
    assert "root cause: rank 1" in result.stderr


@pytest.mark.slow
def test_rank_ignoring_sigterm_gets_sigkill_after_the_grace_period(runs: Runs) -> None:
    runs.script(
        "rank.sh",
        """
        #!/bin/bash
        trap '' TERM
        touch "up.$RANK"
        if [ "$RANK" = 1 ]; then
            while [ ! -e up.0 ]; do sleep 0.01; done
            exit 4
        fi
        while true; do sleep 0.05; done
    """,
    )
    started = time.monotonic()
    result = runs.gang(2, "--shutdown-timeout", "1", "./rank.sh")
    assert 1 <= time.monotonic() - started < 10
    assert result.returncode == 4
    assert "sent SIGKILL" in result.stderr


def test_helper_left_behind_by_a_successful_rank_is_ended(runs: Runs) -> None:
    runs.script("rank.sh", 'sleep 300 &\necho "$!" > "helper.$RANK"\nexit 0\n')
    result = runs.gang(2, "--shutdown-timeout", "5", "./rank.sh")
    assert result.returncode == 0
    assert "left processes behind" in result.stderr


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP])
def test_signal_to_the_launcher_ends_everything_with_128_plus_n(runs: Runs, signum: int) -> None:
    runs.script("rank.sh", BLOCKING_RANK)
    launcher = runs.start_gang(4, "./rank.sh")
    runs.wait_for_files("pids.*", 4)
    started = time.monotonic()
    launcher.send_signal(signum)
    _, err = launcher.communicate(timeout=20)
    assert time.monotonic() - started < 10, "the ranks end on the signal, not on SIGKILL"
    assert launcher.returncode == 128 + signum
    name = signal.Signals(signum).name
    assert f"got {name}" in err
    # Closed as a stall stop is: what happened, what every rank did, the exit code.
    closing = err.splitlines()[-3:]
    assert closing[0] == f"rankrun: stopped: rankrun got {name}", err
    assert closing[1].startswith("rankrun: others: ") and closing[1].endswith(": 0-3"), err
    assert closing[2] == f"rankrun: exit code {128 + signum}", err


@pytest.mark.slow
def test_sigquit_is_forwarded_then_sigkill_ends_ranks_that_ignore_it(runs: Runs) -> None:
    runs.script("rank.sh", BLOCKING_RANK)  # bash ignores SIGQUIT, always
    launcher = runs.start_gang(2, "--shutdown-timeout", "1", "./rank.sh")
    runs.wait_for_files("pids.*", 2)
    launcher.send_signal(signal.SIGQUIT)
    _, err = launcher.communicate(timeout=20)
    assert launcher.returncode == 128 + signal.SIGQUIT
    assert "sent SIGQUIT to 2 rank group(s)" in err
    assert "sent SIGKILL" in err


def test_second_ctrl_c_kills_at_once(runs: Runs) -> None:
    runs.script("rank.sh", "trap '' INT TERM\ntouch up.$RANK\nwhile true; do sleep 0.05; done\n")
    launcher = runs.start_gang(2, "./rank.sh", stderr_to="err.log")
    log = runs.workdir / "err.log"
    runs.wait_for_files("up.*", 2)
    started = time.monotonic()
    launcher.send_signal(signal.SIGINT)
    wait_until(lambda: "sent SIGINT to 2 rank group(s)" in log.read_text(), 10, "the teardown")
    time.sleep(0.3)  # a person's second Ctrl-C: within 0.25 s, it would be the same request
    assert launcher.poll() is None, "ranks ignore SIGINT, so the first Ctrl-C waits for grace"
    assert "sent SIGKILL" not in log.read_text()
    launcher.send_signal(signal.SIGINT)
    launcher.communicate(timeout=20)
    err = log.read_text()
    assert time.monotonic() - started < 10
    assert launcher.returncode == 128 + signal.SIGINT
    assert "sent SIGKILL" in err


@pytest.mark.slow
def test_sigkill_of_the_launcher_leaves_nothing_behind(runs: Runs) -> None:
    runs.script("rank.sh", BLOCKING_RANK)
    launcher = runs.start_gang(4, "--shutdown-timeout", "3", "./rank.sh")
    pid_files = runs.wait_for_files("pids.*", 4)
    started = [int(p) for f in pid_files for p in f.read_text().split()]
    launcher.kill()
    launcher.communicate(timeout=10)
    assert wait_gone(runs.tag, timeout=3 + 5) == []
    assert all(not alive(pid) for pid in started)


@pytest.mark.parametrize("closed", ["stdout", "stderr"])
@pytest.mark.slow
def test_sigkill_of_a_launcher_started_without_stdio_leaves_nothing(
    runs: Runs, closed: str
) -> None:
    runs.script("rank.sh", BLOCKING_RANK)
    argv = runs.argv("--nproc-per-node", "2", "--master-port", "0", "./rank.sh")
    fd = 1 if closed == "stdout" else 2
    launcher = subprocess.Popen(argv, env=runs.env, cwd=runs.workdir, pass_fds=(),
                                preexec_fn=lambda: os.close(fd))  # fmt: skip
    runs.wait_for_files("pids.*", 2)
    launcher.kill()
    launcher.wait(timeout=10)
    assert wait_gone(runs.tag, timeout=5) == []


def test_sigusr1_is_forwarded_and_tears_nothing_down(runs: Runs) -> None:
    runs.script(
        "rank.sh",
        """
        #!/bin/bash
        trap 'echo got > "usr1.$RANK"; exit 0' USR1
        touch "up.$RANK"
        while true; do sleep 0.05; done
    """,
    )
    launcher = runs.start_gang(2, "./rank.sh")
    runs.wait_for_files("up.*", 2)
    launcher.send_signal(signal.SIGUSR1)
    _, err = launcher.communicate(timeout=20)
    assert launcher.returncode == 0, err
    assert len(runs.wait_for_files("usr1.*", 2)) == 2


def test_max_restarts_runs_again_with_the_restart_count(runs: Runs) -> None:
    runs.script(
        "rank.sh",
        """
        #!/bin/bash
        echo "$TORCHELASTIC_RESTART_COUNT/$TORCHELASTIC_MAX_RESTARTS" >> "attempts.$RANK"
        if [ "$RANK" = 1 ] && [ "$TORCHELASTIC_RESTART_COUNT" = 0 ]; then exit 9; fi
        sleep 0.2
    """,
    )
    result = runs.gang(2, "--max-restarts", "2", "./rank.sh")
    assert result.returncode == 0, result.stderr
    assert (runs.workdir / "attempts.0").read_text() == "0/2\n1/2\n"
    assert "attempt 0: rank 1 exited with code 9" in result.stderr
    assert "attempt 1: every rank exited 0" in result.stderr


def test_max_restarts_exhausted_reports_every_attempt(runs: Runs) -> None:
    runs.script("rank.sh", "exit 6\n")
    result = runs.gang(1, "--max-restarts", "1", "./rank.sh")
    assert result.returncode == 6
    assert "restart 1 of 1" in result.stderr
    assert "attempt 1: rank 0 exited with code 6" in result.stderr


def test_launcher_and_guardian_exit_and_are_reaped(runs: Runs) -> None:
    runs.script("rank.sh", "exit 0\n")
    result = runs.gang(2, "./rank.sh")
    assert result.returncode == 0
    assert "guardian" not in result.stderr and "ended" not in result.stderr, "init adopts it"
    # The guardian reads the launcher's goodbye and exits a moment after it, on its own.
    assert wait_gone(runs.tag, 1.0) == []
    assert os.path.exists(runs.workdir / "rank.sh")


def test_hundreds_of_labelled_ranks_fit_in_the_open_files_limit(runs: Runs) -> None:
    # 600 ranks hold 1200 pipe ends: past the common soft limit of 1024 unless raised.
    runs.script("rank.sh", "#!/bin/sh\necho $RANK\n")
    result = runs.gang(600, "./rank.sh",
        preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (1024, 4096)),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    assert len(result.stdout.splitlines()) == 600


def test_a_dead_guardian_does_not_break_the_run(runs: Runs) -> None:
    runs.script("rank.sh", BLOCKING_RANK)
    launcher = runs.start_gang(2, "./rank.sh", stderr_to="err.log")
    log = runs.workdir / "err.log"
    ours = {int(p) for f in runs.wait_for_files("pids.*", 2) for p in f.read_text().split()}
    guardian = set(tagged_pids(runs.tag)) - ours - {launcher.pid}
    assert len(guardian) == 1, f"expected the guardian beside the ranks: {guardian}"
    assert os.getsid(guardian_pid := guardian.pop()) == guardian_pid, "in a session of its own"
    os.kill(guardian_pid, signal.SIGKILL)
    said = f"the guardian (pid {guardian_pid}) died"
    wait_until(lambda: said in log.read_text(), 10, "the launcher to notice")
    launcher.send_signal(signal.SIGTERM)
    launcher.communicate(timeout=20)
    err = log.read_text()
    assert launcher.returncode == 128 + signal.SIGTERM
    assert "Traceback" not in err
    assert "guardian" in err


def start_as_a_shell_job(runs: Runs, *args: str) -> subprocess.Popen[str]:
    """The launcher in a process group of its own in this session, as a shell starts a job:
    a group that job control can stop (the kernel ignores SIGTSTP in an orphaned group)."""
    argv = runs.argv("--master-port", "0", *args)
    return subprocess.Popen(argv, env=runs.env, cwd=runs.workdir, process_group=0,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip


def test_ctrl_z_pauses_every_rank_and_fg_resumes_them(runs: Runs) -> None:
    runs.script("rank.sh", BLOCKING_RANK)
    launcher = start_as_a_shell_job(runs, "--nproc-per-node", "2", "./rank.sh")
    started = [int(p) for f in runs.wait_for_files("pids.*", 2) for p in f.read_text().split()]
    launcher.send_signal(signal.SIGTSTP)
    assert _wait_state([launcher.pid, *started], "T"), "Ctrl-Z must stop the launcher and ranks"
    launcher.send_signal(signal.SIGCONT)
    assert _wait_state(started, "S"), "fg must resume every rank and helper"
    launcher.send_signal(signal.SIGTERM)
    launcher.communicate(timeout=20)
    assert launcher.returncode == 128 + signal.SIGTERM


def test_ranks_do_not_inherit_the_launchers_blocked_sigtstp(runs: Runs) -> None:
    runs.script("rank.sh", "grep SigBlk /proc/$$/status > blocked.$RANK\n")
    result = runs.run("--nproc-per-node", "2", "--master-port", "0", "./rank.sh")
    assert result.returncode == 0, result.stderr
    for f in runs.wait_for_files("blocked.*", 2):
        mask = int(f.read_text().split()[1], 16)
        assert not mask & 1 << (signal.SIGTSTP - 1), f"{f.name}: {f.read_text()}"


def test_tstp_outside_job_control_pauses_the_ranks_and_the_launcher_runs_on(runs: Runs) -> None:
    runs.script("rank.sh", BLOCKING_RANK)
    argv = runs.argv("--nproc-per-node", "2", "--master-port", "0", "./rank.sh")
    launcher = subprocess.Popen(argv, env=runs.env, cwd=runs.workdir, start_new_session=True,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
    started = [int(p) for f in runs.wait_for_files("pids.*", 2) for p in f.read_text().split()]
    launcher.send_signal(signal.SIGTSTP)  # its group is orphaned: the kernel won't stop it
    assert _wait_state(started, "T"), "the ranks are paused all the same"
    assert process_state(launcher.pid) != "T"
    launcher.send_signal(signal.SIGCONT)
    assert _wait_state(started, "S")
    launcher.send_signal(signal.SIGTERM)
    launcher.communicate(timeout=20)
    assert launcher.returncode == 128 + signal.SIGTERM


def _wait_state(pids: list[int], state: str, timeout: float = 5) -> bool:
    in_state = lambda: all(process_state(pid) == state for pid in pids)  # noqa: E731
    return wait_until(in_state, timeout, f"{pids} in state {state}", fail=False)


def test_a_rank_that_fails_during_the_teardown_is_said_so(runs: Runs) -> None:
    runs.script(
        "rank.sh",
        """
        #!/bin/bash
        trap 'sleep 0.2; exit 3' TERM
        touch "up.$RANK"
        if [ "$RANK" = 0 ]; then
            while [ ! -e up.1 ]; do sleep 0.01; done
            exit 3
        fi
        sleep 300 & wait
    """,
    )
    result = runs.gang(2, "./rank.sh")
    assert result.returncode == 3
    assert "root cause: rank 0" in result.stderr
    assert "others: exited with code 3 during the teardown: 1" in result.stderr


def test_a_log_file_that_cannot_be_opened_is_rankruns_error(runs: Runs) -> None:
    runs.script("rank.sh", "exec sleep 300\n")
    (runs.workdir / "logs/r/attempt_0/rank_1/stdout.log").mkdir(parents=True)
    result = runs.gang(2, "--log-dir", "logs", "--run-id", "r", "./rank.sh")
    assert result.returncode == 1
    assert "rankrun failed: could not open the pipes or files of rank 1" in result.stderr
    assert "Is a directory" in result.stderr
    assert "root cause" not in result.stderr


# Starts `sleep` in a session of its own and prints its pid once it is there.
DAEMON = (
    "python3 -c 'import subprocess; "
    'print(subprocess.Popen(["sleep", "300"], start_new_session=True).pid)\''
)


def test_a_daemon_that_left_its_ranks_group_is_ended_and_named(runs: Runs) -> None:
    runs.script("rank.sh", f"{DAEMON} > daemon.$RANK\nexit 0\n")
    result = runs.gang(2, "--shutdown-timeout", "5", "./rank.sh")
    assert result.returncode == 0, result.stderr
    assert "ended 2 process(es) that had left their rank's group" in result.stderr
    assert "(sleep)" in result.stderr


def _ranks_leave_daemons_that_ignore_sigterm(runs: Runs) -> None:
    runs.script("daemon.py", """
        import signal, sys, time
        mark = lambda what: open(f"{what}.{sys.argv[1]}", "w").close()
        signal.signal(signal.SIGTERM, lambda *_: mark("term"))  # and lives on
        mark("daemon")
        while True:
            time.sleep(0.1)
    """)  # fmt: skip
    runs.script("rank.sh", """
        setsid python3 daemon.py $RANK &
        while [ ! -e daemon.$RANK ]; do sleep 0.01; done  # it has left the rank's group
        touch done.$RANK
    """)  # fmt: skip


def _wait_until_the_ranks_ended(runs: Runs) -> None:
    """Two ranks: after this, rankrun is ending their daemons, within its grace period."""
    runs.wait_for_files("done.*", 2)
    runs.wait_for_files("term.*", 2)  # each daemon got the SIGTERM, and lives on


@pytest.mark.slow
def test_ctrl_z_stops_the_launcher_while_it_ends_escaped_daemons(runs: Runs) -> None:
    _ranks_leave_daemons_that_ignore_sigterm(runs)
    launcher = start_as_a_shell_job(runs, "--nproc-per-node", "2", "--shutdown-timeout", "5",
                                    "./rank.sh")  # fmt: skip
    _wait_until_the_ranks_ended(runs)
    launcher.send_signal(signal.SIGTSTP)
    assert _wait_state([launcher.pid], "T", timeout=2)
    launcher.send_signal(signal.SIGCONT)
    _, err = launcher.communicate(timeout=20)
    assert launcher.returncode == 0, err
    assert "ended 2 process(es) that had left their rank's group" in err


def test_ctrl_c_while_escaped_daemons_are_ended_kills_them_at_once(runs: Runs) -> None:
    _ranks_leave_daemons_that_ignore_sigterm(runs)
    launcher = runs.start_gang(2, "--shutdown-timeout", "60", "./rank.sh")
    _wait_until_the_ranks_ended(runs)
    launcher.send_signal(signal.SIGINT)
    _, err = launcher.communicate(timeout=10)
    assert launcher.returncode == 0, err  # the ranks' exit code, as the report gave it
    assert "ended 2 process(es) that had left their rank's group" in err


@pytest.mark.slow
def test_sigkill_of_the_launcher_also_ends_a_daemon_outside_the_groups(runs: Runs) -> None:
    runs.script(
        "rank.sh", f'{DAEMON} > "tmp.$RANK"\nmv "tmp.$RANK" "daemon.$RANK"\nexec sleep 300\n'
    )
    launcher = runs.start_gang(2, "--shutdown-timeout", "2", "./rank.sh")
    daemons = [int(f.read_text()) for f in runs.wait_for_files("daemon.*", 2)]
    launcher.kill()
    launcher.communicate(timeout=10)
    assert wait_gone(runs.tag, timeout=2 + 5) == []
    assert not any(alive(pid) for pid in daemons)


@pytest.mark.slow
def test_ctrl_c_during_a_failures_teardown_ends_the_run_without_restart(runs: Runs) -> None:
    runs.script(
        "rank.sh",
        """
        #!/bin/bash
        trap 'touch "term.$RANK"' TERM  # and lives on
        touch "up.$RANK"
        [ "$RANK" = 0 ] && { while [ ! -e up.1 ]; do sleep 0.01; done; exit 3; }
        while true; do sleep 0.05; done
    """,
    )
    launcher = runs.start_gang(2, "--shutdown-timeout", "3", "--max-restarts", "2", "./rank.sh")
    runs.wait_for_files("up.*", 2)
    runs.wait_for_files("term.1", 1)  # rank 0 has failed; rank 1 outlives the teardown's SIGTERM
    started = time.monotonic()
    launcher.send_signal(signal.SIGINT)
    _, err = launcher.communicate(timeout=20)
    assert time.monotonic() - started < 2.5, "SIGKILL at once, not after the grace period"
    assert launcher.returncode == 128 + signal.SIGINT
    assert "restart" not in err
    assert "interrupted: rankrun got SIGINT during the teardown of rank 0's failure" in err


@pytest.mark.slow
def test_sigkill_of_the_launcher_ends_what_a_rank_starts_outside_its_group_when_told_to_stop(
    runs: Runs,
) -> None:
    runs.script(
        "rank.py",
        """
        import os, signal, subprocess, time
        def cleanup(*_):  # a helper in a session of its own, started as the rank is ended
            subprocess.Popen(["sleep", "300"], start_new_session=True)
        signal.signal(signal.SIGTERM, cleanup)
        open(f"up.{os.environ['RANK']}", "w").close()
        time.sleep(60)
    """,
        executable=False,
    )
    launcher = runs.start_gang(2, "--shutdown-timeout", "2", "rank.py")
    runs.wait_for_files("up.*", 2)
    launcher.kill()
    launcher.communicate(timeout=10)
    assert wait_gone(runs.tag, timeout=2 + 5) == []
