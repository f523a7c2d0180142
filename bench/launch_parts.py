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

HERE = Path(__file__).resolve().parent
WORKLOAD = str(HERE / "workloads" / "exit0.sh")
PY = sys.executable
SCRIPT = Path(PY).parent / "rankrun"  # as compare.py runs it: pip's script, else -m
RANKRUN = [str(SCRIPT)] if SCRIPT.exists() else [PY, "-m", "rankrun"]
RANKRUN_IMPORTS = "import subprocess, rankrun.cli, rankrun.flags, rankrun.launcher"

COMMANDS = {
    "bare loop, 8 ranks": [PY, str(HERE / "bare_loop.py"), "8", WORKLOAD],
    "rankrun, 8 ranks": [*RANKRUN, "--standalone", "--nproc-per-node", "8", "--no-python",
                         WORKLOAD],
    "python, the bare loop's imports": [PY, "-c", "import subprocess"],
    "python, rankrun's imports": [PY, "-c", RANKRUN_IMPORTS],
}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=41)
    repeats = parser.parse_args().repeats
    import rankrun

    compileall.compile_dir(str(Path(rankrun.__file__).parent), quiet=1)
    samples: dict[str, list[float]] = {name: [] for name in COMMANDS}
    for _ in range(repeats):
        for name, argv in COMMANDS.items():
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
