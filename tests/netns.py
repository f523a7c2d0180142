"""Separate hosts for tests: network namespaces on a private bridge.

``Hosts(n)`` makes ``n`` namespaces, each a "host" with loopback up and one interface,
``eth0``, at ``<subnet>.<1+i>/24``. Each host's cable is a veth pair whose other end is a port
of a bridge, and the bridge lives in a namespace of its own, so nothing is created in, or
routed through, the root namespace: the hosts reach each other and nothing else.

``link_down(host)`` pulls the cable at the bridge: the host keeps its address and route, and
packets vanish in both directions, as when a switch port dies. Established TCP connections see
nothing but silence. ``link_up(host)`` plugs it back in.

Names carry this process's pid and a counter, so that parallel runs never collide. Leaving the
``with`` block (or the ``hosts`` fixture) ends whatever still runs in the namespaces, by pid,
and deletes them, however the test ended. Namespaces left by a run that was itself killed are
deleted by the next run, once the pid in their name is gone.
"""

from __future__ import annotations

import functools
import itertools
import os
import re
import shutil
import signal
import subprocess
from collections.abc import Callable, Iterator, Sequence
from types import TracebackType

import pytest
from conftest import wait_dead

PREFIX = "rrtest"  # names are rrtest<pid>x<seq>h<i> and rrtest<pid>x<seq>br
_NAME = re.compile(rf"^{PREFIX}(\d+)x\d+(?:h\d+|br)$")
_seq = itertools.count()


@functools.lru_cache(maxsize=1)
def unavailable() -> str | None:
    """Why namespaces can't be made here, or None when they can."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    if shutil.which("ip") is None:
        return "network namespaces need iproute2's `ip`"
    probe = f"{PREFIX}{os.getpid()}probe"
    made = _ip("netns", "add", probe, check=False)
    if made.returncode != 0:
        return f"`ip netns add` failed: {made.stderr.strip()}"
    try:
        bridge = _ip("-n", probe, "link", "add", "br0", "type", "bridge", check=False)
        if bridge.returncode != 0:
            return f"no bridge devices: {bridge.stderr.strip()}"
        veth = _ip(
            "-n",
            probe,
            "link",
            "add",
            "probe0",
            "type",
            "veth",
            "peer",
            "name",
            "probe1",
            check=False,
        )
        if veth.returncode != 0:
            return f"no veth devices: {veth.stderr.strip()}"
    finally:
        _ip("netns", "del", probe, check=False)
    return None


class Hosts:
    """``n`` hosts on one bridge; use as a context manager, or through the ``hosts`` fixture."""

    def __init__(self, n: int, subnet: str = "10.213.0") -> None:
        assert 1 <= n <= 200, n
        run = f"{PREFIX}{os.getpid()}x{next(_seq)}"
        self.names = [f"{run}h{i}" for i in range(n)]
        self.addrs = [f"{subnet}.{1 + i}" for i in range(n)]
        self.bridge = f"{run}br"
        self._made: list[str] = []

    def __enter__(self) -> Hosts:
        try:
            self._create()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.close()

    def _create(self) -> None:
        sweep_stale()
        self._add_netns(self.bridge)
        _ip("-n", self.bridge, "link", "add", "br0", "type", "bridge")
        _ip("-n", self.bridge, "link", "set", "br0", "up")
        for i, (name, addr) in enumerate(zip(self.names, self.addrs, strict=True)):
            self._add_netns(name)
            port = f"p{i}"
            # Both ends are born inside our namespaces: the root namespace never sees them.
            _ip(
                "-n",
                self.bridge,
                "link",
                "add",
                port,
                "type",
                "veth",
                "peer",
                "name",
                "eth0",
                "netns",
                name,
            )
            _ip("-n", self.bridge, "link", "set", port, "master", "br0", "up")
            _ip("-n", name, "addr", "add", f"{addr}/24", "dev", "eth0")
            _ip("-n", name, "link", "set", "eth0", "up")
            _ip("-n", name, "link", "set", "lo", "up")

    def _add_netns(self, name: str) -> None:
        _ip("netns", "add", name)
        self._made.append(name)

    def argv(self, host: int, argv: Sequence[str]) -> list[str]:
        """``argv`` run on ``host``. ``ip netns exec`` execs it: the pid is the command's."""
        return ["ip", "netns", "exec", self.names[host], *argv]

    def link_down(self, host: int) -> None:
        _ip("-n", self.bridge, "link", "set", f"p{host}", "down")

    def link_up(self, host: int) -> None:
        _ip("-n", self.bridge, "link", "set", f"p{host}", "up")

    def pids(self) -> list[int]:
        """Processes running in any of these namespaces."""
        found: list[int] = []
        for name in self._made:
            out = _ip("netns", "pids", name, check=False).stdout
            found.extend(int(p) for p in out.split())
        return found

    def close(self) -> None:
        """End what runs in the namespaces, by pid, then delete them. Safe to call twice."""
        _end(self.pids())
        for name in reversed(self._made):
            _ip("netns", "del", name, check=False)
        self._made.clear()


def sweep_stale() -> None:
    """Delete namespaces that an earlier, killed run of these helpers left behind."""
    listing = _ip("netns", "list", check=False).stdout
    for line in listing.splitlines():
        name = line.split(" ", 1)[0]
        match = _NAME.match(name)
        if match and not os.path.exists(f"/proc/{match.group(1)}"):
            out = _ip("netns", "pids", name, check=False).stdout
            _end([int(p) for p in out.split()])
            _ip("netns", "del", name, check=False)


def _end(pids: list[int], timeout: float = 5.0) -> None:
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    wait_dead(pids, timeout)


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)
    if check and done.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {done.stderr.strip()}")
    return done


@pytest.fixture(name="make_hosts")
def make_hosts_fixture() -> Iterator[Callable[..., Hosts]]:
    """``make_hosts(n)``: ``n`` hosts, deleted after the test; skips where they can't be made.

    Import it into a test module as ``from netns import make_hosts_fixture  # noqa: F401``.
    """
    reason = unavailable()
    if reason is not None:
        pytest.skip(reason)
    made: list[Hosts] = []

    def make(n: int, subnet: str = "10.213.0") -> Hosts:
        hosts = Hosts(n, subnet)
        made.append(hosts)
        return hosts.__enter__()

    yield make
    for hosts in made:
        hosts.close()
