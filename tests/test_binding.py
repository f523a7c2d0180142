"""--cpu-bind: each rank, and everything it starts, runs on its own share of the cores."""

from __future__ import annotations

import os

import pytest
from conftest import Runs

from rankrun.plan.topology import cpu_topology

AFFINITY = """
python3 -c 'import os; print(sorted(os.sched_getaffinity(0)))' > "cpus.$RANK"
sh -c 'python3 -c "import os; print(sorted(os.sched_getaffinity(0)))"' > "child.$RANK"
echo "$OMP_NUM_THREADS" > "omp.$RANK"
"""
USABLE = sorted(os.sched_getaffinity(0))


def _read(runs: Runs, prefix: str, ranks: int) -> list[str]:
    return [(runs.workdir / f"{prefix}.{r}").read_text().strip() for r in range(ranks)]


@pytest.mark.skipif(len(USABLE) < 2, reason="needs two usable CPUs")
def test_cores_gives_each_rank_and_its_children_a_disjoint_share(runs: Runs) -> None:
    runs.script("rank.sh", AFFINITY)
    runs.env.pop("OMP_NUM_THREADS", None)
    assert runs.gang(2, "--cpu-bind", "cores", "./rank.sh").returncode == 0
    shares = _read(runs, "cpus", 2)
    assert shares == _read(runs, "child", 2), "a rank's children inherit its binding"
    first, second = (set(eval(s)) for s in shares)  # noqa: S307 - our own printed lists
    assert first and second and not first & second and first | second <= set(USABLE)
    cores = cpu_topology().cores
    whole = [sum(1 for core in cores if core <= share) for share in (first, second)]
    assert _read(runs, "omp", 2) == [str(n) for n in whole], "one thread per whole core"
    assert sorted(os.sched_getaffinity(0)) == USABLE, "the launcher's own is untouched"


@pytest.mark.parametrize("flags", [[], ["--cpu-bind", "none"], ["--numa-binding", "node"]])
def test_without_a_share_of_cores_each_rank_may_run_on_every_usable_cpu(
    runs: Runs, flags: list[str]
) -> None:
    runs.script("rank.sh", AFFINITY)
    assert runs.gang(2, *flags, "./rank.sh").returncode == 0
    assert _read(runs, "cpus", 2) == [str(USABLE)] * 2  # one NUMA node here: all its CPUs
