"""One agent of rankrun.job.control, as a process of its own, for tests/test_control.py.

    python control_agent.py '<json settings>'

It runs the real code: ``control.join``, then with "heartbeat" set a real ``Link``, whose
threads beat, read the others (node 0), and hear the job's news pushed by the store.

Prints one JSON object a line: {"port": P} once it hosts (node 0), then {"joined": [...]}
(the nodes it knows) or {"error": "<class>", "message": "..."}; with "heartbeat" set, then
{"beating": n} once it has beaten twice, and for each event the link hands the gang:
{"halted": reason, "lost": [nodes]} when the attempt ended (as its end says), or
{"halted": reason, "cut_off": true, "quiet_for": s, "error": e} when cut off. Node 0 always
serves until killed.
"""

from __future__ import annotations

import json
import os
import select
import socket
import sys
import time
from typing import Any

from rankrun.job import control
from rankrun.job.link import Link
from rankrun.run.watch import Halted


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
        joined = control.join(store, me, timeout=s.get("join_timeout", 60))
    except control.ControlError as e:
        say(error=type(e).__name__, message=str(e))
        return
    say(joined=[n._asdict() for _, n in sorted(joined.nodes.items())])
    if "heartbeat" in s:
        interval, timeout = s["heartbeat"]
        listen(Link(store, joined.nodes, node, me.nnodes, timeout), interval)
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


def listen(link: Link, interval: float) -> None:
    """As the gang's loop does: wait on the link's pipe, and say what it hands over."""
    link.heartbeat.interval = interval
    started, said_beating = time.monotonic(), False
    while True:
        select.select([link.fd], [], [], 0.05)
        beaten = time.monotonic() - started > 2 * interval and link.heartbeat.error is None
        if beaten and not said_beating:
            said_beating = True
            say(beating=2)
        for event in link.take():
            assert isinstance(event, Halted)
            end = link.ends.get(0)
            if link.cut_off:
                hb = link.heartbeat
                say(halted=event.reason, cut_off=True, quiet_for=hb.quiet_for(), error=hb.error)
            else:
                say(halted=event.reason, lost=list(end.lost) if end else [])


if __name__ == "__main__":
    main()
