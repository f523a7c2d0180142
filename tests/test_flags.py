"""The two readers of the command line agree: the plain one that launches read, and argparse."""

from __future__ import annotations

import pytest

from rankrun.base.errors import UsageError
from rankrun.cli.command_line import _read_plain, parse
from rankrun.cli.flag_parser import read
from rankrun.cli.flags import GROUPS, Flag, spellings

ALL_FLAGS = [flag for _, flags in GROUPS for flag in flags]


def _sample(flag: Flag) -> str:
    if flag.choices:
        return flag.choices[-1]
    return {int: "3", float: "2.5"}.get(flag.type, "4")  # type: ignore[call-overload]


def _every_spelling() -> list[list[str]]:
    lines = []
    for flag in ALL_FLAGS:
        for name in spellings(flag):
            if flag.switch is not None:
                lines.append([name, "train.py", "--lr", "1"])
            else:
                lines.append([name, _sample(flag), "train.py", "--lr", "1"])
                if name.startswith("--"):
                    lines.append([f"{name}={_sample(flag)}", "train.py"])
    return lines


PLAIN = [
    *_every_spelling(),
    ["--nproc-per-node", "8", "--nnodes", "2", "--node-rank", "1", "--master-addr", "h",
     "--master-port", "29400", "--no-python", "configs/r50.sh", "--epochs", "50"],
    ["--nproc_per_node=4", "--use_env", "main.py", "--nproc-per-node", "9"],
    ["--nnodes", "2:2", "--standalone", "--max-restarts", "3", "-m", "pkg.train"],
    ["--rdzv-id", "job", "--run-id", "other", "--master-addr", "", "train.py"],
    ["--tee", "3", "-r", "0:1", "--log-dir", "logs", "--no-prefix", "train.py", "-t", "x"],
    ["train.py"],
    ["", "x"],
]  # fmt: skip


@pytest.mark.parametrize("argv", PLAIN, ids=" ".join)
def test_a_plain_command_line_reads_the_same_without_argparse(argv: list[str]) -> None:
    plain = _read_plain(argv)
    assert plain is not None, "a plainly spelled command line went to argparse"
    assert plain == read(argv)


ARGPARSE_ONLY = [
    ["--nproc", "2", "train.py"],  # an abbreviation
    ["--help"],
    ["--version"],
    ["-t3", "train.py"],
    ["--standalone=1", "train.py"],
    ["--node-rank", "-1", "train.py"],
    ["--", "train.py"],
    ["--nproc-per-node", "many", "train.py"],
    ["--cpu-bind", "all", "train.py"],
    ["--nnodes", "1:4", "train.py"],
    ["--nproc-per-node", "2"],
    [],
    ["train.py", "--", "--lr", "1"],
    ["--master-addr=--", "train.py"],
]


@pytest.mark.parametrize("argv", ARGPARSE_ONLY, ids=" ".join)
def test_anything_else_goes_to_argparse(argv: list[str]) -> None:
    assert _read_plain(argv) is None


def test_argparse_reads_an_abbreviation_of_either_spelling() -> None:
    assert parse(["--nproc", "2", "train.py"], {}).options.nproc_per_node == 2
    assert parse(["--max", "3", "train.py"], {}).options.max_restarts == 3
    assert parse(["--node_r", "1", "--nnodes", "2", "train.py"], {}).options.node_rank == 1
    with pytest.raises(UsageError, match="ambiguous option: --n could match --nproc-per-node,"):
        parse(["--n", "2", "train.py"], {})


def test_a_double_dash_right_after_the_script_is_dropped_as_torchrun_drops_it() -> None:
    assert parse(["train.py", "--", "--lr", "1"], {}).args == ["--lr", "1"]
    assert parse(["train.py", "--lr", "--", "1"], {}).args == ["--lr", "--", "1"]
