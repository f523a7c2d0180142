"""How ``training_script`` becomes the argv that each rank runs."""

from __future__ import annotations

import os
import stat
import sys
from collections.abc import Sequence

from rankrun.base.errors import UsageError
from rankrun.base.quoting import quote

_ELF_MAGIC = b"\x7fELF"


def resolve_command(
    script: str, args: Sequence[str], *, module: bool = False, no_python: bool = False
) -> tuple[str, ...]:
    """Return the argv for ``script`` and its ``args``, or raise UsageError.

    A ``.py`` file runs as ``python -u`` with the Python that runs rankrun, as torchrun
    runs it, whatever its ``#!`` line says. Anything else that is executable runs directly,
    as ``torch.distributed.launch`` does; a file that lost its run bit runs through its ``#!``
    interpreter; ``module`` runs ``python -u -m``; ``no_python`` runs as given.
    """
    if module and no_python:
        raise UsageError("-m and --no-python contradict each other: drop one of them")
    if module:
        return (sys.executable, "-u", "-m", script, *args)
    if no_python:
        return (_program(script), *args)
    return (*_script_prefix(script), *args)


def _program(name: str) -> str:
    if os.sep in name:
        if not (os.path.isfile(name) and os.access(name, os.X_OK)):
            shown = quote(name)
            raise UsageError(f"{shown} is not an executable file: check the path or chmod +x it")
        return name
    import shutil  # only here: it costs milliseconds of every launch

    if shutil.which(name) is None:
        raise UsageError(f"{quote(name)} is not found on PATH: give its full path")
    return name


def _script_prefix(path: str) -> tuple[str, ...]:
    _check_regular_file(path)
    if path.endswith(".py"):
        return (sys.executable, "-u", path)
    head = _first_line(path)
    executable = os.access(path, os.X_OK)
    direct = path if os.sep in path else os.path.join(os.curdir, path)
    if head.startswith(b"#!"):
        interpreter = _shebang(path, head)
        return (direct,) if executable else (*interpreter, path)
    if head.startswith(_ELF_MAGIC):
        if executable:
            return (direct,)
        raise UsageError(f"{quote(path)} is a program without its run bit: chmod +x {quote(path)}")
    if not head:
        raise UsageError(f"{quote(path)} is empty: name the script that trains")
    if executable:
        raise UsageError(
            f"{quote(path)} has no #! line, so it cannot run: add one, such as #!/bin/bash"
        )
    raise UsageError(
        f"{quote(path)} is not executable and has no #! line: chmod +x it, add a #! line, "
        f"or name its interpreter with --no-python (rankrun --no-python bash {quote(path)})"
    )


def _check_regular_file(path: str) -> None:
    try:
        mode = os.stat(path).st_mode
    except OSError:
        raise UsageError(f"training script {quote(path)} does not exist: check the path") from None
    if stat.S_ISDIR(mode):
        raise UsageError(
            f"{quote(path)} is a directory: name a script inside it, or use -m for a module"
        )
    if not stat.S_ISREG(mode):
        raise UsageError(f"{quote(path)} is not a regular file (a FIFO or a device): name a script")


def _first_line(path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.readline(4096)
    except OSError as e:
        raise UsageError(f"cannot read training script {quote(path)}: {e.strerror}") from None


def _shebang(path: str, head: bytes) -> tuple[str, ...]:
    """Split a ``#!`` line as the kernel does: the interpreter and at most one argument."""
    parts = head[2:].decode(errors="replace").strip().split(None, 1)
    if not parts:
        raise UsageError(
            f"{quote(path)} has an empty #! line: name an interpreter, such as #!/bin/bash"
        )
    if not (os.path.isfile(parts[0]) and os.access(parts[0], os.X_OK)):
        raise UsageError(
            f"{quote(path)} names {quote(parts[0])} in its #! line, which is not an executable file"
        )
    return tuple(parts)
