"""What torch's flight recorder costs gloo collectives: 2 ranks, many small all_reduce calls,
with ``TORCH_FR_BUFFER_SIZE`` unset and set, interleaved.

    python bench/flight_recorder.py [--calls 10000] [--repeats 5] [--buffer 2000]

Each run starts 2 gloo ranks on loopback through torch's own ``mp.spawn``-free path (plain
subprocesses with the launch contract), times only the loop of ``all_reduce`` calls on rank 0,
and prints the median per-call time of each setting and their ratio.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys

RANK = """
import os, sys, time
import torch, torch.distributed as dist
dist.init_process_group("gloo")
t = torch.ones(1)
for _ in range(100):
    dist.all_reduce(t)
dist.barrier()
start = time.perf_counter()
for _ in range(int(sys.argv[1])):
    dist.all_reduce(t)
took = time.perf_counter() - start
if dist.get_rank() == 0:
    print(took)
dist.destroy_process_group()
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run(calls: int, buffer: int | None) -> float:
    """Seconds per call on rank 0."""
    base = {k: v for k, v in os.environ.items() if k != "TORCH_FR_BUFFER_SIZE"}
    base.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(free_port()), WORLD_SIZE="2")
    if buffer is not None:
        base["TORCH_FR_BUFFER_SIZE"] = str(buffer)
    procs = [
        subprocess.Popen([sys.executable, "-c", RANK, str(calls)],
                         env={**base, "RANK": str(r), "LOCAL_RANK": str(r)},
                         stdout=subprocess.PIPE, text=True)
        for r in range(2)
    ]  # fmt: skip
    outs = [p.communicate()[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    return float(outs[0]) / calls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=10000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--buffer", type=int, default=2000)
    a = parser.parse_args()
    off: list[float] = []
    on: list[float] = []
    for _ in range(a.repeats):
        off.append(run(a.calls, None))
        on.append(run(a.calls, a.buffer))
    m_off, m_on = statistics.median(off), statistics.median(on)
    print(f"{a.calls} all_reduce of 1 float, 2 gloo ranks, median of {a.repeats}, interleaved")
    print(f"  TORCH_FR_BUFFER_SIZE unset : {m_off * 1e6:7.1f} us/call")
    print(f"  TORCH_FR_BUFFER_SIZE={a.buffer:<5}: {m_on * 1e6:7.1f} us/call")
    print(f"  ratio: {m_on / m_off:.3f}")


if __name__ == "__main__":
    main()
