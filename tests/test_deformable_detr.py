"""The flow of Deformable DETR: run_dist_launch.sh runs an executable config with rankrun."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from conftest import Runs

from rankrun.plan.ports import free_port

pytest.importorskip("torch")

# As in Deformable DETR's tools/run_dist_launch.sh, with python ./tools/launch.py -> rankrun.
RUN_DIST_LAUNCH = """
    #!/usr/bin/env bash
    set -x
    GPUS=$1
    RUN_COMMAND=${@:2}
    GPUS_PER_NODE=${GPUS_PER_NODE:-$GPUS}
    MASTER_ADDR=${MASTER_ADDR:-"127.0.0.1"}
    MASTER_PORT=${MASTER_PORT:-"29500"}
    NODE_RANK=${NODE_RANK:-0}
    let "NNODES=GPUS/GPUS_PER_NODE"
    python -m rankrun --nnodes ${NNODES} --node_rank ${NODE_RANK} --master_addr ${MASTER_ADDR} \\
        --master_port ${MASTER_PORT} --nproc_per_node ${GPUS_PER_NODE} ${RUN_COMMAND}
"""

CONFIG = """
    #!/usr/bin/env bash
    set -x
    EXP_DIR=exps/r50_deformable_detr
    PY_ARGS=${@:1}
    python -u main.py --output_dir ${EXP_DIR} ${PY_ARGS}
"""

MAIN = """
    import argparse, os
    import torch, torch.distributed as dist
    p = argparse.ArgumentParser()
    p.add_argument("--output_dir"); p.add_argument("--epochs", type=int)
    args = p.parse_args()
    rank, world, local = (int(os.environ[k]) for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK"))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    t = torch.tensor([rank + 1.0])
    dist.all_reduce(t)
    os.makedirs(args.output_dir, exist_ok=True)
    with open(f"{args.output_dir}/rank{rank}", "w") as f:
        node = os.environ.get("SLURMD_NODENAME")  # under srun, which node wrote it
        f.write(f"{node + ' ' if node else ''}{local} {world} {args.epochs} {t.item():g}")
    dist.destroy_process_group()
"""


def write_config_and_main(runs: Runs, *, config_executable: bool = True) -> None:
    """The config and main.py, each rank writing exps/r50_deformable_detr/rank<r>; this
    Python first on PATH, as the config calls python."""
    runs.script("configs/r50_deformable_detr.sh", CONFIG, executable=config_executable)
    runs.script("main.py", MAIN, executable=False)
    runs.env["PATH"] = f"{Path(runs.argv()[0]).parent}:{runs.env['PATH']}"


def _setup(runs: Runs, *, config_executable: bool) -> None:
    runs.script("tools/run_dist_launch.sh", RUN_DIST_LAUNCH)
    write_config_and_main(runs, config_executable=config_executable)


@pytest.mark.parametrize("config_executable", [True, False], ids=["executable", "lost_run_bit"])
@pytest.mark.slow
def test_run_dist_launch_with_an_executable_config(runs: Runs, config_executable: bool) -> None:
    _setup(runs, config_executable=config_executable)
    runs.env["MASTER_PORT"] = str(free_port())
    result = subprocess.run(
        [
            "bash",
            "tools/run_dist_launch.sh",
            "2",
            "./configs/r50_deformable_detr.sh",
            "--epochs",
            "3",
        ],
        env=runs.env,
        cwd=runs.workdir,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    outputs = sorted((runs.workdir / "exps/r50_deformable_detr").iterdir())
    assert [p.name for p in outputs] == ["rank0", "rank1"]
    assert [p.read_text() for p in outputs] == ["0 2 3 3", "1 2 3 3"]
