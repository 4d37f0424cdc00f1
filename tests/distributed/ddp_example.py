"""Training with a global-batch contrastive loss under DistributedDataParallel (CPU, gloo).

    torchrun --nproc_per_node=2 tests/distributed/ddp_example.py

Each process embeds its own share of the batch (the shares may differ in size); the loss is
SupCon over the whole global batch, every rank computing only its own anchors, and the
gradients DDP averages are exactly those of one process on the concatenated batch.
"""
import datetime
import os

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

import fastcontrast as fc
from fastcontrast.distributed import GlobalBatchLoss


def main(steps: int = 20, verbose: bool = True) -> list[float]:
    dist.init_process_group("gloo", timeout=datetime.timedelta(seconds=60))
    rank, world = dist.get_rank(), dist.get_world_size()
    torch.manual_seed(0)                       # the same initial model on every rank
    model = DistributedDataParallel(torch.nn.Sequential(
        torch.nn.Linear(32, 64), torch.nn.ReLU(), torch.nn.Linear(64, 16)))
    loss_fn = GlobalBatchLoss(fc.SupConLoss(temperature=0.1))
    opt = torch.optim.SGD(model.parameters(), lr=0.2)

    centers = torch.randn(10, 32, generator=torch.Generator().manual_seed(1))
    data = torch.Generator().manual_seed(100 + rank)   # each rank draws its own rows
    history = []
    for step in range(steps):
        labels = torch.randint(0, 10, (48 + 16 * rank,), generator=data)
        x = centers[labels] + 0.5 * torch.randn(len(labels), 32, generator=data)
        loss = loss_fn(model(x), labels)       # the same global loss on every rank
        opt.zero_grad()
        loss.backward()
        opt.step()
        history.append(loss.item())
        if verbose and rank == 0 and step % 5 == 0:
            print(f"step {step:3d}  global SupCon loss {loss.item():.4f}  (world size {world})")
    dist.destroy_process_group()
    return history


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    main()
