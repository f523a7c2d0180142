"""One agent's use of rankrun.job.control, as a process of its own, for tests/test_control.py.

    python control_agent.py '<json settings>'

Prints one JSON object a line: {"port": P} once it hosts (node 0), then {"joined": [...]}
or {"error": "<class>", "message": "..."}; with "heartbeat" set, then {"beating": n} once it
has beaten and looked at the others twice, {"lost": [nodes]} and {"cut_off": true} when it
first sees each, and keeps beating until killed. Node 0 always serves until killed.

As the launcher should: one thread owns the heartbeat (its store calls may block forever
when the store can't be reached), and the main thread judges being cut off by the clock.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import threading
import time
from typing import Any

from rankrun.job import control


def say(**fields: Any) -> None:
    print(json.dumps(fields), flush=True)


def main() -> None:
    s = json.loads(sys.argv[1])
    node, addr = s["node_rank"], s.get("addr", "127.0.0.1")
    if node == 0:
        client = control.serve(addr, s["port"])
        port = client.port
        me = info(s, s["run_id"])
        job = control.JobInfo(me.run_id, socket.gethostname(), port, "now", me.nnodes, "-")
        control.announce(client, job)
        say(port=port)
    else:
        client = control.connect(addr, s["port"], timeout=s.get("join_timeout", 60))
        run_id = s.get("run_id") or control.read_job(client).run_id
        me = info(s, run_id)
    store = control.JobStore(client, me.run_id)
    try:
        nodes = control.join(store, me, timeout=s.get("join_timeout", 60))
    except control.ControlError as e:
        say(error=type(e).__name__, message=str(e))
        return
    say(joined=[n._asdict() for n in nodes])
    if "heartbeat" in s:
        interval, timeout = s["heartbeat"]
        heartbeat(control.Heartbeat(store, node, me.nnodes, interval=interval, timeout=timeout))
    elif node == 0:  # as a launcher's node 0 runs the job: its exit would end the store
        time.sleep(3600)


def info(s: dict[str, Any], run_id: str) -> control.NodeInfo:
    return control.NodeInfo(
        node_rank=s["node_rank"],
        hostname=socket.gethostname(),
        pid=os.getpid(),
        nnodes=s["nnodes"],
        nproc_per_node=s.get("nproc_per_node", 2),
        run_id=run_id,
        version="test",
        command_hash=control.command_hash("train.py", ["--lr", "1"]),
    )


def heartbeat(hb: control.Heartbeat) -> None:
    lost: list[int] = []
    beats = 0

    def own() -> None:  # the one thread that uses the store from now on
        nonlocal lost, beats
        while True:
            lost = hb.tick()
            beats += hb.error is None
            time.sleep(hb.interval)

    threading.Thread(target=own, daemon=True).start()
    said: set[str] = set()
    while True:
        if beats >= 2 and "beating" not in said:
            said.add("beating")
            say(beating=beats)
        if lost and "lost" not in said:
            said.add("lost")
            say(lost=lost)
        if hb.cut_off() and "cut_off" not in said:
            said.add("cut_off")
            say(cut_off=True, quiet_for=hb.quiet_for(), error=hb.error)
        time.sleep(0.05)


if __name__ == "__main__":
    main()
