"""Stacks of real processes through py-spy, and the one-line reasons when there are none."""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import Runs, process_state, wait_until
from procs import Procs, ended

import rankrun
from rankrun.inspect.install_hint import install_hint
from rankrun.inspect.ptrace import explain, ptrace_refused
from rankrun.inspect.stacks import (
    StackDump,
    StacksError,
    dump,
    find_py_spy,
    format_dumps,
    is_python_process,
    label_lines,
    python_processes,
)

PY_SPY = find_py_spy()
needs_py_spy = pytest.mark.skipif(
    PY_SPY is None, reason=f"py-spy is not installed: {install_hint()}"
)
SRC = os.path.dirname(os.path.dirname(rankrun.__file__))
# rankrun is on no package index: the hint names the source tree these tests run.
INSTALL_PY_SPY = (
    f"pip install py-spy, or pip install {shlex.quote(os.path.dirname(SRC) + '[stacks]')}"
)

# A rank blocked in a function of its own name; it says "ready" once inside.
BLOCKED = """
    import sys, time

    def {name}():
        print("ready", flush=True)
        time.sleep(300)

    {name}()
"""


class StackProcs(Procs):
    def blocked_in(self, name: str) -> subprocess.Popen[str]:
        """A Python process inside ``name()`` by the time this returns."""
        return self.ready([sys.executable, "-c", textwrap.dedent(BLOCKED.format(name=name))])

    def script(self, name: str, body: str) -> Path:
        return self.runs.script(name, body)

    def ready(self, argv: list[str]) -> subprocess.Popen[str]:
        proc = self.start(argv)
        assert proc.stdout is not None
        assert proc.stdout.readline() == "ready\n"
        return proc


@pytest.fixture
def procs(runs: Runs) -> Iterator[StackProcs]:
    yield from ended(StackProcs(runs))


@needs_py_spy
def test_each_rank_stack_is_under_its_label(procs: StackProcs) -> None:
    a = procs.blocked_in("waiting_in_all_reduce")
    b = procs.blocked_in("waiting_in_barrier")

    dumps = dump([("rank0", a.pid), ("rank1", b.pid)], timeout=20)

    assert [(d.label, d.pid, d.error, d.via) for d in dumps] == [
        ("rank0", a.pid, None, None),
        ("rank1", b.pid, None, None),
    ]
    # No banner: the label names the rank, and the first thread's id is its pid. The command
    # line, which py-spy's banner shows, spans lines with blank ones among them.
    assert dumps[0].text.startswith(f"Thread {a.pid} ("), dumps[0].text
    assert dumps[1].text.startswith(f"Thread {b.pid} ("), dumps[1].text
    assert "waiting_in_all_reduce" in dumps[0].text
    assert "waiting_in_barrier" not in dumps[0].text
    assert "waiting_in_barrier" in dumps[1].text
    text = format_dumps(dumps)
    assert all(line.startswith(("[rank0]: ", "[rank1]: ")) for line in text.splitlines())
    assert any("waiting_in_barrier" in line for line in text.splitlines() if "[rank1]" in line)
    assert not any("waiting_in_barrier" in line for line in text.splitlines() if "[rank0]" in line)


@needs_py_spy
def test_a_shell_script_rank_is_resolved_to_its_python_child(procs: StackProcs) -> None:
    # As Deformable DETR's configs: a .sh file that runs python -u main.py, not exec'd.
    procs.script("main.py", BLOCKED.format(name="train_one_epoch"))
    body = f'"{sys.executable}" -u main.py "$@"\necho done'
    rank = procs.script("configs/r50_deformable_detr.sh", body)
    shell = procs.start(["bash", str(rank)])
    assert shell.stdout is not None and shell.stdout.readline() == "ready\n"
    (child,) = python_processes(shell.pid)
    assert child != shell.pid and is_python_process(child) and not is_python_process(shell.pid)

    (d,) = dump([("rank3", shell.pid)], timeout=20)

    assert (d.label, d.pid, d.via, d.error) == ("rank3", child, shell.pid, None)
    assert "train_one_epoch" in d.text
    text = format_dumps([d])
    assert text.startswith(f"[rank3]: pid {shell.pid} is bash; its Python process {child}:\n")
    assert "[rank3]:     train_one_epoch (main.py:" in text


def test_python_processes_leaves_out_nested_ones_unless_asked(procs: StackProcs) -> None:
    # A rank with a DataLoader-like worker: both Python, the worker under the rank.
    code = """
        import subprocess, sys, time
        worker = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"])
        print(worker.pid, flush=True)
        time.sleep(300)
    """
    rank = procs.start([sys.executable, "-c", textwrap.dedent(code)])
    assert rank.stdout is not None
    worker = int(rank.stdout.readline())
    assert python_processes(rank.pid) == [rank.pid]
    assert python_processes(rank.pid, nested=True) == [rank.pid, worker]
    sleeper = procs.start(["sleep", "300"])
    assert python_processes(sleeper.pid) == []


@needs_py_spy
def test_a_rank_that_runs_no_python_says_so(procs: StackProcs) -> None:
    sleeper = procs.start(["sleep", "300"])
    (d,) = dump([("rank0", sleeper.pid)], timeout=20)
    assert d.error == (
        f"not a Python process (sleep, pid {sleeper.pid}), nor is any process it started"
    )
    assert format_dumps([d]) == f"[rank0]: error: {d.error}\n"
    (d,) = dump([("rank0", sleeper.pid)], timeout=20, resolve=False)
    assert d.error == f"not a Python process (sleep, pid {sleeper.pid})"


@needs_py_spy
def test_a_gone_process_says_so(runs: Runs) -> None:
    done = subprocess.Popen([sys.executable, "-c", "pass"], env=runs.env)
    done.wait()  # reaped: its pid names no process
    (d,) = dump([("rank1", done.pid)], timeout=5)
    assert d == StackDump("rank1", done.pid, "", f"process {done.pid} is gone")


@needs_py_spy
def test_a_stopped_rank_is_read_without_pausing_it(procs: StackProcs) -> None:
    # Ctrl-Z stops the ranks; py-spy's blocking read fails on a stopped process.
    a = procs.blocked_in("waiting_in_all_reduce")
    os.kill(a.pid, signal.SIGSTOP)
    wait_until(lambda: process_state(a.pid) == "T", 5, "the rank to stop", every=0.01)
    try:
        (d,) = dump([("rank0", a.pid)], timeout=20)
    finally:
        os.kill(a.pid, signal.SIGCONT)
    assert d.error is None and "waiting_in_all_reduce" in d.text


@needs_py_spy
def test_a_rank_under_a_debugger_is_read_without_attaching(procs: StackProcs) -> None:
    a = procs.blocked_in("waiting_in_all_reduce")
    tracer = procs.start([sys.executable, "-c", textwrap.dedent(PTRACE_ATTACH), str(a.pid)])
    assert tracer.stdout is not None
    if tracer.stdout.readline() != "attached\n":
        pytest.skip("ptrace(PTRACE_SEIZE) is not permitted here")
    (d,) = dump([("rank0", a.pid)], timeout=20)
    assert d.error is None and "waiting_in_all_reduce" in d.text
    # Where py-spy would attach all the same, the one line names the tracer.
    python = os.path.basename(os.path.realpath(sys.executable))
    assert ptrace_refused(a.pid) == (
        f"cannot read process {a.pid}: process {tracer.pid} ({python}) is tracing it already; "
        "detach that debugger"
    )


PTRACE_ATTACH = """
    import ctypes, sys, time
    libc = ctypes.CDLL(None, use_errno=True)
    PTRACE_SEIZE = 0x4206
    ok = libc.ptrace(PTRACE_SEIZE, int(sys.argv[1]), None, None) == 0
    print("attached" if ok else "refused", flush=True)
    time.sleep(300)
"""


@needs_py_spy
def test_a_slow_py_spy_is_ended_at_the_timeout(procs: StackProcs, tmp_path: Path) -> None:
    a = procs.blocked_in("waiting_in_all_reduce")
    hung = tmp_path / "py-spy"
    hung.write_text(f"#!/bin/sh\necho $$ > {tmp_path}/hung.pid\nexec sleep 300\n")
    hung.chmod(0o755)
    (d,) = dump([("rank0", a.pid)], timeout=0.5, py_spy=str(hung), env=procs.runs.env)
    assert d.error == (
        f"py-spy did not finish within 0.5 s (process {a.pid} is in state S); try nonblocking reads"
    )
    hung_pid = int((tmp_path / "hung.pid").read_text())
    assert process_state(hung_pid) in (None, "Z", "X")


# --- py-spy missing, or refused ----------------------------------------------------------------


def test_py_spy_is_found_on_path_or_beside_python(tmp_path: Path) -> None:
    assert find_py_spy({"PATH": ""}, executable=str(tmp_path / "python")) is None
    fake = tmp_path / "bin" / "py-spy"
    fake.parent.mkdir()
    fake.write_text("#!/bin/sh\n")
    fake.chmod(0o755)
    assert find_py_spy({"PATH": str(fake.parent)}, executable="") == str(fake)
    assert find_py_spy({"PATH": ""}, executable=str(fake.parent / "python3")) == str(fake)


def test_missing_py_spy_is_one_line_that_names_the_fix(runs: Runs) -> None:
    # A Python without py-spy beside it (not the venv's), and an empty PATH.
    python = os.path.realpath(sys.executable)
    if os.path.exists(os.path.join(os.path.dirname(python), "py-spy")):
        pytest.skip(f"py-spy is installed beside {python}")
    code = """
        import sys
        from rankrun.inspect.stacks import StacksError, dump
        try:
            dump([("rank0", 1)], 5, env={"PATH": ""})
        except StacksError as e:
            print(e)
    """
    env = {**runs.env, "PATH": "", "PYTHONPATH": SRC}
    env.pop("VIRTUAL_ENV", None)
    out = subprocess.run(
        [python, "-c", textwrap.dedent(code)], env=env, capture_output=True, text=True, timeout=60
    )
    assert out.stderr == ""
    assert out.stdout == (
        f"py-spy is needed to read stacks and is not installed: {INSTALL_PY_SPY}\n"
    )


def test_an_unrunnable_py_spy_is_one_line(procs: StackProcs, tmp_path: Path) -> None:
    broken = tmp_path / "py-spy"
    broken.write_text("not a program")
    broken.chmod(0o644)
    a = procs.blocked_in("waiting_in_all_reduce")
    with pytest.raises(StacksError) as e:
        dump([("rank0", a.pid)], 5, py_spy=str(broken))
    assert str(e.value) == (
        f"cannot run {broken}: Permission denied: reinstall it with {INSTALL_PY_SPY}"
    )


# The dump, run by another user or without CAP_SYS_PTRACE: prints each error.
DUMP_AS = """
    import sys
    from rankrun.inspect.stacks import dump
    for d in dump([("rank0", int(sys.argv[1]))], 20, py_spy=sys.argv[2]):
        print(d.error)
"""


def _dump_under(prefix: list[str], pid: int, runs: Runs) -> str:
    assert PY_SPY is not None
    env = {**runs.env, "PYTHONPATH": SRC}
    probe = [*prefix, sys.executable, "-c", "import rankrun.inspect.stacks"]
    if subprocess.run(probe, env=env, capture_output=True, timeout=60).returncode != 0:
        pytest.skip(f"this Python or {SRC} cannot be used under {prefix[0]}")
    argv = [*prefix, sys.executable, "-c", textwrap.dedent(DUMP_AS), str(pid), PY_SPY]
    out = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stdout


@needs_py_spy
@pytest.mark.skipif(os.getuid() != 0 or not shutil.which("setpriv"), reason="root and setpriv")
def test_another_users_process_says_to_use_sudo(procs: StackProcs) -> None:
    a = procs.blocked_in("waiting_in_all_reduce")
    nobody = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
    assert _dump_under(nobody, a.pid, procs.runs) == (
        f"cannot read process {a.pid}: ptrace is not permitted: it belongs to uid 0; "
        "run as that user, or with sudo\n"
    )


@needs_py_spy
@pytest.mark.skipif(os.getuid() != 0 or not shutil.which("setpriv"), reason="root and setpriv")
def test_without_cap_sys_ptrace_says_cap_add(procs: StackProcs) -> None:
    # Root without CAP_SYS_PTRACE may not trace a process with more capabilities: as in a
    # container, where the fix is --cap-add SYS_PTRACE.
    a = procs.blocked_in("waiting_in_all_reduce")
    message = _dump_under(["setpriv", "--bounding-set=-sys_ptrace"], a.pid, procs.runs)
    assert message.startswith(f"cannot read process {a.pid}: ptrace is not permitted")
    assert message.endswith("in a container, start it with --cap-add SYS_PTRACE\n")
    assert message.count("\n") == 1


def test_py_spy_errors_become_one_line() -> None:
    me = os.getpid()
    name = os.path.basename(os.path.realpath(sys.executable))
    assert explain(me, "Error: Failed to find python version from target process\n") == (
        f"not a Python process ({name}, pid {me})"
    )
    assert explain(me, "Error: Unsupported version of Python: 3.99.0\n") == (
        f"py-spy cannot read this Python version (pid {me}): pip install -U py-spy"
    )
    weird = "Error: Failed to frobnicate\n\nCaused by:\n    0: I/O error (os error 5)\n"
    assert explain(me, weird) == (
        f"py-spy failed on process {me}: Failed to frobnicate (I/O error (os error 5))"
    )
    assert explain(me, "") == f"py-spy failed on process {me}: no message"


# --- formatting ----------------------------------------------------------------------------------


def test_label_lines() -> None:
    assert label_lines("rank3", "a\nb\n\n") == "[rank3]: a\n[rank3]: b\n"
    assert label_lines("rank3", "") == "[rank3]: \n"
