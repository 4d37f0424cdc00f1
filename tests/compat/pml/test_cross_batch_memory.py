"""CrossBatchMemory around the fused losses and miners against pytorch-metric-learning's:
the same losses, gradients and miner counts over several steps (the queue fills and wraps),
and the fused route taken where documented (no triplet list, no self-comparison removal)."""
import pytest
import torch

pytest.importorskip("pytorch_metric_learning")
import pytorch_metric_learning.losses  # noqa: E402,F401
import pytorch_metric_learning.miners  # noqa: E402,F401
from pytorch_metric_learning.utils import loss_and_miner_utils as lmu  # noqa: E402

import pytorch_metric_learning as pml  # noqa: E402
import fastcontrast.compat.pml as fc  # noqa: E402
from fastcontrast.triplet import MinedTriplets  # noqa: E402
from tests.conftest import assert_close  # noqa: E402

MINERS = {None: None, "semihard": ("TripletMarginMiner", dict(margin=0.3, type_of_triplets="semihard")),
          "all": ("TripletMarginMiner", dict(margin=0.2)), "batch_hard": ("BatchHardMiner", {})}


def run(lib, loss_name, miner, dtype, steps=5, b=12, memory=30, **call):
    gen = torch.Generator().manual_seed(3)
    miner_obj = None if MINERS[miner] is None else getattr(lib.miners, MINERS[miner][0])(**MINERS[miner][1])
    xbm = lib.losses.CrossBatchMemory(getattr(lib.losses, loss_name)(), embedding_size=5, memory_size=memory,
                                      miner=miner_obj)
    history = []
    for _ in range(steps):
        x = torch.randn(b, 5, generator=gen, dtype=torch.float64).to(dtype).requires_grad_()
        y = torch.randint(0, 3, (b,), generator=gen)
        kw = {k: v(b) for k, v in call.items()}
        out = xbm(x, y, **kw)
        out.backward()
        history.append((out.detach(), x.grad, None if miner_obj is None else miner_obj.num_triplets))
    return history


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("miner", list(MINERS))
@pytest.mark.parametrize("loss", ["TripletMarginLoss", "ContrastiveLoss", "NTXentLoss", "SupConLoss"])
def test_matches_pml(loss, miner, dtype):
    want = run(pml, loss, miner, dtype)
    got = run(fc, loss, miner, dtype)
    for (v, g, n), (wv, wg, wn) in zip(got, want):
        assert_close(v, wv, dtype)
        scale = float(wg.abs().max()) + 1e-3
        assert_close(g, wg, dtype, **({} if dtype == torch.float64 else dict(atol=2e-5 * scale)))
        assert n == wn


def test_enqueue_mask_takes_pmls_route():
    mask = lambda b: torch.arange(b) % 3 == 0  # noqa: E731
    want = run(pml, "ContrastiveLoss", "semihard", torch.float64, enqueue_mask=mask)
    got = run(fc, "ContrastiveLoss", "semihard", torch.float64, enqueue_mask=mask)
    for (v, g, _), (wv, wg, _) in zip(got, want):
        assert_close(v, wv)
        assert_close(g, wg)


@pytest.mark.parametrize("miner", [None, "semihard"])
def test_fused_route_lists_nothing(miner, monkeypatch):
    """Triplet loss + TripletMarginMiner (or no miner) against the memory: no triplet is
    listed and PML's self-comparison removal never runs, except on the step whose batch
    wraps around the end of the queue (PML's route, listed)."""
    listed, removed = [], []
    real_enumerate, real_remove = MinedTriplets._enumerate, lmu.remove_self_comparisons
    monkeypatch.setattr(MinedTriplets, "_enumerate", lambda self: listed.append(1) or real_enumerate(self))
    monkeypatch.setattr(lmu, "remove_self_comparisons", lambda *a, **k: removed.append(1) or real_remove(*a, **k))
    got = run(fc, "TripletMarginLoss", miner, torch.float64, steps=3, b=10, memory=30)  # 0, 10, 20: no wrap
    assert not listed and not removed
    want = run(pml, "TripletMarginLoss", miner, torch.float64, steps=3, b=10, memory=30)
    for (v, g, _), (wv, wg, _) in zip(got, want):
        assert_close(v, wv)
        assert_close(g, wg)
    removed.clear()
    run(fc, "TripletMarginLoss", miner, torch.float64, steps=3, b=12, memory=30)  # third batch wraps
    assert len(removed) == 1


def test_wrapping_a_pml_loss_with_a_fused_miner():
    """A PML loss inside fastcontrast's CrossBatchMemory: PML's route, PML's numbers, and the
    PML loss object is left as it was."""
    def run_with(lib_xbm, lib_miner):
        gen = torch.Generator().manual_seed(5)
        loss = pml.losses.MarginLoss()
        xbm = lib_xbm.losses.CrossBatchMemory(loss, embedding_size=5, memory_size=24,
                                              miner=lib_miner.miners.TripletMarginMiner(margin=0.3))
        out = []
        for _ in range(3):
            x = torch.randn(10, 5, generator=gen, dtype=torch.float64, requires_grad=True)
            y = torch.randint(0, 3, (10,), generator=gen)
            value = xbm(x, y)
            value.backward()
            out.append((value.detach(), x.grad))
        assert not hasattr(loss, "_self_offset_override")
        return out

    for (v, g), (wv, wg) in zip(run_with(fc, fc), run_with(pml, pml)):
        assert_close(v, wv)
        assert_close(g, wg)
