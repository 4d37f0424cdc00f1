"""One check used by every distributed test: a small model under DDP with a global-batch
loss on unequal local batches must give the loss value and the parameter gradients of one
process running the same loss on the concatenated batch."""
from __future__ import annotations

import copy

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from fastcontrast.distributed import view_labels

DIN, DIM = 7, 5
# (rtol, atol) by dtype
TOL = {torch.float64: (1e-9, 1e-11), torch.float32: (2e-4, 2e-5)}


def split(total_sizes, rank):
    start = sum(total_sizes[:rank])
    return slice(start, start + total_sizes[rank])


def make_labels(kind, sizes, gen, n_classes=3):
    n = sum(sizes)
    if kind == "none":
        return None
    if kind == "one_class":
        return torch.zeros(n, dtype=torch.int64)
    if kind == "classes":
        return torch.randint(0, n_classes, (n,), generator=gen)
    if kind == "views":  # what labels=None means per rank
        out, first = [], 0
        for s in sizes:
            out.append(view_labels(s, first))
            first += s // 2
        return torch.cat(out)
    if kind == "rank0_alone":  # rank 0's rows have labels found nowhere else: no positives
        y = torch.randint(0, n_classes, (n,), generator=gen)
        y[: sizes[0]] = torch.arange(100, 100 + sizes[0])
        return y
    if kind == "local_singletons":  # no positive within rank 0, but some on other ranks
        y = torch.randint(0, n_classes, (n,), generator=gen)
        m = min(sizes[0], sizes[1])
        y[: sizes[0]] = 50 + torch.arange(sizes[0])
        y[sizes[0]: sizes[0] + m] = 50 + torch.arange(m)
        return y
    raise ValueError(kind)


def check_global(rank, world, name, sizes, make_loss, wrap, call, labels="classes",
                 ref_sizes=None, seed=0, dtype=torch.float64):
    """call(loss, emb, labels, ref_emb, ref_labels) -> loss. labels='views' passes None to
    the distributed loss and the equivalent explicit labels to the single-process one."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(sum(sizes), DIN, generator=gen, dtype=dtype)
    y = make_labels(labels, sizes, gen)
    xr = yr = None
    if ref_sizes is not None:
        xr = torch.randn(sum(ref_sizes), DIN, generator=gen, dtype=dtype)
        yr = None if labels == "none" else torch.randint(0, 3, (sum(ref_sizes),), generator=gen)
    torch.manual_seed(seed + 1)
    model = torch.nn.Linear(DIN, DIM).to(dtype)
    single_model = copy.deepcopy(model)

    # one process, whole batch
    single_loss = make_loss()
    emb = single_model(x)
    ref = single_model(xr) if xr is not None else None
    expected = call(single_loss, emb, y, ref, yr)
    expected.backward()
    expected_grads = [p.grad.clone() for p in single_model.parameters()]
    expected_loss_grads = [p.grad.clone() for p in single_loss.parameters() if p.grad is not None]

    # W processes, DDP, this rank's rows
    ddp = DistributedDataParallel(model)
    loss = make_loss()
    dist_loss = wrap(loss)
    rows = split(sizes, rank)
    if xr is None:
        local_emb, local_ref = ddp(x[rows]), None
    else:  # anchors and references through one DDP forward
        both = ddp(torch.cat([x[rows], xr[split(ref_sizes, rank)]]))
        local_emb, local_ref = both[: sizes[rank]], both[sizes[rank]:]
    local_yr = yr[split(ref_sizes, rank)] if yr is not None else None
    local_y = None if labels in ("views", "none") else y[rows]
    got = call(dist_loss, local_emb, local_y, local_ref, local_yr)
    got.backward()
    tag = f"[{name}, rank {rank}/{world}, sizes {sizes}]"
    rtol, atol = TOL[dtype]
    torch.testing.assert_close(got.detach(), expected.detach(), rtol=rtol, atol=atol, msg=f"{tag} loss value")
    for p, g in zip(model.parameters(), expected_grads):
        torch.testing.assert_close(p.grad, g, rtol=rtol, atol=atol, msg=f"{tag} parameter gradient")
    loss_grads = [p.grad for p in loss.parameters() if p.grad is not None]
    for g, e in zip(loss_grads, expected_loss_grads):  # not under DDP: average by hand
        g = g.clone()
        dist.all_reduce(g)
        torch.testing.assert_close(g / world, e, rtol=rtol, atol=atol, msg=f"{tag} loss parameter gradient")
    assert len(loss_grads) == len(expected_loss_grads), tag
    return float(got.detach())
