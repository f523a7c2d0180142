"""Where rankrun's launch time goes, beside the bare loop's, for 8 no-op ranks.

    python bench/launch_parts.py [--repeats 41]

Times whole commands, interleaved, and prints medians: each launcher, then the interpreter
with only the imports each needs. The difference between the import rows is what rankrun's
own modules cost; the rest of the gap is its work (the guardian, pipes, the event loop).
"""

from __future__ import annotations

import argparse
import compileall
import statistics
import subprocess
import sys
import time
from pathlib import Path

from compare import WORKLOADS, launchers

PY = sys.executable
RANKRUN_IMPORTS = "import subprocess, rankrun.cli.main, rankrun.cli.flags, rankrun.job.launcher"


def commands() -> dict[str, list[str]]:
    """The launchers as compare.py runs them, and the interpreter with each one's imports."""
    found = launchers()
    bare, rankrun = found["bare loop"], found["rankrun"]
    assert bare is not None and rankrun is not None, "rankrun is not installed beside Python"
    workload = WORKLOADS / "exit0.sh"
    return {
        "bare loop, 8 ranks": bare.argv(8, workload, False),
        "rankrun, 8 ranks": rankrun.argv(8, workload, False),
        "python, the bare loop's imports": [PY, "-c", "import subprocess"],
        "python, rankrun's imports": [PY, "-c", RANKRUN_IMPORTS],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=41)
    repeats = parser.parse_args().repeats
    import rankrun

    compileall.compile_dir(str(Path(rankrun.__file__).parent), quiet=1)
    runs = commands()
    samples: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(repeats):
        for name, argv in runs.items():
            started = time.perf_counter()
            subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
            samples[name].append(time.perf_counter() - started)
    medians = {name: statistics.median(times) * 1000 for name, times in samples.items()}
    base = medians["bare loop, 8 ranks"]
    print(f"medians of {repeats} interleaved runs, {sys.platform}, Python {sys.version.split()[0]}")
    for name, ms in medians.items():
        print(f"  {name:34s} {ms:6.1f} ms  ({ms / base:.2f}x the bare loop)")
    imports = medians["python, rankrun's imports"] - medians["python, the bare loop's imports"]
    gap = medians["rankrun, 8 ranks"] - base
    print(f"  rankrun's own modules: {imports:.1f} ms of the {gap:.1f} ms gap")


if __name__ == "__main__":
    main()
