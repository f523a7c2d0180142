"""The tree shows the path of a run: each stage a package, and imports only point down.

A module may import from its own package and from the packages below it in ``STAGES``, never
from a package above it and never from the package root. No two modules import each other,
even lazily inside a function.
"""

from __future__ import annotations

import ast
from pathlib import Path

import rankrun

STAGES = ("base", "plan", "output", "inspect", "run", "job", "cli")
"""Bottom to top: values and errors; planning; what a run produced and how it is written;
diagnostics that a run feeds; the loop on one node; the job across nodes; the command."""

SRC = Path(rankrun.__file__).parent
ENTRY_POINTS = {"rankrun", "rankrun.__main__", "rankrun.launch"}


def module_name(path: Path) -> str:
    parts = path.relative_to(SRC.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> set[str]:
    """Every rankrun module that ``path`` imports, at its top or inside a function."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] == "rankrun"}
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("rankrun"):
            assert node.module is not None
            for alias in node.names:
                candidate = f"{node.module}.{alias.name}"
                is_module = (SRC.parent / candidate.replace(".", "/")).with_suffix(".py").exists()
                is_package = (SRC.parent / candidate.replace(".", "/")).is_dir()
                found.add(candidate if is_module or is_package else node.module)
    return found


def graph() -> dict[str, set[str]]:
    return {module_name(p): imports(p) for p in SRC.rglob("*.py")}


def stage(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 2 or (len(parts) == 2 and parts[1] in STAGES) else None


def test_the_packages_are_the_stages() -> None:
    packages = {p.name for p in SRC.iterdir() if (p / "__init__.py").exists()}
    assert packages == set(STAGES)
    for name in STAGES:
        doc = ast.get_docstring(ast.parse((SRC / name / "__init__.py").read_text()))
        assert doc and len(doc.splitlines()) >= 2, f"rankrun.{name} says what it holds"


def test_no_module_imports_the_package_root() -> None:
    offenders = [m for m, targets in graph().items() if "rankrun" in targets]
    assert offenders == []


def test_imports_point_down_the_stages() -> None:
    upward = []
    for module, targets in graph().items():
        if module in ENTRY_POINTS:
            continue
        own = STAGES.index(stage(module) or "base")
        for target in targets:
            target_stage = stage(target)
            if target_stage is not None and STAGES.index(target_stage) > own:
                upward.append(f"{module} -> {target}")
    assert upward == []


def test_no_two_modules_import_each_other() -> None:
    edges = graph()
    circles = []

    def visit(module: str, path: list[str]) -> None:
        for target in edges.get(module, ()):
            if target in path:
                circles.append(" -> ".join([*path[path.index(target) :], target]))
            elif target not in done:
                visit(target, [*path, target])
        done.add(module)

    done: set[str] = set()
    for module in sorted(edges):
        if module not in done:
            visit(module, [module])
    assert circles == []
