"""rankrun.plan.topology against fake /proc and /sys trees, and once against this machine's own."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

from rankrun.plan import topology
from rankrun.plan.binding import bind_cpus, mode_from_numa_binding, omp_threads
from rankrun.plan.topology import (
    Gpu,
    Topology,
    count_gpus,
    cpu_topology,
    gpus,
    nproc_auto,
    parse_cpulist,
)

# Four GPUs in bus order, each with its NUMA node and uuid; the device minors are deliberately
# not in bus order, as nothing guarantees they are.
GPUS = [
    ("0000:1b:00.0", 0, "GPU-1b1b1b1b-0000-0000-0000-000000000000", 2),
    ("0000:3d:00.0", 0, "GPU-3d3d3d3d-0000-0000-0000-000000000000", 0),
    ("0000:9a:00.0", 1, "GPU-9a9a9a9a-0000-0000-0000-000000000000", 3),
    ("0000:bc:00.0", 1, "GPU-9abcbcbc-0000-0000-0000-000000000000", 1),
]
NODE0 = frozenset(range(0, 8)) | frozenset(range(16, 24))
NODE1 = frozenset(range(8, 16)) | frozenset(range(24, 32))


def write(root: Path, path: str, text: str) -> None:
    target = root / path
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(text)


def fake_cpus(
    root: Path, n: int, siblings: bool = True, nodes: dict[int, str] | None = None
) -> None:
    """n cpus; with ``siblings``, cpu i and i + n/2 share a core (as Intel numbers them)."""
    write(root, "sys/devices/system/cpu/online", f"0-{n - 1}\n")
    for cpu in range(n):
        if siblings:
            core = cpu % (n // 2)
            pair = f"{core},{core + n // 2}\n"
            write(root, f"sys/devices/system/cpu/cpu{cpu}/topology/thread_siblings_list", pair)
    for node, cpulist in (nodes or {}).items():
        write(root, f"sys/devices/system/node/node{node}/cpulist", cpulist)
    if nodes:
        write(root, "sys/devices/system/node/online", f"0-{max(nodes)}\n")
        write(root, "sys/devices/system/node/has_cpu", "0-1\n")


def fake_gpus(root: Path, table: list[tuple[str, int, str, int]]) -> None:
    for bus, node, uuid, minor in reversed(table):
        info = (
            f"Model: \t\t NVIDIA H100 80GB HBM3\nIRQ:   \t\t 123\nGPU UUID: \t {uuid}\n"
            f"Video BIOS: \t 96.00.99.00.01\nBus Type: \t PCIe\nDMA Size: \t 52 bits\n"
            f"Bus Location: \t {bus}\nDevice Minor: \t {minor}\nGPU Excluded:\t No\n"
        )
        write(root, f"proc/driver/nvidia/gpus/{bus}/information", info)
        write(root, f"sys/bus/pci/devices/{bus}/numa_node", f"{node}\n")


@pytest.fixture
def dgx(tmp_path: Path) -> str:
    """Two sockets, two NUMA nodes, 16 cores with hyperthreads (32 cpus), 4 GPUs."""
    root = tmp_path / "dgx"
    fake_cpus(root, 32, nodes={0: "0-7,16-23\n", 1: "8-15,24-31\n"})
    fake_gpus(root, GPUS)
    return str(root)


@pytest.fixture
def cpu_box(tmp_path: Path) -> str:
    """No GPUs, no NUMA (no node folder at all), no hyperthreads: 8 cpus."""
    root = tmp_path / "cpu_box"
    fake_cpus(root, 8, siblings=False)
    return str(root)


# parse_cpulist


@pytest.mark.parametrize(
    "text, cpus",
    [
        ("0-3,8-11\n", {0, 1, 2, 3, 8, 9, 10, 11}),
        ("0,2", {0, 2}),
        ("5", {5}),
        ("", set()),
        ("\n", set()),
        ("0-15:2/4", {0, 1, 4, 5, 8, 9, 12, 13}),
        ("0-1023:2/256", {0, 1, 256, 257, 512, 513, 768, 769}),  # the kernel's own example
        (" 0-1 , 4 ", {0, 1, 4}),
    ],
)
def test_parse_cpulist(text: str, cpus: set[int]) -> None:
    assert parse_cpulist(text) == cpus


@pytest.mark.parametrize("text", ["0-15:2", "N", "0-N", "all", "3-1", "x", "1-", "-1", "0-7:5/4"])
def test_parse_cpulist_refuses_what_it_cannot_read(text: str) -> None:
    with pytest.raises(ValueError, match="not a cpu list"):
        parse_cpulist(text)


# GPUs


def test_gpus_are_in_bus_order_with_their_numa_nodes(dgx: str) -> None:
    assert count_gpus({}, dgx) == 4
    assert gpus({}, dgx) == [Gpu(i, bus, node) for i, (bus, node, _, _) in enumerate(GPUS)]


@pytest.mark.parametrize(
    "spec, chosen",
    [
        ("", []),
        ("-1", []),
        ("2,0", [2, 0]),
        ("3", [3]),
        (" 1 , 2 ", [1, 2]),
        ("1gpu,2ampere", [1, 2]),  # CUDA reads each entry as strtoul does
        ("0,1,-1,3", [0, 1]),  # a negative entry ends the list
        ("0,7,1", [0]),  # so does one past the last GPU
        ("0,x,1", [0]),
        ("0,0", []),  # a repeated one empties it
        ("GPU-3d3d3d3d-0000-0000-0000-000000000000", [1]),
        ("GPU-bc,GPU-1b", []),  # GPU-bc is no uuid's prefix: the list ends at once
        ("GPU-9abc,GPU-1b", [3, 0]),  # unique prefixes
        ("GPU-9a,GPU-1b", []),  # GPU-9a is ambiguous: it ends the list
        ("GPU-1b,GPU-1b", []),
        ("GPU-1b,0", [0]),  # a uuid list ends at the first entry that is not one
        ("0,GPU-1b", [0]),
    ],
)
def test_cuda_visible_devices(dgx: str, spec: str, chosen: list[int]) -> None:
    env = {"CUDA_VISIBLE_DEVICES": spec}
    assert count_gpus(env, dgx) == len(chosen)
    expected = [Gpu(i, GPUS[k][0], GPUS[k][1]) for i, k in enumerate(chosen)]
    assert gpus(env, dgx) == expected


def test_mig_uuids_are_refused_with_advice(dgx: str) -> None:
    with pytest.raises(ValueError, match="MIG.*give --nproc-per-node a number"):
        count_gpus({"CUDA_VISIBLE_DEVICES": "MIG-0c4bb5f3-8f5c-5a1b-a7ee-53b6b3d1c5e8"}, dgx)


def test_unknown_numa_node_is_none(tmp_path: Path) -> None:
    fake_gpus(tmp_path, GPUS[:2])
    write(tmp_path, f"sys/bus/pci/devices/{GPUS[0][0]}/numa_node", "-1\n")
    os.remove(tmp_path / f"sys/bus/pci/devices/{GPUS[1][0]}/numa_node")
    assert [g.numa_node for g in gpus({}, str(tmp_path))] == [None, None]


def test_uppercase_bus_ids_are_lowered_for_sysfs(tmp_path: Path) -> None:
    write(tmp_path, "proc/driver/nvidia/gpus/0000:BC:00.0/information", "Model: x\n")
    write(tmp_path, "sys/bus/pci/devices/0000:bc:00.0/numa_node", "1\n")
    assert gpus({}, str(tmp_path)) == [Gpu(0, "0000:bc:00.0", 1)]


def test_device_nodes_stand_in_when_proc_driver_is_hidden(tmp_path: Path) -> None:
    for name in ("nvidia0", "nvidia1", "nvidiactl", "nvidia-uvm", "nvidia-caps", "null"):
        write(tmp_path, f"dev/{name}", "")
    assert count_gpus({}, str(tmp_path)) == 2
    assert gpus({"CUDA_VISIBLE_DEVICES": "1"}, str(tmp_path)) == [Gpu(0, "", None)]


def test_no_gpus(cpu_box: str) -> None:
    assert count_gpus({}, cpu_box) == 0
    assert gpus({}, cpu_box) == []


# nproc_auto: torchrun's rules, without torch


def test_nproc_auto_on_a_gpu_node(dgx: str) -> None:
    assert nproc_auto("gpu", {}, dgx) == 4
    assert nproc_auto("auto", {}, dgx) == 4
    assert nproc_auto("auto", {"CUDA_VISIBLE_DEVICES": "1,3"}, dgx) == 2
    assert nproc_auto("cpu", {}, dgx) == 32


def test_nproc_auto_without_gpus(cpu_box: str) -> None:
    assert nproc_auto("auto", {}, cpu_box) == 8
    assert nproc_auto("cpu", {}, cpu_box) == 8
    with pytest.raises(ValueError, match=r"^--nproc-per-node gpu: no NVIDIA GPU found"):
        nproc_auto("gpu", {}, cpu_box)


def test_nproc_auto_with_every_gpu_hidden(dgx: str) -> None:
    assert nproc_auto("auto", {"CUDA_VISIBLE_DEVICES": ""}, dgx) == 32
    with pytest.raises(ValueError, match="CUDA_VISIBLE_DEVICES='' hides all GPUs"):
        nproc_auto("gpu", {"CUDA_VISIBLE_DEVICES": ""}, dgx)


def test_nproc_auto_refuses_nonsense(dgx: str) -> None:
    for kind in ("many", "xpu"):
        with pytest.raises(ValueError, match="give a number, or auto, cpu or gpu"):
            nproc_auto(kind, {}, dgx)


def test_nproc_cpu_counts_this_process_affinity() -> None:
    assert nproc_auto("cpu", {}) == len(os.sched_getaffinity(0))


def test_error_messages_are_one_line(cpu_box: str, dgx: str) -> None:
    for call in (
        lambda: nproc_auto("gpu", {}, cpu_box),
        lambda: nproc_auto("gpu", {"CUDA_VISIBLE_DEVICES": "-1"}, dgx),
        lambda: nproc_auto("many", {}, dgx),
        lambda: count_gpus({"CUDA_VISIBLE_DEVICES": "MIG-x"}, dgx),
        lambda: bind_cpus("sockets", 2, cpu_topology(dgx)),
        lambda: mode_from_numa_binding("nodes"),
    ):
        with pytest.raises(ValueError) as caught:
            call()
        assert "\n" not in str(caught.value)


# cpu_topology


def test_cpu_topology_of_a_two_socket_node(dgx: str) -> None:
    topo = cpu_topology(dgx)
    assert topo.cpus == frozenset(range(32))
    assert topo.cores == tuple(frozenset({c, c + 16}) for c in range(16))
    assert topo.nodes == {0: NODE0, 1: NODE1}


def test_cpu_topology_within_a_cpuset(dgx: str) -> None:
    topo = cpu_topology(dgx, usable={0, 1, 2, 3, 16, 17, 9})
    assert topo.cpus == {0, 1, 2, 3, 9, 16, 17}
    assert [set(core) for core in topo.cores] == [{0, 16}, {1, 17}, {2}, {3}, {9}]
    assert topo.nodes == {0: {0, 1, 2, 3, 16, 17}, 1: {9}}
    assert cpu_topology(dgx, usable=range(8)).nodes == {0: frozenset(range(8))}


def test_cpu_topology_without_numa_or_hyperthreads(cpu_box: str) -> None:
    topo = cpu_topology(cpu_box)
    assert topo.cpus == frozenset(range(8))
    assert topo.cores == tuple(frozenset({c}) for c in range(8))
    assert topo.nodes == {0: frozenset(range(8))}


def test_cpu_topology_orders_cores_by_node(tmp_path: Path) -> None:
    """Nodes that interleave cpus, and a memory-only node (as a GPU's memory can be)."""
    fake_cpus(tmp_path, 8, siblings=False, nodes={0: "0,2,4,6\n", 1: "1,3,5,7\n", 2: "\n"})
    topo = cpu_topology(str(tmp_path))
    assert [min(core) for core in topo.cores] == [0, 2, 4, 6, 1, 3, 5, 7]
    assert set(topo.nodes) == {0, 1}
    halves = bind_cpus("cores", 2, topo)
    assert halves == [topo.nodes[0], topo.nodes[1]]


def test_cpu_topology_of_this_machine() -> None:
    topo = cpu_topology()
    assert topo.cpus == os.sched_getaffinity(0)
    assert frozenset().union(*topo.cores) == topo.cpus
    assert sum(len(core) for core in topo.cores) == len(topo.cpus)
    assert frozenset().union(*topo.nodes.values()) == topo.cpus


# bind_cpus


@pytest.mark.parametrize("nproc", [1, 2, 3, 4, 5, 8, 16])
def test_cores_gives_equal_disjoint_contiguous_whole_cores(dgx: str, nproc: int) -> None:
    topo = cpu_topology(dgx)
    shares = bind_cpus("cores", nproc, topo)
    assert len(shares) == nproc
    assert len({len(share) for share in shares}) == 1  # equal
    assert sum(len(share) for share in shares) == len(frozenset().union(*shares))  # disjoint
    each = 16 // nproc
    for rank, share in enumerate(shares):
        assert all(cpu + 16 in share for cpu in share if cpu < 16)  # siblings together
        assert share == frozenset(range(rank * each, (rank + 1) * each)) | frozenset(
            range(16 + rank * each, 16 + (rank + 1) * each)
        )  # a contiguous run of physical cores
    assert len(frozenset().union(*shares)) == 2 * each * nproc  # the remainder stays unbound


def test_cores_with_more_ranks_than_cores_shares_everything(dgx: str) -> None:
    topo = cpu_topology(dgx)
    assert bind_cpus("cores", 17, topo) == [topo.cpus] * 17
    assert bind_cpus("cores", 0, topo) == []


def test_cores_for_eight_ranks_stay_inside_their_nodes(dgx: str) -> None:
    shares = bind_cpus("cores", 8, cpu_topology(dgx))
    assert [share <= NODE0 for share in shares] == [True] * 4 + [False] * 4
    assert all(share <= NODE1 for share in shares[4:])


def test_numa_picks_each_gpus_node(dgx: str) -> None:
    topo, found = cpu_topology(dgx), gpus({}, dgx)
    assert bind_cpus("numa", 4, topo, found) == [NODE0, NODE0, NODE1, NODE1]
    assert bind_cpus("numa", 8, topo, found) == [NODE0, NODE0, NODE1, NODE1] * 2  # i % gpus
    reordered = gpus({"CUDA_VISIBLE_DEVICES": "3,0"}, dgx)
    assert bind_cpus("numa", 2, topo, reordered) == [NODE1, NODE0]


def test_numa_goes_round_robin_without_gpu_locality(dgx: str) -> None:
    topo = cpu_topology(dgx)
    assert bind_cpus("numa", 3, topo) == [NODE0, NODE1, NODE0]
    unknown = [Gpu(0, "0000:1b:00.0", None), Gpu(1, "", None)]
    assert bind_cpus("numa", 2, topo, unknown) == [NODE0, NODE1]
    elsewhere = [Gpu(0, "0000:1b:00.0", 1), Gpu(1, "0000:3d:00.0", 3)]  # node 3: no cpus
    assert bind_cpus("numa", 2, topo, elsewhere) == [NODE1, NODE1]


def test_numa_without_numa_binds_to_everything(cpu_box: str) -> None:
    topo = cpu_topology(cpu_box)
    assert bind_cpus("numa", 2, topo) == [topo.cpus, topo.cpus]


def test_none_leaves_every_rank_all_cpus(dgx: str) -> None:
    topo = cpu_topology(dgx)
    assert bind_cpus("none", 3, topo) == [topo.cpus] * 3
    with pytest.raises(ValueError, match="choose none, cores or numa"):
        bind_cpus("socket", 3, topo)


def test_empty_topology_binds_nothing_new() -> None:
    empty = Topology(frozenset(), (), {})
    assert bind_cpus("numa", 2, empty) == [frozenset(), frozenset()]
    assert bind_cpus("cores", 2, empty) == [frozenset(), frozenset()]


def test_omp_threads_count_physical_cores_per_rank(dgx: str) -> None:
    topo, found = cpu_topology(dgx), gpus({}, dgx)
    assert omp_threads(bind_cpus("cores", 4, topo), topo) == [4] * 4
    assert omp_threads(bind_cpus("cores", 3, topo), topo) == [5] * 3
    assert omp_threads(bind_cpus("numa", 4, topo, found), topo) == [4] * 4  # 8 cores, 2 ranks
    assert omp_threads(bind_cpus("numa", 3, topo), topo) == [4, 8, 4]
    assert omp_threads(bind_cpus("none", 4, topo), topo) == [4] * 4
    assert omp_threads(bind_cpus("none", 40, topo), topo) == [1] * 40


# torchrun's --numa-binding


def test_numa_binding_spellings() -> None:
    assert mode_from_numa_binding("node") == "numa"
    assert mode_from_numa_binding("socket") == "numa"
    assert mode_from_numa_binding("exclusive") == "cores"
    assert mode_from_numa_binding("core-complex") == "cores"
    with pytest.raises(ValueError, match="choose one of node, socket, exclusive, core-complex"):
        mode_from_numa_binding("none")


def test_numa_binding_covers_every_torch_mode() -> None:
    binding = pytest.importorskip("torch.numa.binding")
    for mode in binding.AffinityMode:
        assert mode_from_numa_binding(mode.value) in ("numa", "cores")


# start-up cost


def test_module_imports_only_os_at_run_time() -> None:
    source = Path(topology.__file__).read_text()
    imported = set()
    for node in ast.parse(source).body:  # imports under `if TYPE_CHECKING:` are not run
        if isinstance(node, ast.Import):
            imported |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            imported.add(node.module or "")
    assert imported == {"__future__", "os", "rankrun.base.values"}


def test_import_adds_nothing_to_the_launch_path_and_reads_no_file() -> None:
    code = (
        "import sys, rankrun.cli.main, rankrun.plan.options\n"
        "opened = []\n"
        "sys.addaudithook(lambda e, a: e == 'open' and opened.append(str(a[0])))\n"
        "before = set(sys.modules)\n"
        "import rankrun.plan.topology\n"
        "print(sorted(set(sys.modules) - before))\n"
        "print([p for p in opened if '/sys/' in p or '/proc/' in p or '/dev/' in p])\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.splitlines() == ["['rankrun.plan.topology']", "[]"]
