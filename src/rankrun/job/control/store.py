"""Node 0's store and the clients of the others: hosting, connecting, whose job it holds."""

from __future__ import annotations

import importlib
import os
import signal
import sys
import time
import warnings
from collections.abc import Callable
from datetime import timedelta
from typing import Any, NamedTuple

from rankrun.job.control.calls import (
    Call,
    ControlError,
    Unresponsive,
    bounded,
    dump,
    first_line,
    load,
    wait_get,
)
from rankrun.job.control.keys import JOB, Keys
from rankrun.run.watch import TERMINATING

JOIN_TIMEOUT = 600.0
WAIT_NOTE_EVERY = 10.0  # seconds between "waiting for ..." notes
JOB_KEY_WAIT = 30.0  # a store without rankrun/job this long after connecting is not rankrun's


class Stranger(ControlError):
    """This agent is not part of the job that holds the port. It wrote nothing there."""


class PortInUse(ControlError):
    """The port is taken on this host: by a stale run, or by the agent that hosts the job."""


class JobInfo(NamedTuple):
    """What node 0 announces at ``rankrun/job``: enough for a stranger to know it is one."""

    run_id: str
    hostname: str
    port: int
    started: str  # node 0's local time, for people to read; never compared
    nnodes: int
    config_hash: str


class JobStore(NamedTuple):
    """A TCPStore client and the run whose keys (under ``rankrun/<run id>/``) it uses."""

    client: Any
    run_id: str

    @property
    def keys(self) -> Keys:
        return Keys(self.run_id)

    def clone(self) -> JobStore:
        """The same store over a connection of its own, for a thread that waits on keys."""
        return JobStore(self.client.clone(), self.run_id)


def torch_distributed() -> Any:
    """``torch.distributed``, imported quietly: no NumPy warning, and no C++ log lines.

    torch's C++ side logs every failed connection try, with a stack trace, to stderr; it reads
    TORCH_CPP_LOG_LEVEL once, when torch is imported. The variable is set for the import only
    (unless the user set it), so the ranks' environments never see it.
    """
    if "torch.distributed" in sys.modules:
        return sys.modules["torch.distributed"]
    ours = "TORCH_CPP_LOG_LEVEL" not in os.environ and "torch" not in sys.modules
    if ours:
        os.environ["TORCH_CPP_LOG_LEVEL"] = "FATAL"
    # A terminating signal waits out the import, blocked: the exception its handler raises
    # would land in numpy's or torch's C code, which may catch it and go on, or fail the
    # import for good. Unblocked at the end, it is handled at once, here.
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, TERMINATING)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return importlib.import_module("torch.distributed")
    finally:
        if ours:
            del os.environ["TORCH_CPP_LOG_LEVEL"]
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)


def hold(port: int) -> int:
    """Node 0, before torch's import: listen on ``port`` on every interface, and return the
    socket's fd for ``serve``. Agents that dial while torch loads (a second or more) wait in
    the listen queue, instead of being refused and backing off in torch's client (0.3 s,
    then longer). Raises ``PortInUse``."""
    import errno
    import socket

    try:
        if socket.has_dualstack_ipv6():
            held = socket.create_server(("", port), family=socket.AF_INET6, backlog=65535,
                                        dualstack_ipv6=True)  # fmt: skip
        else:
            held = socket.create_server(("", port), backlog=65535)
    except OSError as e:
        if e.errno == errno.EADDRINUSE:
            raise PortInUse(_in_use(port)) from None
        raise ControlError(f"could not listen on --master-port {port}: {e.strerror}") from None
    return held.detach()


def _in_use(port: int) -> str:
    return (
        f"--master-port {port} is in use on this host, perhaps by a stale run: "
        "end it, or choose another --master-port for every node"
    )


def serve(addr: str, port: int, *, timeout: float = 30.0, held: int | None = None) -> Any:
    """Node 0: serve the store on every interface at ``port`` (0: a free one, see ``.port``),
    on the socket ``hold`` made, if given.

    torch's server connects to itself at ``addr``, so ``addr`` must reach this host.
    """
    dist = torch_distributed()

    def serve() -> Any:
        delta = timedelta(seconds=timeout)
        return dist.TCPStore(addr, port, None, True, delta, wait_for_workers=False,
                             master_listen_fd=held)  # fmt: skip

    try:
        return bounded(serve, timeout + 5, f"hosting the store at {addr}:{port}")
    except RuntimeError as e:
        if "EADDRINUSE" in str(e):
            raise PortInUse(_in_use(port)) from None
        raise ControlError(
            f"could not host the job's store at {addr}:{port}: {first_line(e)}; node 0 "
            "connects to its own store at --master-addr: is it this host's address?"
        ) from None


def is_local(addr: str) -> bool:
    """Whether ``addr`` is one of this host's addresses, or a name that resolves to one: a
    socket binds to it. torchrun's c10d backend asks the same, to decide who hosts."""
    import socket

    try:
        found = socket.getaddrinfo(addr, None, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        return False
    for family, kind, proto, _, address in found:
        with socket.socket(family, kind, proto) as s:
            try:
                s.bind((address[0], 0, *address[2:]))
            except OSError:
                continue  # EADDRNOTAVAIL: another host's
            return True
    return False


def listen_queue_note(nnodes: int) -> str | None:
    """Node 0: a line to print when this host's listen queue is shorter than the job's burst
    of connections (each agent opens two). Past it, connections wait and retry in seconds."""
    try:
        with open("/proc/sys/net/core/somaxconn") as f:
            limit = int(f.read())
    except (OSError, ValueError):
        return None  # not Linux: the platform's default, unknown
    wanted = 2 * nnodes
    if wanted <= limit:
        return None
    return (
        f"this host's listen queue (net.core.somaxconn) is {limit}, fewer than the {wanted} "
        f"connections {nnodes} nodes make at once; joining will be slow: raise it on node 0 "
        f"with sysctl -w net.core.somaxconn={1 << (wanted - 1).bit_length()}"
    )


def open_files_for(connections: int) -> None:
    """Node 0: raise this process's open-file limit, up to its hard limit, so that the store
    can hold every agent's connections."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = connections + 256
    if soft != resource.RLIM_INFINITY and soft < wanted:
        top = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, top), hard))


def connect(
    addr: str,
    port: int,
    *,
    timeout: float = JOIN_TIMEOUT,
    on_wait: Callable[[str], None] = lambda note: None,
    op_timeout: float = 30.0,
    every: float = WAIT_NOTE_EVERY,
) -> Any:
    """Nodes 1..: a client of node 0's store, waiting up to ``timeout`` for it to come up.

    Calls ``on_wait("waiting for node 0 at host:port (why)")`` about every ``every`` seconds.
    Each try is torch's constructor, which retries a refused connection for up to ``every``
    seconds, in a helper thread: against a listener that accepts but never answers (a stopped
    node 0) it blocks, and stays pending, so it completes if node 0 wakes up. There is no
    plain-socket probe: each connection costs the server a reverse DNS lookup on its one
    thread. ``op_timeout`` becomes the client's timeout for waiting on a key.
    """
    dist = torch_distributed()
    deadline = time.monotonic() + timeout
    next_note = time.monotonic() + every
    pending: Call[Any] | None = None
    started = retry_at = 0.0
    failed = 0
    why = "nothing answers there yet"
    while True:
        now = time.monotonic()
        if now >= deadline:
            raise Unresponsive(
                f"node 0's store at {addr}:{port} did not answer within {timeout:g} s ({why}): "
                "is node 0 started, and are --master-addr and --master-port the same on every node?"
            )
        if pending is None and now >= retry_at:
            # A try lasts about 1.4 times its limit: a third of ``every`` ends it before the
            # next note, so that each note says what the last try met.
            seconds = min(every / 3, deadline - now)
            pending, started = Call(_client(dist, addr, port, seconds)), now
        if pending is None:
            time.sleep(min(retry_at, deadline) - now)
        elif pending.wait(min(1.0, max(0.0, deadline - now))):
            try:
                client = pending.result()
                client.set_timeout(timedelta(seconds=op_timeout))
                return client
            except RuntimeError as e:
                pending, why, failed = None, _why(e), failed + 1
                retry_at = time.monotonic() + backoff(failed)
        elif now - started > 3 * every + 5:
            # torch's own retries of a refused connection outlast their timeout, 1.3 to 1.9
            # times unloaded: only a try far past that has met a listener that never answers.
            why = "it accepts connections but has not answered: a stopped process?"
        if time.monotonic() >= next_note:
            on_wait(f"waiting for node 0 at {addr}:{port} ({why})")
            next_note += every


def backoff(failures: int) -> float:
    """Seconds before the next try after ``failures`` failed ones: doubling from 50 ms up to
    2 s, each drawn from its upper half, so that thousands of agents turned away at once
    (node 0 not up yet, its listen queue full) come back spread out, not together."""
    import random

    ceiling = min(2.0, 0.05 * 2 ** min(failures, 6))
    return random.uniform(ceiling / 2, ceiling)


def _client(dist: Any, addr: str, port: int, seconds: float) -> Callable[[], Any]:
    return lambda: dist.TCPStore(addr, port, None, False, timedelta(seconds=seconds))


# What torch's client says when the listener is not a TCPStore: a reply it can't read (an HTTP
# or SSH server), or a connection closed at once.
_NOT_A_STORE = ("invalid value returned from server", "Connection reset", "Broken pipe",
                "Connection closed")  # fmt: skip


def _why(error: RuntimeError) -> str:
    text = first_line(error)
    if "trying to connect" in text:
        return "nothing answers there yet"
    if any(words in text for words in _NOT_A_STORE):
        return "something else answers there, not a rankrun node 0: another program's port?"
    return text


def announce(client: Any, job: JobInfo) -> None:
    """Node 0, right after ``serve``: say whose store this is.

    The server's own client connects at --master-addr; where that is another host running a
    rankrun job, the key is already there, and it is left as it is.
    """
    mine = dump(job)
    held = client.compare_set(JOB, "", mine)
    if held != mine.encode():
        other = JobInfo(**load(held))
        raise Stranger(
            held_by(other, f"this is job {job.run_id}, and --master-addr must be node 0's")
        )


def read_job(client: Any, timeout: float = JOB_KEY_WAIT) -> JobInfo:
    """The job that holds the store; an agent without --rdzv-id adopts its run id."""
    raw = wait_get(client, JOB, timeout)
    if raw is None:
        raise Stranger(
            "the store at --master-addr:--master-port holds no rankrun job: another program's "
            "TCPStore? choose another --master-port for every node"
        )
    return JobInfo(**load(raw))


def held_by(job: JobInfo, this: str) -> str:
    return (
        f"port {job.port} on {job.hostname} is held by rankrun job {job.run_id} "
        f"(started {job.started}); {this}: use another --master-port"
    )
