"""rankrun's command, with a note of the time at each step of a multi-node launch.

    python bench/timed_agent.py <rankrun's arguments>

For bench/multi_launch_parts.py only: it wraps, from outside, the functions an agent calls on
its way to its first rank, and appends ``step time`` lines (wall clock) to
``$BENCH_DIR/parts.<pid>``. A function the code no longer has is left out, not an error.
"""

import os
import time

UP = time.time()  # the interpreter is up: the first line it runs

import functools  # noqa: E402
import importlib  # noqa: E402
import sys  # noqa: E402
from collections.abc import Callable  # noqa: E402
from typing import Any  # noqa: E402

_FD = os.open(
    os.path.join(os.environ["BENCH_DIR"], f"parts.{os.getpid()}"),
    os.O_WRONLY | os.O_CREAT | os.O_APPEND,
    0o644,
)


def note(step: str, at: float | None = None) -> None:
    os.write(_FD, f"{step} {time.time() if at is None else at!r}\n".encode())


def timed(owner: Any, name: str, step: Callable[..., str], once: bool = False) -> None:
    """Note ``step(*args)``'s start and end around ``owner.name``, if it has one."""
    inner = getattr(owner, name, None)
    if inner is None:
        return
    seen: set[str] = set()

    @functools.wraps(inner)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        what = step(*args, **kwargs)
        if once and what in seen:
            return inner(*args, **kwargs)
        seen.add(what)
        note(f"{what}.start")
        try:
            return inner(*args, **kwargs)
        finally:
            note(f"{what}.end")

    setattr(owner, name, wrapper)


def main() -> int:
    note("python_up", UP)
    from rankrun.cli.main import main as rankrun_main

    note("rankrun_imported")
    try:
        from rankrun.job import agent, control
        from rankrun.run.host import Host

        join = importlib.import_module("rankrun.job.control.join")  # not control.join, the call
    except ImportError as e:
        print(f"timed_agent: {e}", file=sys.stderr)
        return rankrun_main(sys.argv[1:])
    timed(control, "torch_distributed", lambda: "torch_import", once=True)

    def store(addr: str, port: int, **kw: Any) -> str:
        return "workers_store" if port == 0 else "job_store"

    timed(control, "serve", store)
    timed(control, "connect", lambda *a, **kw: "connect")
    timed(control, "join", lambda *a, **kw: "join")
    timed(join, "_wait_all", lambda store, me, nnodes, counter, *a, **kw: f"wait_{counter}")
    timed(agent, "Link", lambda *a, **kw: "link", once=True)
    timed(Host, "__enter__", lambda self: "host", once=True)
    timed(agent.Agent, "_plan_for", lambda self, number: f"attempt_{number}")
    timed(Host, "spawn", lambda *a, **kw: "spawn", once=True)
    return rankrun_main(sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())
