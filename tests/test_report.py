"""The report, at its seam: built from RankResults, with no processes."""

from __future__ import annotations

import signal

from rankrun.output.outcome import Attempt, Ending, JobOutcome, OomVerdict, Outcome, RankResult
from rankrun.output.report import (
    cuda_error_line,
    error_lines,
    format_report,
    others_line,
    root_cause_line,
)


def _job(outcome: Outcome, hostname: str) -> JobOutcome:
    return JobOutcome.of_node(outcome, hostname, 1)


def _result(rank: int, *, code: int | None = 0, sig: int | None = None, terminated: bool = False,
            tail: str = "") -> RankResult:  # fmt: skip
    return RankResult(rank, rank, 100 + rank, 10.0, Ending(code, sig, 12.5, terminated), tail)


def test_a_sigkill_says_whether_the_oom_killer_sent_it_or_guesses_when_none_can_tell() -> None:
    gib = 1 << 30
    oom = OomVerdict(True, "/slurm/uid_0/job_12", 8 * gib, int(7.9 * gib))
    words = Ending(None, signal.SIGKILL, 1.0, oom=oom).words()
    assert words == (
        "was killed by the kernel's OOM killer "
        "(memory limit 8.0 GiB of cgroup /slurm/uid_0/job_12; rank's peak RSS 7.9 GiB)"
    )
    machine = OomVerdict(True, "/", None, 512 << 20)
    assert Ending(None, signal.SIGKILL, 1.0, oom=machine).words() == (
        "was killed by the kernel's OOM killer (the machine ran out of memory; "
        "rank's peak RSS 512.0 MiB)"
    )
    not_oom = Ending(None, signal.SIGKILL, 1.0, oom=OomVerdict(False))
    assert not_oom.words() == "was killed by SIGKILL, not by the kernel's OOM killer"
    unknown = Ending(None, signal.SIGKILL, 1.0).words()
    assert unknown == "was killed by SIGKILL (often the kernel's OOM killer)"


def test_others_fold_runs_of_ranks_into_ranges() -> None:
    cause = _result(5, code=3)
    ranks = [_result(r, code=None, sig=signal.SIGTERM, terminated=True) for r in range(5)]
    ranks += [
        cause,
        _result(6, code=1),
        _result(7),
        *(_result(r, code=None, sig=signal.SIGTERM, terminated=True) for r in range(8, 512)),
    ]
    line = others_line(Attempt(0, tuple(ranks), cause))
    assert line == "others: failed afterwards: 6; terminated (SIGTERM): 0-4, 8-511; finished: 7"


def test_traceback_is_the_last_one_without_torchs_labels() -> None:
    tail = (
        "[rank2]: warming up\n"
        "[rank2]: Traceback (most recent call last):\n[rank2]:   old\n[rank2]: KeyError: 1\n"
        "noise\n"
        "[rank2]: Traceback (most recent call last):\n"
        '[rank2]:   File "t.py", line 1, in <module>\n'
        "[rank2]: ValueError: boom\n"
    )
    assert error_lines(_result(2, code=1, tail=tail)) == [
        "Traceback (most recent call last):", '  File "t.py", line 1, in <module>',
        "ValueError: boom",
    ]  # fmt: skip


def test_a_long_traceback_keeps_its_head_and_its_end() -> None:
    frames = [f"  frame {i}" for i in range(100)]
    tail = "\n".join(["Traceback (most recent call last):", *frames, "OSError: disk"])
    lines = error_lines(_result(0, code=1, tail=tail))
    assert len(lines) == 40
    assert lines[0].startswith("Traceback") and lines[-1] == "OSError: disk"
    assert lines[2] == "... 63 lines ..."


def test_signal_death_is_named_with_its_meaning_and_code() -> None:
    cause = _result(1, code=None, sig=signal.SIGSEGV)
    report = format_report(_job(Outcome((Attempt(0, (_result(0), cause), cause),)), "node7"))
    assert report[0] == (
        "root cause: rank 1 (local rank 1, host node7, pid 101) was killed by "
        "SIGSEGV (a crash in native code) after 2.50 s"
    )
    assert report[-1] == f"exit code {128 + signal.SIGSEGV}"


def test_a_clean_run_has_no_report() -> None:
    assert format_report(_job(Outcome((Attempt(0, (_result(0), _result(1)), None),)), "h")) == []


def test_faulthandler_stacks_after_a_native_crash_are_the_error() -> None:
    tail = (
        "Traceback (most recent call last):\n  caught and logged earlier\nKeyError: 1\n"
        "Fatal Python error: Segmentation fault\n\n"
        "Current thread 0x00007f2a (most recent call first):\n"
        '  File "t.py", line 4 in load_shard\n'
        '  File "t.py", line 6 in <module>\n\n'
        "Extension modules: numpy.core._multiarray_umath (total: 1)\n"
    )
    assert error_lines(_result(1, code=None, sig=signal.SIGSEGV, tail=tail)) == [
        "Fatal Python error: Segmentation fault",
        "",
        "Current thread 0x00007f2a (most recent call first):",
        '  File "t.py", line 4 in load_shard',
        '  File "t.py", line 6 in <module>',
        "",
        "Extension modules: numpy.core._multiarray_umath (total: 1)",
    ]


def test_an_interrupt_closes_with_what_every_rank_did() -> None:
    ranks = (
        _result(0, code=None, sig=signal.SIGINT, terminated=True),
        _result(1, code=130, terminated=True),
    )
    outcome = Outcome((Attempt(0, ranks, None, signal.SIGINT),))
    assert format_report(_job(outcome, "node7")) == [
        "stopped: rankrun got SIGINT",
        "others: terminated (SIGINT): 0; exited with code 130 during the teardown: 1",
        "exit code 130",
    ]


def test_the_report_names_the_gpu_and_a_cuda_error() -> None:
    tail = "RuntimeError: CUDA error: an illegal memory access was encountered\n"
    result = RankResult(3, 1, 42, 0.0, Ending(1, None, 2.5), tail, None, "cuda:1 (0000:3b:00.0)")
    assert "GPU cuda:1 (0000:3b:00.0)) exited with code 1" in root_cause_line(
        result, _job(Outcome((Attempt(0, (result,), result),)), "h")
    )
    assert cuda_error_line(result) == (
        "  (a CUDA error on cuda:1 (0000:3b:00.0): look at that GPU, or rerun with "
        "CUDA_LAUNCH_BLOCKING=1)"
    )
    assert cuda_error_line(result._replace(stderr_tail="ValueError: x\n")) is None
