"""Slurm hostlists (rankrun.cli.hostlist): against literal answers and Slurm's own scontrol.

How rankrun.cli.slurm reads a step's environment is tests/test_slurm_env.py.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from rankrun.cli.hostlist import expand_hostlist, first_host

# Expressions both this module and Slurm's scontrol expand, and what they expand to.
TABLE = [
    ("node1", ["node1"]),
    ("a,b", ["a", "b"]),
    ("a,a", ["a", "a"]),
    ("n[1-2]", ["n1", "n2"]),
    ("n[08-11]", ["n08", "n09", "n10", "n11"]),
    ("n[8-11]", ["n8", "n9", "n10", "n11"]),
    ("n[009-011]", ["n009", "n010", "n011"]),
    ("n[01-2]", ["n01", "n02"]),  # the low end sets the width
    ("n[1-02]", ["n1", "n2"]),
    ("n[1-3,2]", ["n1", "n2", "n3", "n2"]),  # duplicates kept, order kept
    ("gpu[01-04,07],cpu-a[1-2]", ["gpu01", "gpu02", "gpu03", "gpu04", "gpu07", "cpu-a1", "cpu-a2"]),
    ("rack[1-2]-n[1-2]", ["rack1-n1", "rack1-n2", "rack2-n1", "rack2-n2"]),
    ("n[1-2][3-4]", ["n13", "n14", "n23", "n24"]),
    ("n[1-2],m[3]", ["n1", "n2", "m3"]),
    ("[1-2]", ["1", "2"]),
]

# Malformed for both: scontrol prints "Invalid hostlist" (and exits 0).
BAD_FOR_BOTH = ["n[2-1]", "n[[1]]", "n[a]", "n[]", "n[-1]", "n[1,,2]", "n[1-2]]"]
# Slurm 22.05 tolerates these (skips empty names, splits at blanks, reads "n[1-]" as n1, and
# even "n[1-2" as "n]"); Slurm never writes them, and here they are taken for typos.
BAD_HERE = ["", "a,,b", ",a", "a,", "a b", "n[1-2", "n]", "n[1-]"]


@pytest.mark.parametrize(("expr", "hosts"), TABLE)
def test_expand(expr: str, hosts: list[str]) -> None:
    assert expand_hostlist(expr) == hosts
    assert first_host(expr) == hosts[0]


def test_a_name_after_the_last_bracket_is_kept() -> None:
    # Slurm 22.05's scontrol calls this invalid, later Slurm expands it: taking it does no harm.
    assert expand_hostlist("x[1-2]y") == ["x1y", "x2y"]


@pytest.mark.parametrize("expr", BAD_FOR_BOTH + BAD_HERE)
def test_malformed(expr: str) -> None:
    with pytest.raises(ValueError, match="hostlist"):
        expand_hostlist(expr)
    with pytest.raises(ValueError, match="hostlist"):
        first_host(expr)


def test_a_huge_range_is_refused() -> None:
    with pytest.raises(ValueError, match="too long"):
        expand_hostlist("n[0-99999999]")


def scontrol_hostnames(expr: str, tmp_path: Path) -> str:
    if shutil.which("scontrol") is None:
        pytest.skip("scontrol is not installed (bash tests/slurm/cluster.sh start installs it)")
    # A config of its own: without one scontrol retries for 60 s; no controller is asked.
    conf = tmp_path / "slurm.conf"
    conf.write_text("ClusterName=hostlist\nSlurmctldHost=localhost\n")
    done = subprocess.run(
        ["scontrol", "show", "hostnames", expr],
        env={"SLURM_CONF": str(conf), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=20,
    )
    return done.stdout + done.stderr


@pytest.mark.parametrize(("expr", "hosts"), TABLE)
def test_expand_as_scontrol_does(expr: str, hosts: list[str], tmp_path: Path) -> None:
    assert scontrol_hostnames(expr, tmp_path).split() == expand_hostlist(expr)


@pytest.mark.parametrize("expr", BAD_FOR_BOTH)
def test_scontrol_refuses_too(expr: str, tmp_path: Path) -> None:
    assert "Invalid hostlist" in scontrol_hostnames(expr, tmp_path)
