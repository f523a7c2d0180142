"""How a training script becomes a command, checked by running it."""

from __future__ import annotations

import sys

import pytest
from conftest import Runs

from rankrun.base.errors import UsageError
from rankrun.plan.command import resolve_command


def test_executable_runs_directly_with_its_arguments(runs: Runs) -> None:
    runs.script("configs/x.sh", 'echo "$0 $*" > "out.$RANK"\n')
    result = runs.run("configs/x.sh", "--lr", "0.1", "--nproc_per_node", "9")
    assert result.returncode == 0, result.stderr
    assert (runs.workdir / "out.0").read_text() == "configs/x.sh --lr 0.1 --nproc_per_node 9\n"


def test_shebang_file_without_run_bit_runs_through_its_interpreter(runs: Runs) -> None:
    runs.script("x.sh", 'echo "$BASH_VERSION" > "out.$RANK"\n', executable=False)
    result = runs.gang(2, "x.sh")
    assert result.returncode == 0, result.stderr
    assert (runs.workdir / "out.1").read_text().strip()


def test_python_file_without_run_bit_runs_unbuffered_with_this_python(runs: Runs) -> None:
    runs.script(
        "train.py",
        """
        import os
        argv = open("/proc/self/cmdline").read().split(chr(0))[:2]
        open("out." + os.environ["RANK"], "w").write(" ".join(argv))
    """,
        executable=False,
    )
    result = runs.run("train.py")
    assert result.returncode == 0, result.stderr
    assert (runs.workdir / "out.0").read_text() == f"{sys.executable} -u"


def test_module_runs_with_dash_m(runs: Runs) -> None:
    runs.script(
        "mymod.py",
        """
        import os, sys
        open("out." + os.environ["RANK"], "w").write(sys.argv[1])
    """,
    )
    result = runs.run("-m", "mymod", "hello")
    assert result.returncode == 0, result.stderr
    assert (runs.workdir / "out.0").read_text() == "hello"


def test_no_python_runs_the_command_as_given(runs: Runs) -> None:
    result = runs.run("--no-python", "bash", "-c", 'echo "$RANK" > out.$RANK')
    assert result.returncode == 0, result.stderr
    assert (runs.workdir / "out.0").read_text() == "0\n"


def test_resolution_table(runs: Runs) -> None:
    py = runs.script("a.py", "print(1)\n", executable=False)
    sh = runs.script("b.sh", "#!/bin/sh -e\necho\n", executable=False)
    assert resolve_command(str(py), ["x"]) == (sys.executable, "-u", str(py), "x")
    assert resolve_command(str(sh), []) == ("/bin/sh", "-e", str(sh))
    module = resolve_command("pkg.mod", ["y"], module=True)
    assert module == (sys.executable, "-u", "-m", "pkg.mod", "y")
    with pytest.raises(UsageError, match="does not exist"):
        resolve_command("/nonexistent/x.py", [])
