"""Where launch -> first rank running goes across nodes: N agents of one rank on this host.

    python bench/multi_launch_parts.py [--agents 2,4,8] [--repeats 5]

Runs compare.py's multi-node launch row (note_start.sh: the rank notes the time and exits),
interleaving plain rankrun agents with the same agents under bench/timed_agent.py, which notes
the time at each step from outside the code. The critical path to the first rank is cut at:

    launch -> the last agent to claim its node rank is up (interpreter) -> has imported
    rankrun and planned -> has imported torch -> has its store (node 0: served; others:
    connected) -> has claimed -> the first rank's agent has the verdict (join done) -> its
    attempt's workers' store -> its gang spawns the rank -> the rank runs

Each part is a median over the runs; the parts of one run add up to its launch -> first rank.
The plain row shows what the notes themselves cost. Prints a table and writes
results/multi_launch_parts.txt (the table) and .json (every sample).
"""

from __future__ import annotations

import argparse
import compileall
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from compare import (
    RESULTS,
    WORKLOADS,
    Agents,
    MultiNode,
    compile_bytecode,
    counts,
    machine,
    multi_node_launchers,
    read_stamp,
    rotated,
)

HERE = Path(__file__).resolve().parent
START_S = 120.0  # for 8 agents importing torch on 2 cores: about 6 s idle, 9 s loaded

PARTS = {  # name: (from, to) over the notes of L (the last to claim) and F (the first rank's)
    "agent process up (exec, interpreter)": ("launch", "L.python_up"),
    "rankrun's imports and plan": ("L.python_up", "L.torch_import.start"),
    "torch import (torch.distributed)": ("L.torch_import.start", "L.torch_import.end"),
    "store: served (node 0) / connected": ("L.torch_import.end", "L.store.end"),
    "claim (job key, claim, counters)": ("L.store.end", "L.wait_joined.start"),
    "join: last claim -> verdict": ("L.wait_joined.start", "F.join.end"),
    "agent and link set up": ("F.join.end", "F.host.start"),
    "host: guardian, subreaper, handlers": ("F.host.start", "F.host.end"),
    "host up -> attempt starts": ("F.host.end", "F.attempt_0.start"),
    "workers' store for the attempt": ("F.attempt_0.start", "F.attempt_0.end"),
    "gang up to the spawn": ("F.attempt_0.end", "F.spawn.start"),
    "rank: spawn -> running": ("F.spawn.start", "F.rank"),
}


def timed_launcher(plain: MultiNode) -> MultiNode:
    """rankrun's agent command line, run through timed_agent.py instead of the console script."""

    def argv(nodes: int, node: int, port: int, workload: Path) -> list[str]:
        return [sys.executable, str(HERE / "timed_agent.py"),
                *plain.argv(nodes, node, port, workload)[1:]]  # fmt: skip

    return MultiNode("rankrun, timed", argv)


def read_notes(path: Path) -> dict[str, float]:
    notes: dict[str, float] = {}
    for line in path.read_text().splitlines():
        step, _, at = line.partition(" ")
        notes.setdefault(step, float(at))
    for store in ("job_store", "connect"):  # node 0 serves the job's store; the others connect
        if f"{store}.end" in notes:
            notes["store.end"] = notes[f"{store}.end"]
    return notes


def keeping_stderr(launcher: MultiNode) -> MultiNode:
    """The same agents, each writing its stderr to ``$BENCH_DIR/stderr.<its pid>``."""
    keep = 'exec "$0" "$@" 2>"$BENCH_DIR/stderr.$$"'
    return MultiNode(launcher.name, lambda *a: ["/bin/sh", "-c", keep, *launcher.argv(*a)])


def stacks(pid: int) -> str:
    """py-spy's dump of a hung agent, where py-spy is installed."""
    spy = shutil.which("py-spy")
    if spy is None:
        return ""
    dump = subprocess.run([spy, "dump", "--pid", str(pid)], capture_output=True, text=True)
    return dump.stdout + dump.stderr


def run_once(launcher: MultiNode, nodes: int) -> dict[str, object]:
    """One launch of ``nodes`` agents: each agent's notes and its rank's start, from launch;
    or, where an agent failed, its exit code and what it wrote to stderr."""
    with tempfile.TemporaryDirectory() as work:
        agents = Agents.start(keeping_stderr(launcher), nodes, WORKLOADS / "note_start.sh",
                              Path(work))  # fmt: skip
        try:
            agents.wait(timeout=START_S)
            codes = agents.exit_codes()
            if codes != [0] * nodes:
                stderr = {node: (Path(work) / f"stderr.{job.proc.pid}").read_text()[-2000:]
                          + stacks(job.proc.pid)
                          for node, job in enumerate(agents.jobs) if codes[node] != 0}  # fmt: skip
                print(f"{launcher.name}, {nodes} agents: exit codes {codes}; see the JSON",
                      file=sys.stderr)  # fmt: skip
                return {"exit_codes": codes, "stderr": stderr}
            per_agent = []
            for node, job in enumerate(agents.jobs):
                path = Path(work) / f"parts.{job.proc.pid}"
                notes = read_notes(path) if path.exists() else {}
                rank = read_stamp(Path(work) / f"started.{node}")
                assert rank is not None, f"node {node}'s rank never ran"
                notes["rank"] = rank
                per_agent.append({k: v - agents.started for k, v in notes.items()})
            return {"agents": per_agent}
        finally:
            agents.end()


def parts_of(run: dict[str, object]) -> dict[str, float]:
    """The critical path of one timed run, part by part, in seconds."""
    agents = run["agents"]
    assert isinstance(agents, list)
    first = min(agents, key=lambda a: a["rank"])
    last = max(agents, key=lambda a: a["wait_joined.start"])
    at = {"launch": 0.0, **{f"L.{k}": v for k, v in last.items()},
          **{f"F.{k}": v for k, v in first.items()}}  # fmt: skip
    return {name: at[b] - at[a] for name, (a, b) in PARTS.items()}


def overlap(run: dict[str, object]) -> dict[str, float]:
    """What every agent paid on its own, whatever the path: the slowest of each."""
    agents = run["agents"]
    assert isinstance(agents, list)
    return {
        "torch import, slowest agent": max(
            a["torch_import.end"] - a["torch_import.start"] for a in agents
        ),
        "torch import, median agent": statistics.median(
            a["torch_import.end"] - a["torch_import.start"] for a in agents
        ),
        "join: claim -> verdict, after the last claim, slowest agent": max(
            a["join.end"] - max(b["wait_joined.start"] for b in agents) for a in agents
        ),
        "workers' store, slowest agent": max(
            a["attempt_0.end"] - a["attempt_0.start"] for a in agents
        ),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agents", type=counts, default=[2, 4, 8])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--results", type=Path, default=RESULTS)
    parser.add_argument("--variant", action="append", default=[], metavar="NAME=SRC",
                        help="also time the rankrun under SRC (a patched copy of src/), "
                        "interleaved with the rest")  # fmt: skip
    args = parser.parse_args()
    plain = multi_node_launchers()["rankrun"]
    assert plain is not None, "rankrun is not installed beside Python"
    kinds = {"plain": plain, "timed": timed_launcher(plain)}
    for variant in args.variant:
        name, _, src = variant.partition("=")
        compileall.compile_dir(src, quiet=1)
        kinds[f"timed, {name}"] = from_source(
            kinds["timed"], f"rankrun, {name}", Path(src).resolve()
        )
    compile_bytecode()
    began = time.monotonic()
    samples: dict[int, dict[str, list]] = {n: {kind: [] for kind in kinds} for n in args.agents}
    for i in range(args.repeats):
        for n in args.agents:
            for kind in rotated(list(kinds), i):
                samples[n][kind].append(run_once(kinds[kind], n))
        print(f"  round {i + 1} of {args.repeats} done", file=sys.stderr)
    took = time.monotonic() - began
    text = "\n\n".join(
        [f"medians of {args.repeats} interleaved runs, ms from launch; {took:.0f} s in all"]
        + [table(samples, kind) for kind in kinds if kind != "plain"]
    )
    print(text)
    args.results.mkdir(parents=True, exist_ok=True)
    (args.results / "multi_launch_parts.txt").write_text(text + "\n")
    (args.results / "multi_launch_parts.json").write_text(json.dumps(
        {"machine": machine(), "repeats": args.repeats, "seconds": took, "parts": list(PARTS),
         "samples": samples}, indent=1) + "\n")  # fmt: skip


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f}"


def from_source(launcher: MultiNode, name: str, src: Path) -> MultiNode:
    """``launcher``'s agents, importing rankrun from ``src``."""
    return MultiNode(name, lambda *a: ["env", f"PYTHONPATH={src}", *launcher.argv(*a)])


def table(samples: dict[int, dict[str, list]], kind: str) -> str:
    ns = list(samples)
    med = {n: {k: statistics.median(v) for k, v in _columns(whole(samples[n][kind])).items()}
           for n in ns}  # fmt: skip
    plain = {n: statistics.median(min(a["rank"] for a in r["agents"])
                                  for r in whole(samples[n]["plain"])) for n in ns}  # fmt: skip
    failed = {n: len(samples[n][kind]) - len(whole(samples[n][kind])) for n in ns}
    width = max(map(len, med[ns[0]])) + 2
    out = [f"{kind:{width}}" + "".join(f"{n:>8} ag" for n in ns)]
    for name in med[ns[0]]:
        if name in ("sum: launch -> first rank running (timed)", "torch import, slowest agent"):
            out.append("-" * (width + 11 * len(ns)))
        out.append(f"{name:{width}}" + "".join(f"{ms(med[n][name]):>11}" for n in ns))
    out.append(f"{'launch -> first rank running (plain)':{width}}"
               + "".join(f"{ms(plain[n]):>11}" for n in ns))  # fmt: skip
    out.append(f"{'runs with an agent that failed (left out)':{width}}"
               + "".join(f"{failed[n]:>11}" for n in ns))  # fmt: skip
    return "\n".join(out)


def whole(runs: list[dict[str, object]]) -> list[dict[str, object]]:
    """The runs in which every agent exited 0."""
    return [run for run in runs if "agents" in run]


def _columns(runs: list[dict[str, object]]) -> dict[str, list[float]]:
    columns: dict[str, list[float]] = {}
    for run in runs:
        parts = parts_of(run)
        parts["sum: launch -> first rank running (timed)"] = sum(parts.values())
        for name, value in {**parts, **overlap(run)}.items():
            columns.setdefault(name, []).append(value)
    return columns


if __name__ == "__main__":
    main()
