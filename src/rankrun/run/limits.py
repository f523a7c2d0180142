"""The process limits a run needs raised before its ranks start."""

from __future__ import annotations

from rankrun.plan.checks import FEW_FILES, files_needed


def ensure_fd_capacity(ranks: int) -> None:
    """Raise the soft limit on open files if the ranks' pipes could pass it.

    The common soft limit of 1024 would stop a labelled run near 500 ranks. The ranks inherit
    the raised limit.
    """
    needed = files_needed(ranks)
    if needed <= FEW_FILES:
        return
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed:
        limit = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (limit, hard))
