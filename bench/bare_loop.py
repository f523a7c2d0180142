"""The floor: `torch.distributed.launch`'s design (Deformable DETR's tools/launch.py), nothing more.

Popen each rank with its environment, then wait for each in rank order.
"""

import os
import subprocess
import sys


def main() -> None:
    nproc, argv = int(sys.argv[1]), sys.argv[2:]
    env = dict(os.environ, MASTER_ADDR="127.0.0.1", MASTER_PORT="29500", WORLD_SIZE=str(nproc))
    procs = []
    for rank in range(nproc):
        env.update(RANK=str(rank), LOCAL_RANK=str(rank))
        procs.append(subprocess.Popen(argv, env=dict(env)))
    for proc in procs:
        proc.wait()
        if proc.returncode != 0:
            raise subprocess.CalledProcessError(proc.returncode, argv)


if __name__ == "__main__":
    main()
