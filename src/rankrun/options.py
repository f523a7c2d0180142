"""Every setting of a run, with its default: the one place a default is spelled."""

from __future__ import annotations

from rankrun.values import NamedTuple


class Options(NamedTuple):
    """Every setting of a run, as the command line gives them; the defaults are torchrun's."""

    nproc_per_node: int = 1
    nnodes: int = 1
    node_rank: int = 0
    master_addr: str = "127.0.0.1"
    master_port: int = 29500
    standalone: bool = False
    module: bool = False
    no_python: bool = False
    max_restarts: int = 0
    shutdown_timeout: float = 30.0
    run_id: str | None = None
    role: str = "default"
    prefix: bool = True
    local_ranks_filter: str | None = None
    timestamps: bool = False
    log_dir: str | None = None
    redirects: str = "0"
    tee: str = "0"
    summary_json: str | None = None
