"""The job's facts across nodes, as keys in one TCPStore: read and written here, nowhere else.

Multi-node runs only. Node 0's agent hosts a ``torch.distributed.TCPStore`` at
--master-addr:--master-port; every other agent connects to it. torch is imported by the first
function that needs it, never when this module is imported.

Keys (``P`` is ``rankrun/<run id>``)::

    rankrun/job                        JobInfo, written once by node 0 when it starts hosting
    P/join/claim/<node>                the NodeInfo of the agent that holds --node-rank <node>
    P/join/command/<node>              its command line, read only when the commands differ
    P/join/joined                      counter: node ranks claimed
    P/join/complete                    set when all nodes have claimed: later arrivals are strangers
    P/join/agreed                      counter: agents that found every node's settings agree
    P/join/abort                       the message every agent raises (the first writer's)
    P/join/acked                       counter: agents that read the abort (node 0 waits for them)
    P/hb/<node>                        heartbeat counter
    P/attempt/<k>/failures             counter: the store's order of failures
    P/attempt/<k>/failure/<n>          FailureFact of the n-th failure; n = 1 is the root cause
    P/attempt/<k>/end                  why attempt k ended (the first writer's reason)
    P/attempt/<k>/result/<node>        NodeResult
    P/attempt/<k>/results              counter: results published
    P/attempt/<k>/interrupts           counter: nodes whose part a signal to them ended
    P/barrier/<name>/<node>, /count, /open

Facts learnt from torch 2.13 that shape this module:

- One client object may be used from several threads: its operations are serialised by a lock
  inside it. But an operation that waits (``get`` of a missing key, ``wait``) holds that lock,
  so every other thread's operation on the same client waits behind it. Everything here that a
  background thread calls is a short, non-waiting operation (about 15 us on loopback); the
  functions that wait (``join``, ``barrier``) run before that thread starts, or on a clone.
- The store's timeout bounds waiting for a key, not a server that does not answer. Against a
  SIGSTOPped server, or across a pulled cable, every operation blocks, whatever the timeout,
  until the server answers or TCP gives up (about 15 minutes). They release the GIL and do not
  stop the process from exiting. So being cut off is judged by the clock
  (``Heartbeat.cut_off``), never by waiting for an operation to fail; and the waiting
  functions here run their operations in a helper thread that they abandon when time is up.
- A server that exits is noticed at once: ``DistNetworkError`` (a ``RuntimeError``).
- ``add`` on a key that holds a non-number, or a value over about 8 MiB (16 MiB failed),
  makes the server drop that client's connection: every later call on it fails. Counters
  and values here never share a key, and error texts are cut.
- ``set`` does not wait for the server's answer: it "succeeds" against a stopped or vanished
  server. Only calls that return a value (``add``, ``get``, ``check``, ``compare_set``) prove
  the server alive, so the heartbeat uses ``add``.
- The server has one event-loop thread, and after every accept it looks up the peer's name by
  reverse DNS on that thread (``formatSockAddr`` in torch's ``socket.cpp``, for log text); each
  client also looks up the server's. Every client waits for each lookup: a resolver that drops
  a query costs 5 s (glibc's timeout) per lost query, in steps, when many agents join at once.
  ``docs/multi-node.md`` says how to avoid it. A plain-socket probe would cost one more lookup.
"""

from rankrun.job.control.attempt import (
    ERROR_TEXT_MAX,
    BarrierTimeout,
    FailureFact,
    NodeResult,
    attempt_ended,
    barrier,
    clear_rank_keys,
    end_attempt,
    failures,
    first_failure,
    gather_results,
    interrupted,
    publish_failure,
    publish_interrupt,
    publish_result,
)
from rankrun.job.control.calls import ControlError, Unresponsive, bounded
from rankrun.job.control.heartbeat import Heartbeat
from rankrun.job.control.join import (
    DuplicateNodeRank,
    JoinError,
    JoinTimeout,
    Mismatch,
    NodeInfo,
    command_hash,
    command_line,
    config_hash,
    join,
)
from rankrun.job.control.store import (
    JobInfo,
    JobStore,
    Stranger,
    announce,
    connect,
    read_job,
    serve,
    torch_distributed,
)

__all__ = [
    "ERROR_TEXT_MAX",
    "BarrierTimeout",
    "ControlError",
    "DuplicateNodeRank",
    "FailureFact",
    "Heartbeat",
    "JobInfo",
    "JobStore",
    "JoinError",
    "JoinTimeout",
    "Mismatch",
    "NodeInfo",
    "NodeResult",
    "Stranger",
    "Unresponsive",
    "announce",
    "attempt_ended",
    "barrier",
    "bounded",
    "clear_rank_keys",
    "command_hash",
    "command_line",
    "config_hash",
    "connect",
    "end_attempt",
    "failures",
    "first_failure",
    "gather_results",
    "interrupted",
    "join",
    "publish_failure",
    "publish_interrupt",
    "publish_result",
    "read_job",
    "serve",
    "torch_distributed",
]
