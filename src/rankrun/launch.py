"""``python -m rankrun.launch``: the command line of ``python -m torch.distributed.launch``.

Scripts written for that launcher read ``--local_rank`` from their arguments, so each rank
gets ``--local_rank=N`` before its own arguments, unless ``--use-env`` is given.
"""

from __future__ import annotations

import sys

from rankrun.cli.flags import LAUNCH_PROG
from rankrun.cli.main import main

if __name__ == "__main__":
    sys.exit(main(["--local-rank-arg", *sys.argv[1:]], prog=LAUNCH_PROG))
