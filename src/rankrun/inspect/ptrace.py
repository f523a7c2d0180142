"""Why py-spy could not read a process, in one line that names the fix: ptrace and its gates."""

from __future__ import annotations

import os

from rankrun.inspect.procfs import process_name, read_stat

_CAP_SYS_PTRACE = 19


def explain(pid: int, stderr: str) -> str:
    """A one-line reason, with its fix, for py-spy's failure on ``pid`` given its stderr."""
    low = stderr.lower()
    stat = read_stat(pid)
    if stat is None or not stat.live:
        return f"process {pid} is gone"
    if "permission denied" in low or "operation not permitted" in low:
        return ptrace_refused(pid)
    if "failed to find python version" in low or "failed to find a python interpreter" in low:
        name = process_name(pid) or "?"
        return f"not a Python process ({name}, pid {pid})"
    if "unsupported version" in low or "unsupported python" in low:
        return f"py-spy cannot read this Python version (pid {pid}): pip install -U py-spy"
    return f"py-spy failed on process {pid}: {_first_error(stderr)}"


def _first_error(stderr: str) -> str:
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    if not lines:
        return "no message"
    first = next((line for line in lines if line.startswith("Error:")), lines[0])
    text = first.removeprefix("Error:").strip()
    cause = next((line for line in lines if line.startswith("0:")), "")
    return f"{text} ({cause[2:].strip()})" if cause else text


def ptrace_scope() -> int | None:
    """``kernel.yama.ptrace_scope``: 0 classic, 1 descendants only, 2 admin only, 3 none; None
    without Yama."""
    try:
        with open("/proc/sys/kernel/yama/ptrace_scope") as f:
            return int(f.read())
    except (OSError, ValueError):
        return None


def _status_field(pid: int | str, key: str) -> str | None:
    """The first word of a field of ``/proc/<pid>/status``, such as ``Uid:``."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(key):
                    return line.split()[1]
    except (OSError, IndexError):
        pass
    return None


def traced(pid: int) -> bool:
    """Whether a debugger (or a py-spy) is attached to ``pid``."""
    return _status_field(pid, "TracerPid:") not in (None, "0")


def _owner(pid: int) -> int | None:
    uid = _status_field(pid, "Uid:")
    return None if uid is None else int(uid)


def _has_cap_sys_ptrace() -> bool:
    caps = _status_field("self", "CapEff:")
    return caps is not None and bool(int(caps, 16) >> _CAP_SYS_PTRACE & 1)


def ptrace_refused(pid: int) -> str:
    """Why this process may not ptrace ``pid``, and the fix, in one line."""
    head = f"cannot read process {pid}: ptrace is not permitted"
    me, owner, scope = os.geteuid(), _owner(pid), ptrace_scope()
    tracer = _status_field(pid, "TracerPid:")
    if tracer not in (None, "0"):
        return (
            f"cannot read process {pid}: process {tracer} ({process_name(int(tracer or 0))}) "
            "is tracing it already; detach that debugger"
        )
    if scope == 3:
        return f"{head}: kernel.yama.ptrace_scope is 3, which only a reboot undoes"
    if me != 0 and owner is not None and owner != me:
        return f"{head}: it belongs to uid {owner}; run as that user, or with sudo"
    if _has_cap_sys_ptrace():
        return (
            f"{head} even with CAP_SYS_PTRACE: a seccomp, AppArmor or SELinux policy refuses "
            "it; in a container, add --security-opt seccomp=unconfined"
        )
    why = {
        1: "kernel.yama.ptrace_scope=1 lets only a process's ancestors trace it",
        2: "kernel.yama.ptrace_scope=2 lets only CAP_SYS_PTRACE trace",
    }.get(scope or 0, "no CAP_SYS_PTRACE")
    fixes = []
    if me != 0:
        fixes.append('run with sudo (sudo env "PATH=$PATH" ...)')
    if scope == 1:
        where = " on the host" if me == 0 else ""
        fixes.append(f"allow it{where}: echo 0 | sudo tee /proc/sys/kernel/yama/ptrace_scope")
    fixes.append("in a container, start it with --cap-add SYS_PTRACE")
    return f"{head} ({why}): {', or '.join(fixes)}"
