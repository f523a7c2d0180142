"""rankrun side by side with torchrun and the bare Popen loop, on the same workloads.

    python bench/compare.py            # the full set: medians of 5, up to 256 ranks
    python bench/compare.py --quick    # a reduced set, in under a minute

Writes results/latest.md (the table), results/latest.json (every sample) and, with
matplotlib, results/launch_overhead.png. Runs are interleaved launcher by launcher, and each
figure is a median; ratios are to the bare loop measured in the same run.
"""

from __future__ import annotations

import argparse
import compileall
import importlib.util
import json
import os
import platform
import select
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

HERE = Path(__file__).resolve().parent
WORKLOADS = HERE / "workloads"
RESULTS = HERE / "results"
TAG = "BENCH_TAG"
GNU_TIME = "/usr/bin/time"
HANG_S = 3.0  # a launcher that has not exited this long after a rank failed is hung


@dataclass(frozen=True)
class Launcher:
    name: str
    argv: Callable[[int, Path, bool], list[str]]
    """(ranks, workload, chatty) -> the command line."""


def _find(program: str) -> str | None:
    beside = Path(sys.executable).parent / program
    return str(beside) if beside.exists() else shutil.which(program)


def launchers() -> dict[str, Launcher | None]:
    """The three launchers, each with the same flags where they share them; None if absent."""
    bare = [sys.executable, str(HERE / "bare_loop.py")]
    rankrun, torchrun = _find("rankrun"), _find("torchrun")

    def common(program: str, n: int) -> list[str]:
        return [program, "--standalone", "--nproc-per-node", str(n), "--no-python"]

    return {
        "bare loop": Launcher("bare loop", lambda n, w, _: [*bare, str(n), str(w)]),
        "rankrun": rankrun and Launcher("rankrun", lambda n, w, _: [*common(rankrun, n), str(w)]),
        "torchrun": torchrun
        and Launcher(
            "torchrun",
            lambda n, w, chatty: [*common(torchrun, n), *(["--tee", "3"] * chatty), str(w)],
        ),
    }


@dataclass
class Job:
    """One launcher process, started in a session of its own and tagged for the leftover count."""

    proc: subprocess.Popen[bytes]
    tag: str
    started: float

    @classmethod
    def start(cls, argv: list[str], work: Path, stdout: int | None = None) -> Job:
        tag = uuid.uuid4().hex
        env = {**os.environ, TAG: tag, "BENCH_DIR": str(work)}
        started = time.time()
        proc = subprocess.Popen(
            argv, env=env, stdout=stdout if stdout is not None else subprocess.DEVNULL,
            stderr=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip
        return cls(proc, tag, started)

    def wait(self, timeout: float) -> float | None:
        """The wall-clock time the launcher exited, or None if it still runs after ``timeout``."""
        fd = os.pidfd_open(self.proc.pid)
        try:
            ready, _, _ = select.select([fd], [], [], timeout)
        finally:
            os.close(fd)
        if not ready:
            return None
        exited = time.time()
        self.proc.wait()
        return exited

    def leftovers(self) -> int:
        """Live processes this job started, other than a launcher that is still running."""
        return len([p for p in tagged(self.tag) if p != self.proc.pid])

    def end(self) -> None:
        for pid in tagged(self.tag):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.proc.wait()


def tagged(tag: str) -> list[int]:
    needle = f"{TAG}={tag}".encode()
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                if f.read().rsplit(b")", 1)[1].split()[0] in (b"Z", b"X"):
                    continue
            with open(f"/proc/{name}/environ", "rb") as f:
                if needle in f.read().split(b"\0"):
                    found.append(int(name))
        except OSError:
            continue
    return found


def wait_for_ranks(work: Path, count: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while len(list(work.glob("up.*"))) < count:
        if time.monotonic() > deadline:
            raise RuntimeError(f"ranks did not come up in {work}")
        time.sleep(0.01)


def measure_launch(launcher: Launcher, ranks: int) -> float:
    with tempfile.TemporaryDirectory() as work:
        job = Job.start(launcher.argv(ranks, WORKLOADS / "exit0.sh", False), Path(work))
        exited = job.wait(timeout=300)
        assert exited is not None, f"{launcher.name} did not finish {ranks} ranks"
        return exited - job.started


def measure_failure(launcher: Launcher) -> dict[str, float | int | None]:
    """4 ranks; rank 1 exits 3 once all are up. Latency from its exit to the launcher's."""
    with tempfile.TemporaryDirectory() as work:
        job = Job.start(launcher.argv(4, WORKLOADS / "fail.sh", False), Path(work))
        try:
            exited = job.wait(timeout=HANG_S)
            died = float((Path(work) / "died").read_text())
            time.sleep(1)
            return {
                "latency_s": None if exited is None else exited - died,
                "exit_code": None if exited is None else job.proc.returncode,
                "leftovers": job.leftovers(),
            }
        finally:
            job.end()


def measure_signal(launcher: Launcher, signum: int) -> int:
    """Processes alive one second after the launcher got ``signum`` (and exited, if it did)."""
    with tempfile.TemporaryDirectory() as work:
        job = Job.start(launcher.argv(4, WORKLOADS / "block.sh", False), Path(work))
        try:
            wait_for_ranks(Path(work), 4)
            job.proc.send_signal(signum)
            job.wait(timeout=40)
            time.sleep(1)
            return job.leftovers()
        finally:
            job.end()


def measure_output(launcher: Launcher, lines: int) -> dict[str, float | int]:
    """4 ranks each write ``lines`` lines of 100 bytes; the launcher's stdout is a file."""
    with tempfile.TemporaryDirectory() as work:
        out, rss = Path(work) / "out", Path(work) / "rss"
        argv = launcher.argv(4, WORKLOADS / "chatty.sh", True)
        if os.path.exists(GNU_TIME):
            argv = [GNU_TIME, "-f", "%M", "-o", str(rss), *argv]
        os.environ["BENCH_LINES"] = str(lines)
        with open(out, "wb") as f:
            job = Job.start(argv, Path(work), stdout=f.fileno())
            exited = job.wait(timeout=600)
        assert exited is not None
        with open(out, "rb") as f:
            delivered = sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(1 << 20), b""))
        peak = int(rss.read_text().split()[-1]) / 1024 if rss.exists() else float("nan")
        return {"seconds": exited - job.started, "lines": delivered, "peak_mib": peak}


def run_all(
    chosen: dict[str, Launcher], sizes: list[int], repeats: int, lines: int, failure_rounds: int
) -> dict:
    samples: dict[str, dict[str, list]] = {name: {} for name in chosen}

    def record(name: str, figure: str, value: object) -> None:
        samples[name].setdefault(figure, []).append(value)

    for i in range(repeats):
        order = list(chosen.values())
        order = order[i % len(order) :] + order[: i % len(order)]  # interleave, rotate the lead
        for launcher in order:
            for n in sizes:
                record(launcher.name, f"launch_{n}", measure_launch(launcher, n))
            if i < failure_rounds:
                record(launcher.name, "failure", measure_failure(launcher))
            record(launcher.name, "output", measure_output(launcher, lines))
        print(f"  round {i + 1} of {repeats} done", file=sys.stderr)
    for launcher in chosen.values():  # one run each: a count, not a timing
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGKILL):
            record(launcher.name, f"leftovers_{signum.name}", measure_signal(launcher, signum))
    return samples


def median(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if len(present) == len(values) and present else None


def summarize(samples: dict, sizes: list[int]) -> dict[str, dict[str, object]]:
    rows: dict[str, dict[str, object]] = {}
    for name, figures in samples.items():
        failures, outputs = figures["failure"], figures["output"]
        rows[name] = {
            **{f"launch_{n}": median(figures[f"launch_{n}"]) for n in sizes},
            "failure_latency": median([f["latency_s"] for f in failures]),
            "exit_code": failures[-1]["exit_code"],
            "leftovers_failure": max(f["leftovers"] for f in failures),
            **{k: v[0] for k, v in figures.items() if k.startswith("leftovers_")},
            "peak_mib": median([o["peak_mib"] for o in outputs]),
            "output_s": median([o["seconds"] for o in outputs]),
            "output_lines": min(o["lines"] for o in outputs),
        }
    return rows


def _ratio(value: float | None, base: float | None) -> str:
    return f" ({value / base:.2f}×)" if value is not None and base else ""


def table(
    rows: dict[str, dict[str, object]], sizes: list[int], lines: int, absent: list[str]
) -> str:
    base = rows["bare loop"]
    heads = [*(f"launch, {n} rank{'s' * (n > 1)}" for n in sizes), "failure → exit",
             "exit code", "left behind: failure / INT / TERM / KILL", "peak RSS",
             f"output, 4×{lines * 100 / 1e6:g} MB"]  # fmt: skip
    out = ["| launcher | " + " | ".join(heads) + " |", "|---" * (len(heads) + 1) + "|"]
    for name, r in rows.items():
        cells = [f"{r[f'launch_{n}']:.3f} s{_ratio(r[f'launch_{n}'], base[f'launch_{n}'])}"
                 for n in sizes]  # fmt: skip
        latency = r["failure_latency"]
        cells.append("never exits" if latency is None else f"{latency * 1000:.0f} ms")
        cells.append("none (hangs)" if r["exit_code"] is None else str(r["exit_code"]))
        left = [r["leftovers_failure"], r["leftovers_SIGINT"], r["leftovers_SIGTERM"],
                r["leftovers_SIGKILL"]]  # fmt: skip
        cells.append(" / ".join(map(str, left)))
        peak = r["peak_mib"]
        cells.append("n/a (no GNU time)" if peak != peak else f"{peak:.0f} MiB")
        complete = "" if r["output_lines"] >= 4 * lines else " (lines lost!)"
        cells.append(f"{r['output_s']:.2f} s{_ratio(r['output_s'], base['output_s'])}{complete}")
        out.append(f"| {name} | " + " | ".join(cells) + " |")
    for name in absent:
        out.append(f"| {name} | absent: not installed |" + " |" * (len(heads) - 1))
    return "\n".join(out)


def machine() -> dict[str, object]:
    model = "unknown CPU"
    if os.path.exists("/proc/cpuinfo"):
        with open("/proc/cpuinfo") as f:
            model = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")),
                         model)  # fmt: skip

    def version(dist: str) -> str:
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            return "absent"

    return {
        "cpu": model, "cores": len(os.sched_getaffinity(0)), "os": platform.platform(),
        "python": platform.python_version(), "torch": version("torch"),
        "rankrun": version("rankrun"), "date": time.strftime("%Y-%m-%d"),
    }  # fmt: skip


def plot(samples: dict, sizes: list[int], path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, ax = plt.subplots(figsize=(6, 4))
    for name, figures in samples.items():
        ax.plot(sizes, [median(figures[f"launch_{n}"]) for n in sizes], marker="o", label=name)
    ax.set(xscale="log", yscale="log", xlabel="ranks (each exits at once)",
           ylabel="wall time of the whole launch (s)", title="Launch overhead")  # fmt: skip
    ax.set_xticks(sizes, [str(n) for n in sizes])
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    return True


def compile_bytecode() -> None:
    """Compile rankrun's bytecode, as ``pip install`` does and as torch's already is.

    An editable install under PYTHONDONTWRITEBYTECODE would otherwise recompile rankrun's
    source at every launch, which no installed launcher does.
    """
    spec = importlib.util.find_spec("rankrun")
    if spec is not None and spec.submodule_search_locations:
        for location in spec.submodule_search_locations:
            compileall.compile_dir(location, quiet=1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a reduced set, under a minute")
    parser.add_argument(
        "--results", type=Path, help="where to write (default: results/, or results/quick/)"
    )
    args = parser.parse_args()
    if args.results is None:  # a quick run never overwrites the committed full results
        args.results = RESULTS / "quick" if args.quick else RESULTS
    if args.quick:
        sizes, repeats, lines, failure_rounds = [1, 8], 3, 20000, 1
    else:
        sizes, repeats, lines, failure_rounds = [1, 8, 64, 256], 5, 200000, 5
    found = launchers()
    chosen = {name: launcher for name, launcher in found.items() if launcher is not None}
    compile_bytecode()
    info = machine()
    print(f"machine: {info}", file=sys.stderr)
    samples = run_all(chosen, sizes, repeats, lines, failure_rounds)
    rows = summarize(samples, sizes)
    absent = [name for name, launcher in found.items() if launcher is None]
    text = "\n".join([
        f"Machine: {info['cpu']}, {info['cores']} cores, {info['os']}; Python {info['python']}, "
        f"torch {info['torch']}, rankrun {info['rankrun']}; {info['date']}.",
        f"Command: `python bench/compare.py{' --quick' if args.quick else ''}`; medians of "
        f"{repeats} interleaved runs ({failure_rounds} for failure → exit); ratios are to the "
        "bare loop; leftovers are counted once per case, one second after it.",
        "", table(rows, sizes, lines, absent),
    ])  # fmt: skip
    args.results.mkdir(parents=True, exist_ok=True)
    (args.results / "latest.md").write_text(text + "\n")
    (args.results / "latest.json").write_text(json.dumps(
        {"machine": info, "quick": args.quick, "sizes": sizes, "lines": lines, "rows": rows,
         "samples": samples}, indent=1) + "\n")  # fmt: skip
    if not plot(samples, sizes, args.results / "launch_overhead.png"):
        print("no plot: pip install matplotlib (the bench extra)", file=sys.stderr)
    print(text)


if __name__ == "__main__":
    main()
