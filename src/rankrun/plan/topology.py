"""What a node offers its ranks: NVIDIA GPUs, usable CPUs, hyperthreads and NUMA nodes
(``binding.py`` decides which of them each rank gets).

Read from Linux's procfs and sysfs on demand, without torch and without running nvidia-smi
(a process that starts NVML, 0.1 s to seconds, and needs the very driver whose /proc files
we read). Every reader takes ``root`` so that tests can point it at a fake tree.
"""

from __future__ import annotations

import os

from rankrun.base.values import NamedTuple  # typing.NamedTuple's behaviour without typing's 8 ms

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Mapping
    from typing import NoReturn

_GPUS = "proc/driver/nvidia/gpus"  # one folder per GPU, named by its PCI bus id
_CPU = "sys/devices/system/cpu"
_NODE = "sys/devices/system/node"


class Gpu(NamedTuple):
    """A visible GPU: its CUDA ordinal (``cuda:<index>``), its PCI bus id (such as
    ``0000:3b:00.0``; "" when only its /dev/nvidiaN node was found) and its NUMA node."""

    index: int  # type: ignore[assignment]  # shadows tuple.index, which nothing here calls
    pci_bus_id: str
    numa_node: int | None


class Topology(NamedTuple):
    """The usable CPUs; their hyperthread siblings, one set per physical core, in (NUMA node,
    cpu) order; and NUMA node -> its usable CPUs, leaving out nodes with none (memory-only
    nodes, nodes outside the cpuset)."""

    cpus: frozenset[int]
    cores: tuple[frozenset[int], ...]
    nodes: dict[int, frozenset[int]]


def parse_cpulist(text: str) -> frozenset[int]:
    """Parse Linux's cpu list format: ``0-3,8-11``, ``0,2``, ``0-15:2/4`` (two of every four).

    Blank is empty. sysfs prints only the first two forms; the kernel also reads ``N`` and
    ``all``, which need the machine's size and raise ValueError here, as ``0-15:2`` does.
    """
    cpus: set[int] = set()
    for part in text.split(","):
        if not part.strip():
            continue
        try:
            span, _, pattern = part.strip().partition(":")
            first, dash, last = span.partition("-")
            low, high = int(first), int(last if dash else first)
            used, group = map(int, pattern.split("/")) if pattern else (1, 1)
        except ValueError:
            raise ValueError(f"not a cpu list: {text.strip()!r}") from None
        if low > high or group < 1 or not 0 <= used <= group:
            raise ValueError(f"not a cpu list: {text.strip()!r}")
        cpus.update(c for c in range(low, high + 1) if (c - low) % group < used)
    return frozenset(cpus)


def count_gpus(env: Mapping[str, str], root: str = "/") -> int:
    """How many NVIDIA GPUs CUDA will show a rank started with ``env``."""
    return len(_visible_bus_ids(env, root))


def gpus(env: Mapping[str, str], root: str = "/") -> list[Gpu]:
    """The GPUs CUDA will show a rank started with ``env``, in CUDA's order.

    That order is taken to be PCI bus id order, as CUDA_DEVICE_ORDER=PCI_BUS_ID makes it.
    CUDA's default, FASTEST_FIRST, puts faster models first and breaks ties by bus id, so it
    is the same order on any node whose GPUs are all one model, and may differ on a mixed one.
    """
    return [
        Gpu(i, bus.lower(), _numa_node(root, bus))
        for i, bus in enumerate(_visible_bus_ids(env, root))
    ]


def nproc_auto(kind: str, env: Mapping[str, str], root: str = "/") -> int:
    """torchrun's ``--nproc-per-node auto|cpu|gpu``, counted without torch.

    ``auto``: the visible NVIDIA GPUs, else the usable CPUs (torchrun counts any accelerator
    torch knows). ``cpu``: the usable CPUs, len(sched_getaffinity), as torchrun counts them.
    ``gpu``: the visible NVIDIA GPUs, ValueError if none. torchrun's ``xpu`` is not taken:
    sysfs shows Intel GPU cards, not the devices Level Zero makes of them (one per tile).
    """
    if kind == "cpu":
        return len(_usable_cpus(root))
    if kind in ("auto", "gpu"):
        visible = count_gpus(env, root)
        if visible:
            return visible
        if kind == "gpu":
            _no_gpus(env, root)
        return len(_usable_cpus(root))
    raise ValueError(f"--nproc-per-node {kind!r}: give a number, or auto, cpu or gpu")


def cpu_topology(root: str = "/", usable: Iterable[int] | None = None) -> Topology:
    """The usable CPUs (``usable``; else this process's affinity, or a fake tree's online
    CPUs), grouped by physical core and by NUMA node (one node 0 where there is no NUMA)."""
    cpus = frozenset(_usable_cpus(root) if usable is None else usable)
    nodes = {
        int(name[4:]): _cpulist(root, _NODE, name, "cpulist") & cpus
        for name in _listdir(root, _NODE)
        if name.startswith("node") and name[4:].isdigit()
    }
    nodes = {n: c for n, c in sorted(nodes.items()) if c} or ({0: cpus} if cpus else {})
    node_of = {cpu: n for n, members in nodes.items() for cpu in members}
    cores = sorted(_physical_cores(root, cpus), key=lambda c: (node_of.get(min(c), 0), min(c)))
    return Topology(cpus, tuple(cores), nodes)


def _physical_cores(root: str, cpus: frozenset[int]) -> list[frozenset[int]]:
    cores: list[frozenset[int]] = []
    seen: set[int] = set()
    for cpu in sorted(cpus):
        if cpu not in seen:
            siblings = _cpulist(root, _CPU, f"cpu{cpu}", "topology", "thread_siblings_list")
            cores.append((siblings & cpus) | {cpu})
            seen |= cores[-1]
    return cores


def _visible_bus_ids(env: Mapping[str, str], root: str) -> list[str]:
    found = _nvidia_bus_ids(root)
    spec = env.get("CUDA_VISIBLE_DEVICES")
    return [found[i] for i in _parse_visible(spec, len(found), lambda: _uuids(root, found))]


def _nvidia_bus_ids(root: str) -> list[str]:
    """Every NVIDIA GPU's bus id in bus order, from the driver's /proc files; else one "" per
    /dev/nvidiaN node (a sandbox or container may show the nodes and hide /proc/driver)."""
    found = _listdir(root, _GPUS)
    if found:
        return sorted(found, key=_bus_order)
    dev = _listdir(root, "dev")
    return ["" for name in dev if name.startswith("nvidia") and name[6:].isdigit()]


def _parse_visible(spec: str | None, count: int, uuids: Callable[[], list[str]]) -> list[int]:
    """CUDA_VISIBLE_DEVICES -> ordinals, by the rules torch.cuda._parse_visible_devices copies
    from CUDA: the first bad, negative, unknown or ambiguous entry ends the list, and a
    repeated one empties it; ``1gpu`` reads as 1; ``GPU-`` entries match uuid prefixes."""
    if spec is None:
        return list(range(count))
    if spec.startswith("MIG-"):
        raise ValueError(
            "CUDA_VISIBLE_DEVICES names MIG instances, which rankrun cannot count without "
            "NVML: give --nproc-per-node a number"
        )
    by_uuid = spec.startswith("GPU-")
    known = uuids() if by_uuid else []
    chosen: list[int] = []
    for item in spec.split(","):
        i = _uuid_ordinal(item.strip(), known) if by_uuid else _leading_int(item.strip())
        if not 0 <= i < count:
            break
        if i in chosen:
            return []
        chosen.append(i)
    return chosen


def _uuid_ordinal(prefix: str, known: list[str]) -> int:
    matches = [i for i, uuid in enumerate(known) if uuid.startswith(prefix)]
    return matches[0] if prefix.startswith("GPU-") and len(matches) == 1 else -1


def _leading_int(text: str) -> int:
    """The integer ``text`` starts with, as strtoul reads it, or -1 where there is none."""
    body = text[1:] if text[:1] in ("+", "-") else text
    digits = len(body) - len(body.lstrip("0123456789"))
    if digits == 0:
        return -1
    return -int(body[:digits]) if text[:1] == "-" else int(body[:digits])


def _uuids(root: str, bus_ids: list[str]) -> list[str]:
    """Each GPU's uuid from its ``information`` file ("GPU UUID: GPU-..."); "" if unknown."""
    uuids = []
    for bus in bus_ids:
        lines = (_read(root, _GPUS, bus, "information") or "").splitlines() if bus else []
        fields = (line.partition(":") for line in lines)
        uuids.append(next((v.strip() for k, _, v in fields if k.strip() == "GPU UUID"), ""))
    return uuids


def _no_gpus(env: Mapping[str, str], root: str) -> NoReturn:
    spec, present = env.get("CUDA_VISIBLE_DEVICES"), len(_nvidia_bus_ids(root))
    if spec is not None and present:
        raise ValueError(f"--nproc-per-node gpu: CUDA_VISIBLE_DEVICES={spec!r} hides all GPUs")
    raise ValueError("--nproc-per-node gpu: no NVIDIA GPU found; give a number of ranks")


def _numa_node(root: str, bus: str) -> int | None:
    text = _read(root, "sys/bus/pci/devices", bus.lower(), "numa_node") if bus else None
    node = _leading_int(text.strip()) if text else -1
    return node if node >= 0 else None


def _bus_order(bus: str) -> tuple[int, ...]:
    try:
        return tuple(int(part, 16) for part in bus.replace(".", ":").split(":"))
    except ValueError:
        return (1 << 32,)


def _usable_cpus(root: str) -> frozenset[int]:
    if root == "/":
        return frozenset(os.sched_getaffinity(0))
    return _cpulist(root, _CPU, "online")


def _cpulist(root: str, *path: str) -> frozenset[int]:
    return parse_cpulist(_read(root, *path) or "")


def _read(root: str, *path: str) -> str | None:
    try:
        with open(os.path.join(root, *path)) as f:
            return f.read()
    except OSError:
        return None


def _listdir(root: str, path: str) -> list[str]:
    try:
        return os.listdir(os.path.join(root, path))
    except OSError:
        return []
