"""Python stacks of running ranks, read by py-spy (rankrun's optional extra ``stacks``).

``dump()`` runs one ``py-spy dump --pid N`` per process, all at once, each under the same
deadline. A rank that is not itself Python, such as a shell script that runs
``python -u main.py`` without ``exec``, is resolved to the Python processes it started
(``python_processes()``), found in ``/proc``. Every failure becomes a one-line message that
names its fix: py-spy missing, ptrace refused, the process gone, not Python.

This module is for the ``stacks`` command and the stall watchdog, not the launch path, so
it imports what it needs freely. It is long for one idea: finding each rank's Python
processes, running py-spy on them under one deadline, and wording each way that fails.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence

from rankrun.base.errors import RankrunError
from rankrun.base.values import NamedTuple
from rankrun.inspect.install_hint import install_hint
from rankrun.inspect.procfs import ProcStat, all_processes, process_name, read_stat
from rankrun.inspect.ptrace import explain, traced

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import IO


class StacksError(RankrunError):
    """py-spy cannot be used at all. The message is one line with the fix."""


class StackDump(NamedTuple):
    label: str
    """The caller's name for the process, such as ``rank3``."""
    pid: int
    """The process dumped."""
    text: str
    """py-spy's report, from the first thread on (no banner); empty on error."""
    error: str | None
    """One line saying why there is no report, with the fix; None on success."""
    via: int | None = None
    """The pid asked for, when it was not Python and ``pid`` is a Python process under it."""


# --- finding py-spy ----------------------------------------------------------------------------


def find_py_spy(env: Mapping[str, str] | None = None, executable: str | None = None) -> str | None:
    """py-spy's path: on ``PATH`` (of ``env``), else next to ``executable``
    (default ``sys.executable``, so that a venv's py-spy is found when the venv is not
    activated). None if neither has it."""
    import shutil

    path = (os.environ if env is None else env).get("PATH", os.defpath)
    found = shutil.which("py-spy", path=path)
    if found is not None:
        return found
    exe = sys.executable if executable is None else executable
    if exe:
        beside = os.path.join(os.path.dirname(exe), "py-spy")
        if os.path.isfile(beside) and os.access(beside, os.X_OK):
            return beside
    return None


# --- processes ---------------------------------------------------------------------------------


def _process_table() -> dict[int, ProcStat]:
    """Every live process: zombies and the dead left out."""
    return {pid: p for pid, p in all_processes().items() if p.live}


def _proc(pid: int) -> ProcStat | None:
    stat = read_stat(pid)
    return stat if stat is not None and stat.live else None


def is_python_process(pid: int) -> bool:
    """Whether the process runs a Python interpreter, judged by its executable's name.

    Not by ``comm``, which programs rename (torch's main thread calls itself
    ``pt_main_thread``). When the executable cannot be read (another user's process), the
    program name in the command line decides.
    """
    try:
        exe = os.readlink(f"/proc/{pid}/exe")
    except OSError:
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                exe = f.read().split(b"\0", 1)[0].decode(errors="replace")
        except OSError:
            return False
    return os.path.basename(exe).startswith("python")


def python_processes(pid: int, *, nested: bool = False) -> list[int]:
    """The Python processes that ``pid`` stands for: itself, its descendants, and the members
    of the process group ``pid`` (a rank leads its own group, and a helper whose parent died
    stays in it), in pid order.

    Only the outermost are listed unless ``nested``: a rank's DataLoader workers, Python
    processes under a Python process, are left out. ``pid`` itself comes first if it is
    Python. Empty if the process is gone or runs no Python.
    """
    return _python_processes(pid, _process_table(), nested)


def _python_processes(pid: int, table: Mapping[int, ProcStat], nested: bool) -> list[int]:
    if pid not in table:
        return []
    children: dict[int, list[int]] = {}
    for p, proc in table.items():
        children.setdefault(proc.ppid, []).append(p)
    tree: set[int] = set()
    todo = [pid, *(p for p, proc in table.items() if proc.pgrp == pid)]
    while todo:
        p = todo.pop()
        if p not in tree:
            tree.add(p)
            todo.extend(children.get(p, ()))
    pythons = {p for p in tree if is_python_process(p)}
    if not nested:
        pythons = {p for p in pythons if not _has_python_ancestor(p, table, tree, pythons)}
    return sorted(pythons, key=lambda p: (p != pid, p))


def _has_python_ancestor(
    pid: int, table: Mapping[int, ProcStat], tree: set[int], pythons: set[int]
) -> bool:
    seen = {pid}
    p = table[pid].ppid
    while p in tree and p not in seen:
        if p in pythons:
            return True
        seen.add(p)
        p = table[p].ppid
    return False


# --- dumping -----------------------------------------------------------------------------------


class _Run(NamedTuple):
    label: str
    pid: int
    via: int | None
    searched: bool
    """Whether the processes under ``pid`` were searched for Python, in vain."""
    proc: subprocess.Popen[bytes]
    out: IO[bytes]
    err: IO[bytes]


def dump(
    pids: Sequence[tuple[str, int]],
    timeout: float,
    *,
    env: Mapping[str, str] | None = None,
    py_spy: str | None = None,
    native: bool = False,
    nonblocking: bool = False,
    resolve: bool = True,
    full_filenames: bool = False,
) -> list[StackDump]:
    """Dump the Python stacks of ``pids``, given as (label, pid), in that order.

    All py-spy processes run at once and are ended at ``timeout`` seconds. With ``resolve``,
    a pid that is not Python stands for the Python processes under it (one dump each, with
    ``via`` set). ``native`` adds C/C++ frames; ``nonblocking`` reads without pausing the
    process; ``full_filenames`` keeps each file's whole path. A stopped or traced process
    (Ctrl-Z, a debugger) is always read so: py-spy can neither pause it again nor attach to
    it, and a stopped one does not change while read.
    ``env`` is where ``PATH`` comes from and what py-spy runs with.

    Raises ``StacksError`` when py-spy is missing or cannot run; a failure for one process is
    that process's ``error``.
    """
    exe = py_spy if py_spy is not None else find_py_spy(env)
    if exe is None:
        raise StacksError(f"py-spy is needed to read stacks and is not installed: {install_hint()}")
    table = _process_table()
    child_env = {**(os.environ if env is None else env), "RUST_BACKTRACE": "0"}
    child_env["RUST_LIB_BACKTRACE"] = "0"
    results: list[StackDump | _Run] = []
    try:
        for label, pid in pids:
            if pid not in table:
                results.append(StackDump(label, pid, "", f"process {pid} is gone"))
                continue
            targets: list[tuple[int, int | None]] = [(pid, None)]
            searched = resolve and not is_python_process(pid)
            if searched:
                found = _python_processes(pid, table, nested=False)
                if found:
                    targets = [(p, pid) for p in found]
                    searched = False
            for target, via in targets:
                argv = [exe, "dump", "--pid", str(target)]
                if native:
                    argv.append("--native")
                if full_filenames:
                    argv.append("--full-filenames")
                if nonblocking or table[target].state in ("T", "t") or traced(target):
                    argv.append("--nonblocking")
                results.append(_start(label, target, via, searched, argv, child_env))
        _wait_all([r.proc for r in results if isinstance(r, _Run)], time.monotonic() + timeout)
        return [r if isinstance(r, StackDump) else _finish(r, timeout) for r in results]
    finally:
        for r in results:
            if isinstance(r, _Run):
                if r.proc.returncode is None:
                    r.proc.kill()
                    r.proc.wait()
                r.out.close()
                r.err.close()


def _start(
    label: str,
    pid: int,
    via: int | None,
    searched: bool,
    argv: list[str],
    env: Mapping[str, str],
) -> _Run:
    import tempfile  # files, not pipes: no py-spy waits on a full pipe while another is read

    # Closed by _finish, or by dump() when it gives up early.
    out, err = tempfile.TemporaryFile(), tempfile.TemporaryFile()  # noqa: SIM115
    try:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=err, env=env)
    except OSError as e:
        out.close()
        err.close()
        raise StacksError(
            f"cannot run {argv[0]}: {e.strerror}: reinstall it with {install_hint()}"
        ) from None
    return _Run(label, pid, via, searched, proc, out, err)


def _wait_all(procs: Sequence[subprocess.Popen[bytes]], deadline: float) -> None:
    """Reap each of ``procs`` as it ends, until ``deadline``.

    Through pidfds where there are some (Linux 5.3): ``Popen.wait(timeout)`` polls with
    growing sleeps, which turned an 11 ms py-spy run into 40 ms.
    """
    import select

    fds: dict[int, subprocess.Popen[bytes]] = {}
    try:
        for proc in procs:
            fds[os.pidfd_open(proc.pid)] = proc
    except (AttributeError, OSError):
        for fd in fds:
            os.close(fd)
        for proc in procs:
            try:
                proc.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
        return
    poller = select.poll()
    for fd in fds:
        poller.register(fd, select.POLLIN)
    try:
        while fds and (left := deadline - time.monotonic()) > 0:
            for fd, _ in poller.poll(left * 1000 + 1):
                fds.pop(fd).wait()
                poller.unregister(fd)
                os.close(fd)
    finally:
        for fd in fds:
            os.close(fd)


def _finish(run: _Run, timeout: float) -> StackDump:
    with run.out, run.err:
        code = run.proc.poll()
        if code is None:
            run.proc.kill()
            run.proc.wait()
            return _failed(run, _timed_out(run.pid, timeout))
        if code == 0:
            run.out.seek(0)
            text = _without_banner(run.out.read().decode(errors="replace"))
            return StackDump(run.label, run.pid, text, None, run.via)
        run.err.seek(0)
        error = explain(run.pid, run.err.read().decode(errors="replace"))
        if run.searched and error.startswith("not a Python process"):
            error += ", nor is any process it started"
        return _failed(run, error)


def _without_banner(text: str) -> str:
    """py-spy's report without its banner: ``Process N: <command line>``, ``Python v3.X
    (<path>)`` and a blank line. The label says which rank it is, and the first thread's id
    is its pid. The command line may span lines, so the banner ends at the blank line after
    ``Python v``."""
    import re

    banner = re.match(r"Process \d+: .*?\nPython v[^\n]*\n\n", text, re.DOTALL)
    return text[banner.end() :] if banner else text


def _failed(run: _Run, error: str) -> StackDump:
    return StackDump(run.label, run.pid, "", error, run.via)


def _timed_out(pid: int, timeout: float) -> str:
    proc = _proc(pid)
    if proc is None:
        return f"process {pid} is gone"
    if proc.state == "D":
        why = f"process {pid} is in uninterruptible sleep (state D), likely inside a driver call"
    else:
        why = f"process {pid} is in state {proc.state}"
    return f"py-spy did not finish within {timeout:g} s ({why}); try nonblocking reads"


# --- formatting ----------------------------------------------------------------------------------


def label_lines(label: str, text: str) -> str:
    """Each line of ``text`` prefixed with ``[label]: ``, trailing blank lines dropped."""
    prefix = f"[{label}]: "
    lines = text.rstrip("\n").split("\n")
    return "".join(f"{prefix}{line}\n" for line in lines)


def format_dumps(dumps: Sequence[StackDump]) -> str:
    """The dumps as one text, every line labelled; an error is one labelled line."""
    parts = []
    for d in dumps:
        if d.via is not None:
            name = process_name(d.via) or "not Python"
            parts.append(
                label_lines(d.label, f"pid {d.via} is {name}; its Python process {d.pid}:")
            )
        parts.append(label_lines(d.label, d.text if d.error is None else f"error: {d.error}"))
    return "".join(parts)
