"""A real DDP training run: a small model on synthetic data, gloo on the CPU.

    rankrun --standalone --nproc-per-node 4 examples/train_ddp.py --steps 50

Each rank trains on its own shard of a synthetic regression task. At the end, every rank
checks that it holds exactly the weights rank 0 holds, which DDP's gradient averaging
guarantees; a mismatch raises, and rankrun names that rank as the root cause.
"""

from __future__ import annotations

import argparse
import gc
import os

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args()

    dist.init_process_group("gloo")
    rank, world_size = dist.get_rank(), dist.get_world_size()
    torch.manual_seed(0)  # the same initial weights everywhere
    model = DistributedDataParallel(nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 1)))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    true_weights = torch.randn(16, 1)

    data = torch.Generator().manual_seed(1000 + rank)  # a different shard per rank
    for step in range(args.steps):
        x = torch.randn(args.batch_size, 16, generator=data)
        y = x @ true_weights
        loss = nn.functional.mse_loss(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if rank == 0 and (step % 10 == 0 or step == args.steps - 1):
            print(f"step {step:4d}  loss {loss.item():.4f}")

    flat = torch.cat([p.detach().flatten() for p in model.parameters()])
    reference = flat.clone()
    dist.broadcast(reference, src=0)
    if not torch.equal(flat, reference):
        raise RuntimeError(f"rank {rank} holds weights that differ from rank 0's")
    print(f"rank {rank}/{world_size} (local {os.environ['LOCAL_RANK']}): weights match rank 0")
    # DDP sits in reference cycles that hold the process group. Collected here, the group ends
    # with destroy_process_group(), threads and all; left to Python's exit, a gloo thread may
    # still free its last work there, and abort the rank.
    del model, optimizer
    gc.collect()
    dist.barrier()  # no rank tears gloo down while a peer still talks to it
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
