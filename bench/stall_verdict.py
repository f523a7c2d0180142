"""How long node 0 takes from a job-wide stall to its verdict, and what reading the stacks
costs the ranks: 2, 4 and 8 agents on this host.

    python bench/stall_verdict.py [--agents 2 4 8] [--repeats 3] [--node-timeouts 10 2.5]

Each run starts N agents on loopback (``--stall-timeout 3 --on-stall stop --timestamps``),
each with 1 rank (2 ranks each with 2 agents), under each ``--node-timeout`` (the default, 10 s,
beats every 2 s; 2.5 s beats every 0.5 s). Every rank joins a gloo group; the last rank
then sleeps in ``load_batch`` while the others block in ``all_reduce``. The stall fires when
no rank of any node has written a line for T s: at the last rank line of any agent, plus T.
From the agents' own timestamps (one clock: one host):

- ``fire -> asked``: until the first node starts reading its stacks for node 0 (node 0 judges
  the quiet from the heartbeats, and the question reaches a node in its next beat);
- ``fire -> verdict``: until node 0 prints the verdict's first line.

A rank's pause: each rank runs a thread that ticks every 1 ms and logs every gap over 4 ms.
The longest gap while the stacks are read (from the first ``asked`` to the verdict) is set
against the longest in an equal window just before the stall fired, in the same rank.

Writes bench/results/stall_verdict.json and .md; prints the table.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

T = 3.0
RESULTS = Path(__file__).parent / "results"
RANK = """
import os, subprocess, threading, time

# Lines while torch loads, on a loaded host slower than the stall timeout.
starting = subprocess.Popen(["sh", "-c", "while sleep 0.5; do echo starting; done"])
import torch, torch.distributed as dist

rank = int(os.environ["RANK"])
gaps = open(f"gaps.{rank}", "w", buffering=1)

def tick():
    last = time.perf_counter()
    while True:
        time.sleep(0.001)
        now = time.perf_counter()
        if now - last > 0.004:
            gaps.write(f"{time.time()!r} {now - last!r}\\n")
        last = now

def load_batch():
    time.sleep(600)

dist.init_process_group("gloo")
for _ in range(3):
    dist.all_reduce(torch.ones(1))
threading.Thread(target=tick, daemon=True).start()
starting.kill()
starting.wait()
print("ready", flush=True)
if rank == dist.get_world_size() - 1:
    load_batch()
dist.all_reduce(torch.ones(1))
"""
_STAMP = re.compile(r"^(\d\d):(\d\d):(\d\d)\.(\d\d\d) (.*)$")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def day_seconds(wall: float) -> float:
    """``time.time()`` as seconds since local midnight, as --timestamps writes it."""
    t = time.localtime(wall)
    return t.tm_hour * 3600 + t.tm_min * 60 + t.tm_sec + wall % 1


def stamped(text: str) -> list[tuple[float, str]]:
    lines = []
    for line in text.splitlines():
        m = _STAMP.match(line)
        if m:
            h, mi, s, ms, rest = m.groups()
            lines.append((int(h) * 3600 + int(mi) * 60 + int(s) + int(ms) / 1000, rest))
    return lines


def run_once(agents: int, per_agent: int, node_timeout: float, work: Path) -> dict[str, Any]:
    for old in work.glob("gaps.*"):
        old.unlink()
    (work / "rank.py").write_text(RANK)
    port = str(free_port())
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    procs = []
    for node in range(agents):
        argv = [sys.executable, "-m", "rankrun", "--nnodes", str(agents), "--node-rank",
                str(node), "--nproc-per-node", str(per_agent), "--master-addr", "127.0.0.1",
                "--master-port", port, "--stall-timeout", f"{T:g}", "--on-stall", "stop",
                "--node-timeout", f"{node_timeout:g}", "--timestamps", "rank.py"]  # fmt: skip
        procs.append(subprocess.Popen(argv, env=env, cwd=work, text=True,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE))  # fmt: skip
    outs = [p.communicate(timeout=300) for p in procs]
    lines = [stamped(out + err) for out, err in outs]
    if procs[0].returncode != 124:
        raise RuntimeError(f"node 0 ended {procs[0].returncode}: {outs[0][1][-2000:]}")
    last = max(t for node in lines for t, text in node if text.endswith("]: ready"))
    fire = last + T
    verdict = next(t for t, text in lines[0] if text.startswith("rankrun: stalled: "))
    asked = min(t for node in lines for t, text in node if "for node 0's verdict" in text)
    read, before = [], []
    for path in work.glob("gaps.*"):
        gaps = [(day_seconds(float(a)), float(b)) for a, b in
                (line.split() for line in path.read_text().splitlines())]  # fmt: skip
        read.append(_longest(gaps, asked, verdict))
        before.append(_longest(gaps, fire - (verdict - asked), fire))
    return {
        "fire_to_asked_s": asked - fire,
        "fire_to_verdict_s": verdict - fire,
        "pause_while_read_ms": 1000 * max(read),
        "pause_before_ms": 1000 * max(before),
        "ranks": len(read),
    }


def _longest(gaps: list[tuple[float, float]], start: float, end: float) -> float:
    """The longest gap that ended in [start, end] (1 ms, the tick, when none was logged)."""
    return max([g for t, g in gaps if start <= t <= end], default=0.001)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--agents", type=int, nargs="+", default=[2, 4, 8])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--node-timeouts", type=float, nargs="+", default=[10.0, 2.5])
    a = parser.parse_args()
    began = time.monotonic()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for timeout in a.node_timeouts:
            for agents in a.agents:
                rows.append(_row(agents, timeout, a.repeats, Path(tmp)))
                print(_line(rows[-1]), flush=True)
    took = time.monotonic() - began
    result = {"stall_timeout_s": T, "repeats": a.repeats, "cpus": os.cpu_count(),
              "took_s": took, "rows": rows}  # fmt: skip
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "stall_verdict.json").write_text(json.dumps(result, indent=1) + "\n")
    (RESULTS / "stall_verdict.md").write_text(_markdown(result))
    print(f"took {took:.0f} s")


def _row(agents: int, node_timeout: float, repeats: int, work: Path) -> dict[str, Any]:
    per_agent = 2 if agents == 2 else 1
    runs = [run_once(agents, per_agent, node_timeout, work) for _ in range(repeats)]
    row: dict[str, Any] = {
        "agents": agents, "ranks": agents * per_agent, "node_timeout_s": node_timeout,
        "beat_interval_s": min(max(node_timeout / 5, 0.1), 2.0), "runs": runs,
    }  # fmt: skip
    for key in runs[0]:
        row[f"median_{key}"] = statistics.median(r[key] for r in runs)
        row[f"max_{key}"] = max(r[key] for r in runs)
    return row


def _line(row: dict[str, Any]) -> str:
    return (f"beat {row['beat_interval_s']:g} s, {row['agents']} agents, {row['ranks']} ranks: "
            "fire->asked "
            f"{row['median_fire_to_asked_s']:.2f} s, fire->verdict "
            f"{row['median_fire_to_verdict_s']:.2f} s, a rank's longest pause while read "
            f"{row['median_pause_while_read_ms']:.0f} ms (before: "
            f"{row['median_pause_before_ms']:.0f} ms)")  # fmt: skip


def _markdown(result: dict[str, Any]) -> str:
    head = (
        f"# Stall to verdict\n\n`python bench/stall_verdict.py`: agents on one host "
        f"({result['cpus']} CPUs), `--stall-timeout {result['stall_timeout_s']:g}`; "
        f"median (max) of {result['repeats']} runs; the bench took {result['took_s']:.0f} s.\n"
        "A rank's pause: the longest gap between its 1 ms ticks, over every rank, while the "
        "stacks are read, and in as long a window just before the stall.\n\n"
        "| --node-timeout (beat) | agents | ranks | fire -> a node reads | fire -> verdict | "
        "a rank's pause while read | before the stall |\n|---|---|---|---|---|---|---|\n"
    )
    rows = "".join(
        f"| {r['node_timeout_s']:g} s ({r['beat_interval_s']:g} s) | {r['agents']} | {r['ranks']}"
        f" | {r['median_fire_to_asked_s']:.2f} ({r['max_fire_to_asked_s']:.2f}) s"
        f" | {r['median_fire_to_verdict_s']:.2f} ({r['max_fire_to_verdict_s']:.2f}) s"
        f" | {r['median_pause_while_read_ms']:.0f} ({r['max_pause_while_read_ms']:.0f}) ms"
        f" | {r['median_pause_before_ms']:.0f} ({r['max_pause_before_ms']:.0f}) ms |\n"
        for r in result["rows"]
    )
    return head + rows


if __name__ == "__main__":
    main()
