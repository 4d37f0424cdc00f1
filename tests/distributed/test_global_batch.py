"""fastcontrast.distributed on spawned gloo groups, with stand-in losses (the machinery alone)."""
import datetime
import time

import pytest
import torch
import torch.distributed as dist

import fastcontrast as fc
from fastcontrast.distributed import GlobalBatchLoss, all_gather_rows, exchange_layout

from ._cases import check_global
from ._ranks import run_ranks
from ._standin import PairStandIn, SoftmaxStandIn


def native(loss, emb, labels, ref_emb, ref_labels):
    return loss(emb, labels, ref_emb=ref_emb, ref_labels=ref_labels)


STANDIN_CASES = {
    "pair-mean": (lambda: PairStandIn(reduction="mean"), {}),
    "pair-avg_nonzero": (lambda: PairStandIn(reduction="mean", average="avg_nonzero"), {}),
    "pair-sum": (lambda: PairStandIn(reduction="sum"), {}),
    "pair-ref": (lambda: PairStandIn(reduction="mean"), {"ref": True}),
    "softmax": (lambda: SoftmaxStandIn(), {}),
    "softmax-views": (lambda: SoftmaxStandIn(), {"labels": "views"}),
    "softmax-rank0-no-positives": (lambda: SoftmaxStandIn(), {"labels": "rank0_alone"}),
    "softmax-rank0-positives-elsewhere": (lambda: SoftmaxStandIn(), {"labels": "local_singletons"}),
}


def _standin_worker(rank, world, sizes, ref_sizes):
    for name, (make, opts) in STANDIN_CASES.items():
        check_global(rank, world, name, sizes, make, GlobalBatchLoss, native,
                     labels=opts.get("labels", "classes"),
                     ref_sizes=ref_sizes if opts.get("ref") else None)


def _gather_worker(rank, world):
    # rows gathered in rank order, any count per rank; gradient summed over ranks' uses
    x = torch.full((rank + 1, 3), float(rank), dtype=torch.float64, requires_grad=True)
    g, layout = all_gather_rows(x)
    assert layout.sizes == tuple(r + 1 for r in range(world)) and layout.rank == rank
    expect = torch.cat([torch.full((r + 1, 3), float(r), dtype=torch.float64) for r in range(world)])
    assert torch.equal(g.detach(), expect)
    (g * (rank + 1)).sum().backward()  # every rank weighs all rows by rank + 1
    assert torch.equal(x.grad, torch.full_like(x, world * (world + 1) / 2))
    # reduction "none": this rank's anchors against the global batch
    gen = torch.Generator().manual_seed(3)
    sizes = [2 + 3 * r for r in range(world)]
    emb = torch.randn(sum(sizes), 4, generator=gen, dtype=torch.float64)
    y = torch.randint(0, 2, (sum(sizes),), generator=gen)
    rows = slice(sum(sizes[:rank]), sum(sizes[: rank + 1]))
    got = GlobalBatchLoss(PairStandIn(reduction="none"))(emb[rows], y[rows])
    torch.testing.assert_close(got, PairStandIn(reduction="none")(emb, y)[rows], rtol=1e-12, atol=0)
    # average_grads=False: each rank's embedding gradient is exactly its rows of the global
    # gradient (work shared, and the whole-loss-on-every-rank path used for N-pair)
    for make in (PairStandIn, lambda: fc.NPairLoss(l2_reg=0.2, backend="torch", normalize=None)):
        full = emb.clone().requires_grad_(True)
        expected = make()(full, y)
        expected.backward()
        local = emb[rows].clone().requires_grad_(True)
        got = GlobalBatchLoss(make(), average_grads=False)(local, y[rows])
        got.backward()
        torch.testing.assert_close(got.detach(), expected.detach(), rtol=1e-12, atol=1e-14)
        torch.testing.assert_close(local.grad, full.grad[rows], rtol=1e-10, atol=1e-12)


def _mismatch_worker(rank, world):
    # different embedding dimensions: every rank raises the same clear error, no hang
    emb = torch.randn(4, 6 if rank == 1 else 5, dtype=torch.float64, requires_grad=True)
    with pytest.raises(ValueError, match="same dimension on every rank"):
        GlobalBatchLoss(PairStandIn())(emb, torch.arange(4))
    # different dtypes
    emb = torch.randn(4, 5, dtype=torch.float64 if rank else torch.float32)
    with pytest.raises(ValueError, match="same dtype on every rank"):
        exchange_layout(emb)
    # the group is still usable afterwards
    emb = torch.randn(3 + rank, 5, dtype=torch.float64, requires_grad=True)
    GlobalBatchLoss(PairStandIn())(emb, torch.arange(3 + rank) % 2).backward()
    # a rank that never joins: the others get the process group's timeout error, not a hang
    short = dist.new_group(backend="gloo", timeout=datetime.timedelta(seconds=2))
    if rank == 0:
        start = time.monotonic()
        with pytest.raises(RuntimeError):
            GlobalBatchLoss(PairStandIn(), group=short)(emb, torch.arange(3) % 2)
        assert time.monotonic() - start < 30
    dist.barrier()


def test_gather_rows_and_gradient_three_ranks():
    run_ranks(_gather_worker, 3)


def test_three_ranks_all_cases():
    run_ranks(_standin_worker, 3, (6, 10, 4), (5, 2, 7))


def test_two_ranks_all_cases():
    run_ranks(_standin_worker, 2, (10, 4), (3, 6))


def test_mismatched_ranks_and_an_absent_rank_raise_instead_of_hanging():
    run_ranks(_mismatch_worker, 2)


def test_single_process_is_the_plain_loss():
    torch.manual_seed(0)
    emb, y = torch.randn(8, 4, dtype=torch.float64), torch.randint(0, 3, (8,))
    loss = PairStandIn()
    assert torch.equal(GlobalBatchLoss(loss)(emb, y), loss(emb, y))


def test_rejects_a_loss_without_terms():
    with pytest.raises(TypeError, match="terms"):
        GlobalBatchLoss(torch.nn.MSELoss())
