"""Where the job meets: node 0's address and port, and how long nodes wait for each other.

torchrun's rendezvous flags are read here: ``--rdzv-endpoint HOST[:PORT]`` names node 0's
address and port, for the ``static`` and the ``c10d`` backend alike, and ``--rdzv-conf``
may carry ``join_timeout``. Across nodes without a node rank, ``c10d`` hands the node ranks
out at the join, as torchrun's does; ``static`` needs one on every node.
"""

from __future__ import annotations

from collections.abc import Mapping

from rankrun.base.errors import UsageError
from rankrun.base.values import NamedTuple
from rankrun.plan.checks import check, check_seconds
from rankrun.plan.options import Options

_C10D_PORT = 29400  # torchrun's default for an endpoint without a port
_NODES_PORT = 29500  # torchrun's default port across nodes, when none is given


class Rendezvous(NamedTuple):
    backend: str
    master_addr: str
    master_port: int
    join_timeout: float
    node_timeout: float
    local_addr: str | None
    port_given_as: str = "--master-port "
    """How the port was given, before its number in an error: ``MASTER_PORT=`` too."""
    node_rank_at_join: bool = False
    """No node rank was given (c10d): the agent that can host the endpoint is node 0, and
    the others take their node ranks at the join, in the order they join."""

    def with_port_chosen(self, standalone: bool) -> Rendezvous:
        """A single node's port: a free one for 0 or --standalone, else a free given one."""
        from rankrun.plan.ports import free_port, port_in_use

        if standalone or self.master_port == 0:
            return self._replace(master_port=free_port())
        check(
            not port_in_use(self.master_port),
            f"{self.port_given_as}{self.master_port} is already in use on this host, perhaps by "
            "a stale run: end it, or pass --master-port 0 to pick a free port",
        )
        return self


def rendezvous(o: Options, env: Mapping[str, str]) -> Rendezvous:
    addr, (port, given_as) = o.master_addr, _master_port(o, env)
    if o.rdzv_endpoint:
        addr, port = _endpoint(o.rdzv_endpoint)
    conf = _conf(o.rdzv_conf)
    join_timeout = float(conf.get("join_timeout", o.join_timeout))
    check_seconds(join_timeout, "--rdzv-timeout", low=0.1, high=7 * 86400)
    check_seconds(o.node_timeout, "--node-timeout", low=0.1, high=86400)
    check(
        o.nnodes == 1 or port != 0,
        "--master-port 0 needs one node: give every node the same fixed port",
    )
    check(o.rdzv_backend in ("static", "c10d"), f"--rdzv-backend {o.rdzv_backend}: use c10d")
    at_join = o.nnodes > 1 and o.node_rank is None
    check(not at_join or o.rdzv_backend == "c10d", _static_needs_node_rank(o.nnodes))
    return Rendezvous(
        o.rdzv_backend, addr, port, join_timeout, o.node_timeout, o.local_addr, given_as, at_join
    )


def _static_needs_node_rank(nnodes: int) -> str:
    """torchrun's static rendezvous takes every node without --node-rank for node 0 (its
    default), and its handler's own fix reads "Try add --node-rank to the cmd request"."""
    return (
        f"--nnodes {nnodes} with the static rendezvous (the default) needs --node-rank on every "
        f"node, 0 to {nnodes - 1}: add --node-rank to each node's command, or pass "
        "--rdzv-backend c10d to have the node ranks handed out as the nodes join"
    )


def _master_port(o: Options, env: Mapping[str, str]) -> tuple[int, str]:
    """The port given by flag, ``PET_MASTER_PORT`` or ``MASTER_PORT``, and where. None given:
    on one node, 0 for a free one, as torch 2.13's torchrun does; across nodes, 29500."""
    if o.master_port is not None:
        return o.master_port, "--master-port "
    if "MASTER_PORT" not in env:
        return (0 if o.nnodes == 1 else _NODES_PORT), "--master-port "
    value = env["MASTER_PORT"]
    try:
        port = int(value)
    except ValueError:
        port = -1
    check(
        0 <= port <= 65535,
        f"MASTER_PORT={value!r} in the environment: give a port, 0 to 65535, or unset it",
    )
    return port, "MASTER_PORT="


def _endpoint(value: str) -> tuple[str, int]:
    """``HOST``, ``HOST:PORT``, ``[IPV6]`` or ``[IPV6]:PORT``; the port is torchrun's default."""
    flag = f"--rdzv-endpoint {value!r}"
    port: str | None
    if value.startswith("["):
        host, bracket, rest = value[1:].partition("]")
        check(bool(bracket), f"{flag}: close the bracket, as [{host}]:PORT")
        check(rest[:1] in ("", ":"), f"{flag}: give [HOST]:PORT, such as [::1]:29400")
        port = rest[1:] if rest else None
    else:
        check(value.count(":") < 2, f"{flag}: put an IPv6 address in brackets, as [{value}]:PORT")
        host, colon, port = value.partition(":")
        port = port if colon else None
    check(bool(host), f"{flag}: name node 0's host, such as node0:{port or _C10D_PORT}")
    if port is None:
        return host, _C10D_PORT
    try:
        number = int(port)
    except ValueError:
        raise UsageError(f"{flag}: give HOST:PORT, such as node0:29400") from None
    check(0 <= number <= 65535, f"{flag}: port {number} is outside 0..65535")
    return host, number


def _conf(value: str) -> dict[str, str]:
    conf = {}
    for item in filter(None, value.split(",")):
        key, eq, setting = item.partition("=")
        check(
            bool(eq and key),
            f"--rdzv-conf {value!r}: give key=value pairs, such as join_timeout=900",
        )
        conf[key.strip()] = setting.strip()
    if "join_timeout" in conf:
        try:
            float(conf["join_timeout"])
        except ValueError:
            raise UsageError(
                f"--rdzv-conf join_timeout={conf['join_timeout']!r}: give seconds"
            ) from None
    return conf
