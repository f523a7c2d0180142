"""CPU binding: which CPUs each local rank may run on, for ``--cpu-bind`` and torchrun's
``--numa-binding``, and the OMP_NUM_THREADS that fits each share.

A policy over the node's ``Topology``; ``topology.py`` reads the machine.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

from rankrun.base.errors import UsageError
from rankrun.base.values import NamedTuple
from rankrun.plan import topology
from rankrun.plan.options import Options
from rankrun.plan.topology import Gpu, Topology


class Binding(NamedTuple):
    cpus: tuple[frozenset[int], ...]
    omp: tuple[int, ...]
    """OMP_NUM_THREADS for each local rank: the whole cores of its share, shared out."""


def binding_for(o: Options, nproc: int, env: Mapping[str, str]) -> Binding:
    """Each local rank's CPUs and OMP_NUM_THREADS, for ``o``'s --cpu-bind or --numa-binding."""
    mode = o.cpu_bind
    if o.numa_binding is not None:
        mode = mode_from_numa_binding(o.numa_binding)
    if not hasattr(os, "sched_setaffinity"):
        raise UsageError("--cpu-bind needs Linux's CPU affinity, which this system lacks")
    topo = topology.cpu_topology()
    shares = bind_cpus(mode, nproc, topo, topology.gpus(env))
    return Binding(tuple(shares), tuple(omp_threads(shares, topo)))


def bind_cpus(
    mode: str, nproc: int, topo: Topology, gpus: Sequence[Gpu] = ()
) -> list[frozenset[int]]:
    """The CPUs each local rank may run on, for ``--cpu-bind none|cores|numa``.

    ``none``: all usable CPUs, each (binding to them changes nothing: skip the call).
    ``cores``: equal, contiguous runs of whole physical cores, siblings kept together, in
    (NUMA node, cpu) order; the cores left over from an uneven split stay unbound, since a
    synchronous job runs at its slowest rank's pace. With fewer cores than ranks, every rank
    shares all usable CPUs: pinning two ranks to one core while another has one to itself
    would slow the whole job to the crowded pair's pace.
    ``numa``: the usable CPUs of one NUMA node: the node of the rank's GPU (local rank i uses
    ``gpus[i % len(gpus)]``) when that is known and has usable CPUs, else node i round robin.
    """
    if mode == "none":
        return [topo.cpus] * nproc
    if mode == "cores":
        each = len(topo.cores) // nproc if nproc > 0 else 0
        if each == 0:
            return [topo.cpus] * nproc
        return [frozenset().union(*topo.cores[r * each : (r + 1) * each]) for r in range(nproc)]
    if mode == "numa":
        return [_numa_share(rank, topo, gpus) for rank in range(nproc)]
    raise ValueError(f"--cpu-bind {mode!r}: choose none, cores or numa")


def omp_threads(shares: Sequence[frozenset[int]], topo: Topology) -> list[int]:
    """A default OMP_NUM_THREADS for each rank bound to ``shares``: the physical cores in its
    share, divided among the ranks bound to the very same CPUs (our modes give identical or
    disjoint shares); at least 1. One thread per core: OpenMP loops gain little from siblings."""
    core_of = {cpu: min(core) for core in topo.cores for cpu in core}
    sharing: dict[frozenset[int], int] = {}
    for share in shares:
        sharing[share] = sharing.get(share, 0) + 1
    return [max(1, len({core_of.get(c, c) for c in s}) // sharing[s]) for s in shares]


def mode_from_numa_binding(value: str) -> str:
    """The ``--cpu-bind`` mode for torchrun's ``--numa-binding`` (torch/numa/binding.py).

    ``node`` -> numa: the same CPUs (the node of GPU <local rank>, within the affinity) while
    ranks <= GPUs and each GPU's node is known; where sysfs says -1, torch takes node 0 and
    rankrun goes round robin. ``socket`` -> numa: the same with one NUMA node per socket;
    torch takes every node of the socket, so with sub-NUMA clustering rankrun binds narrower.
    ``exclusive`` -> cores: both split whole physical cores evenly and contiguously; torch
    splits each node's cores among that node's GPUs (the lowest get any extra core), rankrun
    all cores among all ranks, so they agree when GPUs spread evenly over nodes in bus order
    and the cores divide evenly. ``core-complex`` -> cores, roughly: torch gives each rank one
    L3 domain of its GPU's node, which rankrun does not model. torch binds through
    ``numactl --physcpubind`` and fails without numactl; rankrun needs none.
    """
    modes = {"node": "numa", "socket": "numa", "exclusive": "cores", "core-complex": "cores"}
    if value not in modes:
        raise ValueError(f"--numa-binding {value!r}: choose one of {', '.join(modes)}")
    return modes[value]


def _numa_share(rank: int, topo: Topology, gpus: Sequence[Gpu]) -> frozenset[int]:
    node = gpus[rank % len(gpus)].numa_node if gpus else None
    if node is not None and node in topo.nodes:
        return topo.nodes[node]
    order = sorted(topo.nodes)
    return topo.nodes[order[rank % len(order)]] if order else topo.cpus
