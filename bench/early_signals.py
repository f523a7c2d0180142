"""How soon after it starts rankrun owns SIGINT: a Ctrl-C at each delay, and who answered.

    python bench/early_signals.py [--rankrun PATH] [--repeats 20] [--step 2.5] [--until 60]

Starts ``rankrun --standalone --no-python sleep 5`` and sends SIGINT to it after a delay,
counted from the return of Popen (the exec has happened by then), for each delay from 0 ms
up. Each run ended in one of three ways:
- ``killed``: before Python installed its own handler, the default action ended it, silently;
- ``python``: Python's handler raised KeyboardInterrupt (or start-up failed: ``Fatal Python
  error``) before rankrun's handler was in place;
- ``rankrun``: rankrun's handler took it: one line and exit code 130.
The figure for the README is the last delay with a ``python`` answer, and the first from which
every run was rankrun's. On a busy machine that edge is blurred by some milliseconds, so the
time to the handler is also shown as medians of interleaved runs of the interpreter alone, with
what the installed ``rankrun`` script runs before rankrun's handler, and with what pip's
[project.scripts] wrapper runs (``import re`` and a ``re.sub``) before the same.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path


def ending(rankrun: str, delay: float) -> str:
    proc = subprocess.Popen(
        [rankrun, "--standalone", "--no-python", "sleep", "5"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    time.sleep(delay)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    if "KeyboardInterrupt" in err or "Fatal Python error" in err:
        return "python"  # which then ends itself with SIGINT, or exit code 1
    if proc.returncode == -signal.SIGINT:
        assert not err, err
        return "killed"
    assert proc.returncode == 128 + signal.SIGINT, (proc.returncode, err)
    return "rankrun"


STARTS = {
    "python -c pass": "pass",
    "the rankrun script, to the handler": "from rankrun.cli.main import main",
    "pip's wrapper, to the handler": "import re, sys\nfrom rankrun.cli.main import main\n"
    "re.sub(r'(-script\\.pyw|\\.exe)?$', '', sys.argv[0])",
}


def start_medians(python: str, repeats: int) -> dict[str, float]:
    """Milliseconds from exec to exit of each start, interleaved so that load hits all alike."""
    times: dict[str, list[float]] = {name: [] for name in STARTS}
    for _ in range(repeats):
        for name, code in STARTS.items():
            start = time.perf_counter()
            subprocess.run([python, "-c", code], check=True)
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) * 1000 for name, t in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    beside = Path(sys.executable).parent / "rankrun"
    parser.add_argument("--rankrun", default=str(beside) if beside.exists() else "rankrun")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--step", type=float, default=2.5, help="ms between delays")
    parser.add_argument("--until", type=float, default=60.0, help="the last delay, in ms")
    a = parser.parse_args()
    rankrun = shutil.which(a.rankrun) or a.rankrun
    python = Path(rankrun).read_text(errors="replace").partition("\n")[0].removeprefix("#!")
    python = python.strip() if os.path.isfile(python.strip()) else sys.executable
    print(f"{rankrun} ({python}), {len(os.sched_getaffinity(0))} cores, {a.repeats} runs a delay")
    for name, ms in start_medians(python, 41).items():
        print(f"{name}: {ms:.1f} ms (median of 41)")
    last_python, all_rankrun_from = None, None
    steps = int(a.until / a.step) + 1
    print("delay ms   killed  python  rankrun")
    for i in range(steps):
        delay = i * a.step
        counts = {"killed": 0, "python": 0, "rankrun": 0}
        for _ in range(a.repeats):
            counts[ending(rankrun, delay / 1000)] += 1
        print(f"{delay:8.1f}   {counts['killed']:6}  {counts['python']:6}  {counts['rankrun']:7}")
        if counts["python"]:
            last_python = delay
        if counts["rankrun"] == a.repeats:
            all_rankrun_from = delay if all_rankrun_from is None else all_rankrun_from
        else:
            all_rankrun_from = None
    print(f"last delay with Python's answer: {last_python} ms; "
          f"rankrun's answer every time from {all_rankrun_from} ms")  # fmt: skip


if __name__ == "__main__":
    main()
