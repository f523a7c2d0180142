"""Where the registry of live runs lives: a private directory that every terminal agrees on.

``$XDG_RUNTIME_DIR/rankrun`` when that is set and writable, else ``/tmp/rankrun-<uid>``
(created 0700; refused if someone else owns it or others may write to it). Readers look in
both, since one terminal may have ``XDG_RUNTIME_DIR`` and another not (a batch job and an ssh
login on the same node, ``docker exec``, ``su``). ``$RANKRUN_RUNTIME_DIR``, when set, is the
one place written and read instead.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from rankrun.base.errors import RankrunError

OVERRIDE_VAR = "RANKRUN_RUNTIME_DIR"


class RegistryError(RankrunError):
    """The runtime directory cannot be used safely. The message is one line with the fix."""


def runtime_dir(env: Mapping[str, str] | None = None) -> str:
    """The directory to register in, created if need be. Raises ``RegistryError``.

    ``$RANKRUN_RUNTIME_DIR`` if set (then the only place looked in); else
    ``$XDG_RUNTIME_DIR/rankrun`` if ``XDG_RUNTIME_DIR`` is a writable directory of this user;
    else ``/tmp/rankrun-<uid>``.
    """
    own = _override(env)
    if own is not None:
        return _ensure_private_dir(own)
    xdg = _xdg_dir(env)
    if xdg is not None:
        return _ensure_private_dir(xdg)
    return _ensure_private_dir(_tmp_dir())


def _override(env: Mapping[str, str] | None) -> str | None:
    path = (os.environ if env is None else env).get(OVERRIDE_VAR, "")
    return os.path.abspath(path) if path else None


def _xdg_dir(env: Mapping[str, str] | None) -> str | None:
    base = (os.environ if env is None else env).get("XDG_RUNTIME_DIR", "")
    if not os.path.isabs(base):
        return None
    try:
        st = os.stat(base)
    except OSError:
        return None
    # Owned by this user, as the XDG spec requires: after su, it is still the other user's.
    if st.st_uid == os.getuid() and os.access(base, os.W_OK | os.X_OK):
        return os.path.join(base, "rankrun")
    return None


def _tmp_dir(uid: int | None = None) -> str:
    # Not $TMPDIR: every terminal of the user must agree on the place.
    return f"/tmp/rankrun-{os.getuid() if uid is None else uid}"


def search_dirs(env: Mapping[str, str] | None) -> list[str]:
    """The existing directories readers look in, with their rightful owner, checked as safe.

    Under sudo (root with ``SUDO_UID``), the invoking user's too: ``sudo rankrun stacks`` is
    the fix for a refused ptrace, and must find that user's runs.
    """
    own = _override(env)
    uid = os.getuid()
    places: list[tuple[str | None, int]] = [(own, uid)]
    if own is None:
        places = [(_xdg_dir(env), uid), (_tmp_dir(), uid)]
        sudo_uid = (os.environ if env is None else env).get("SUDO_UID", "")
        if uid == 0 and sudo_uid.isdigit() and int(sudo_uid) != 0:
            user = int(sudo_uid)
            places += [(f"/run/user/{user}/rankrun", user), (_tmp_dir(user), user)]
    found: list[str] = []
    for path, owner in places:
        if path is not None and path not in found and os.path.lexists(path):
            _check_private_dir(path, owner)
            found.append(path)
    return found


def _ensure_private_dir(path: str) -> str:
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        pass
    except OSError as e:
        raise RegistryError(f"cannot create the run registry {path}: {e.strerror}") from None
    _check_private_dir(path, os.getuid())
    return path


def _check_private_dir(path: str, owner: int) -> None:
    import stat

    try:
        st = os.lstat(path)
    except OSError as e:
        raise RegistryError(f"cannot use the run registry {path}: {e.strerror}") from None
    if not stat.S_ISDIR(st.st_mode):
        what = "a symbolic link" if stat.S_ISLNK(st.st_mode) else "not a directory"
        raise RegistryError(f"the run registry {path} is {what}: remove it")
    if st.st_uid != owner:
        whose = "you" if owner == os.getuid() else "its user"
        raise RegistryError(
            f"the run registry {path} belongs to uid {st.st_uid}, not to {whose} "
            f"(uid {owner}): remove it, or set {OVERRIDE_VAR} to a directory of yours"
        )
    if st.st_mode & 0o022:
        raise RegistryError(
            f"the run registry {path} is writable by others (mode {st.st_mode & 0o777:o}): "
            f"chmod 700 {path}"
        )
