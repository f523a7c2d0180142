"""PET_* variables, torchrun's flags in the environment: they set flags, the command line
wins over them, and a value that does not parse is one line that names the variable."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import Runs
from test_cli_errors import MARKING_RANK, _assert_usage_error
from test_compat import ARGV_RANK, _outputs

from rankrun.base.errors import UsageError
from rankrun.cli.command_line import parse
from rankrun.plan.plan import build_plan


def test_the_command_line_wins_over_pet_and_pet_over_the_default() -> None:
    env = {"PET_NPROC_PER_NODE": "3", "PET_MASTER_PORT": "1234", "PET_NO_PREFIX": "1"}
    options = parse(["--nproc-per-node", "5", "train.py"], env).options
    assert (options.nproc_per_node, options.master_port, options.prefix) == (5, 1234, False)
    assert parse(["train.py"], {}).options.prefix is True


def test_pet_variables_set_flags_and_the_command_line_wins(runs: Runs) -> None:
    runs.script("rank.sh", ARGV_RANK)
    runs.env.update(PET_NPROC_PER_NODE="3", PET_MASTER_PORT="0", PET_NO_PREFIX="1")
    assert runs.run("./rank.sh").returncode == 0
    assert len(_outputs(runs, "args.*")) == 3
    for f in runs.workdir.glob("args.*"):
        f.unlink()
    assert runs.run("--nproc-per-node", "2", "./rank.sh").returncode == 0
    assert len(_outputs(runs, "args.*")) == 2


@pytest.mark.parametrize(
    "name, value, reason",
    [("PET_NPROC_PER_NODE", "lots", "invalid --nproc-per-node 'lots': give a number"),
     ("PET_MASTER_PORT", "abc", "give a number"), ("PET_STANDALONE", "yes", "give 1 or 0"),
     ("PET_CPU_BIND", "all", "give one of none, cores, numa"),
     ("PET_NUMA_BINDING", "zz", "give one of node, socket, exclusive, core-complex"),
     ("PET_ON_STALL", "go", "give one of dump, stop"),
     ("PET_MONITOR_INTERVAL", "abc", "give a number"),  # a flag without effect still parses
     ("PET_RUN_PATH", "yes", "give 1 or 0"),
     ("PET_NNODES", "0", "--nnodes must be at least 1"),  # parses, but out of range
     ("PET_MASTER_PORT", "70000", "--master-port 70000 is outside 0..65535"),
     ("PET_NODE_RANK", "3", "--node-rank 3 is outside [0, 1)"),
     ("PET_LOCAL_RANKS_FILTER", "5", "--local-ranks-filter 5: local rank 5 does not")],
)  # fmt: skip
def test_a_wrong_pet_value_names_the_variable(
    runs: Runs, name: str, value: str, reason: str
) -> None:
    runs.script("rank.sh", MARKING_RANK)
    runs.env[name] = value
    _assert_usage_error(runs, ["./rank.sh"], f"{name}={value!r} in the environment: {reason}")


def test_pet_node_rank_is_a_given_node_rank_and_c10d_needs_none(tmp_path: Path) -> None:
    script = str(tmp_path / "train.py")
    Path(script).write_text("")
    flags = ["--nnodes", "2", "--master-port", "29500", script]
    given = build_plan(script, (), parse(flags, {"PET_NODE_RANK": "1"}).options, env={})
    assert (given.node_rank, given.rendezvous.node_rank_at_join) == (1, False)
    with pytest.raises(UsageError, match="static rendezvous .* needs --node-rank on every node"):
        build_plan(script, (), parse(flags, {}).options, env={})
    c10d = parse(["--rdzv-backend", "c10d", *flags], {}).options
    assert build_plan(script, (), c10d, env={}).rendezvous.node_rank_at_join
