"""The job's facts across nodes, as keys in one TCPStore: read and written here, nowhere else.

Multi-node runs only. Node 0's agent hosts a ``torch.distributed.TCPStore`` at
--master-addr:--master-port; every other agent connects to it. torch is imported by the first
function that needs it, never when this module is imported.

Every key is named in ``keys.py``. What each agent asks of the store, and how often:

- joining: it claims its rank (one given, or a ticket: the next number of a counter), bumps a
  counter and waits on one key, the verdict. Node 0 alone reads every claim, once, and
  publishes the verdict;
- while the job runs: one ``compare_set`` per heartbeat interval (``beat_interval``: a fifth
  of --node-timeout, at most 2 s, or N/1,000 s where that is longer, so that node 0's store
  takes 1,000 beats a second). Node 0 also reads every beat in one ``multi_get``. Nothing else:
  the end of an attempt and its conclusion reach every agent through ``wait`` on one key
  each, on a client of its own (a push);
- a failure: three requests from the node that has it (its order, its fact, the attempt's
  end); the server wakes every waiter.

Facts learnt from torch 2.13 that shape this module:

- One client object may be used from several threads: its operations are serialised by a lock
  inside it. But an operation that waits (``get`` of a missing key, ``wait``) holds that lock,
  so every other thread's operation on the same client waits behind it. So the heartbeat's
  client only makes short, non-waiting calls (about 15 us on loopback); the waits run on
  clients of their own (``JobStore.clone``), each a connection to node 0's store.
- ``wait`` with a timeout leaves the connection usable after it times out.
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
  the server alive, so the heartbeat uses ``compare_set``.
- The server has one event-loop thread, and after every accept it looks up the peer's name by
  reverse DNS on that thread (``formatSockAddr`` in torch's ``socket.cpp``, for log text); each
  client also looks up the server's. Every client waits for each lookup: a resolver that drops
  a query costs 5 s (glibc's timeout) per lost query, in steps, when many agents join at once.
  The agents bound that wait to 1 s (``RES_OPTIONS``, set by the agent), and one failed
  lookup turns torch's lookups off for the process.
  ``docs/multi-node.md`` says how to avoid it. A plain-socket probe would cost one more lookup.
"""

from rankrun.job.control.asks import ANSWER_MAX, Ask, answer, ask, await_answers, question
from rankrun.job.control.attempt import (
    ERROR_TEXT_MAX,
    AttemptEnd,
    BarrierTimeout,
    EndKind,
    FailureFact,
    NodeResult,
    attempt_ended,
    await_end,
    await_over,
    await_seen,
    barrier,
    declare_lost,
    end_attempt,
    failures,
    first_failure,
    gather_results,
    interrupted,
    publish_failure,
    publish_interrupt,
    publish_result,
    say_seen,
)
from rankrun.job.control.calls import Abandoned, ControlError, Unresponsive, bounded, first_line
from rankrun.job.control.heartbeat import Heartbeat, NodeBeat, beat_interval, node_beats
from rankrun.job.control.join import (
    DuplicateNodeRank,
    Joined,
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
    PortInUse,
    Stranger,
    announce,
    backoff,
    connect,
    hold,
    is_local,
    listen_queue_note,
    open_files_for,
    read_job,
    serve,
    torch_distributed,
)

__all__ = [
    "Abandoned",
    "ANSWER_MAX",
    "Ask",
    "answer",
    "ask",
    "await_answers",
    "question",
    "ERROR_TEXT_MAX",
    "AttemptEnd",
    "BarrierTimeout",
    "ControlError",
    "DuplicateNodeRank",
    "EndKind",
    "FailureFact",
    "Heartbeat",
    "NodeBeat",
    "node_beats",
    "JobInfo",
    "JobStore",
    "JoinError",
    "Joined",
    "JoinTimeout",
    "Mismatch",
    "NodeInfo",
    "NodeResult",
    "PortInUse",
    "Stranger",
    "Unresponsive",
    "announce",
    "attempt_ended",
    "await_end",
    "await_over",
    "await_seen",
    "backoff",
    "barrier",
    "beat_interval",
    "bounded",
    "command_hash",
    "command_line",
    "config_hash",
    "connect",
    "declare_lost",
    "end_attempt",
    "failures",
    "first_line",
    "first_failure",
    "gather_results",
    "interrupted",
    "is_local",
    "hold",
    "join",
    "listen_queue_note",
    "open_files_for",
    "publish_failure",
    "publish_interrupt",
    "publish_result",
    "read_job",
    "say_seen",
    "serve",
    "torch_distributed",
]
