"""Every setting of a run, with its default: the one place a default is spelled."""

from __future__ import annotations

from rankrun.base.values import NamedTuple


class Options(NamedTuple):
    """Every setting of a run, as the command line gives them; the defaults are torchrun's."""

    nproc_per_node: int | str = 1
    """A number, or torchrun's ``auto``, ``cpu`` or ``gpu``."""
    nnodes: int = 1
    node_rank: int | None = None
    """None: not given. One node is node 0; across nodes, ``c10d`` hands the ranks out at the
    join, and ``static`` needs one on every node."""
    master_addr: str = "127.0.0.1"
    master_port: int | None = None
    """None: on one node a free port, as torchrun picks; across nodes torchrun's 29500."""
    standalone: bool = False
    rdzv_backend: str = "static"
    rdzv_endpoint: str = ""
    """``HOST[:PORT]``: where node 0's agent listens; the master address and port otherwise."""
    rdzv_conf: str = ""
    """torchrun's ``key=value,...``; rankrun reads ``join_timeout``."""
    join_timeout: float = 600.0
    """Seconds an agent waits for the others to join (``--rdzv-timeout``)."""
    node_timeout: float = 10.0
    """Seconds without a heartbeat before a node is declared lost."""
    local_addr: str | None = None
    module: bool = False
    no_python: bool = False
    local_rank_arg: bool = False
    """Pass ``--local_rank=N`` to each rank, as ``torch.distributed.launch`` did."""
    use_env: bool = False
    """With ``local_rank_arg``: the environment alone carries LOCAL_RANK, as in that launcher."""
    max_restarts: int = 0
    shutdown_timeout: float = 30.0
    run_id: str | None = None
    role: str = "default"
    prefix: bool = True
    log_line_prefix_template: str | None = None
    local_ranks_filter: str | None = None
    timestamps: bool = False
    log_dir: str | None = None
    redirects: str = "0"
    tee: str = "0"
    summary_json: str | None = None
    quiet: bool = False
    """Say nothing of rankrun's own unless something goes wrong: no notes, no closing line."""
    cpu_bind: str = "none"
    """``none``, ``cores`` (an equal share of whole cores each) or ``numa`` (the GPU's node)."""
    numa_binding: str | None = None
    """torchrun's ``node``, ``socket``, ``exclusive`` or ``core-complex``, as a --cpu-bind."""
    stall_timeout: float | None = None
    """Seconds without a line from any rank before every rank's stack is shown."""
    on_stall: str = "dump"
    """``dump``: show the stacks and go on; ``stop``: also end the job (exit code 124)."""
    dry_run: bool = False
    """``--dry-run``: print what each rank would run, and start nothing. The command line
    reads it; ``launch()`` does not (print ``dryrun.dry_run_lines(build_plan(...))``)."""
