"""The installed ``rankrun`` command: a plain script, whose first line pip points at its Python.

pip's wrapper for a [project.scripts] entry imports re before rankrun (5 to 12 ms in which a
Ctrl-C prints Python's KeyboardInterrupt); the plain script imports rankrun first.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
from conftest import Runs

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_pip_installs_a_rankrun_that_imports_rankrun_first(runs: Runs, tmp_path: Path) -> None:
    pytest.importorskip("setuptools", reason="installing the tree offline needs setuptools")
    source = tmp_path / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md", "src", "scripts"):
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, source / name)
        elif (ROOT / name).exists():
            shutil.copy(ROOT / name, source / name)
    prefix = tmp_path / "prefix"
    # --ignore-installed: without it pip would first uninstall the rankrun the tests run.
    install = [sys.executable, "-m", "pip", "install", "--quiet", "--no-index", "--no-deps",
               "--no-build-isolation", "--ignore-installed", "--prefix", str(prefix),
               str(source)]  # fmt: skip
    subprocess.run(install, check=True, capture_output=True, timeout=120)

    script = prefix / "bin" / "rankrun"
    first, *rest = script.read_text().splitlines()
    assert first == f"#!{sys.executable}"
    imports = [line for line in rest if line.startswith(("import ", "from "))]
    assert imports == ["from rankrun.cli.main import main"]

    site = sysconfig.get_path("purelib", vars={"base": str(prefix)})
    runs.env["PYTHONPATH"] = site
    runs.script("rank.sh", "echo ran $RANK\n")
    result = subprocess.run(
        [str(script), "--nproc-per-node", "2", "--master-port", "0", "./rank.sh"],
        env=runs.env, cwd=runs.workdir, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert sorted(result.stdout.splitlines()) == ["[rank0]: ran 0", "[rank1]: ran 1"]
