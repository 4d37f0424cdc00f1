"""The miners' lazy selection as a tuple (what PML code expects), the miners' counts and
statistics, loss attributes, and triplets_per_anchor, against pytorch-metric-learning."""
import copy
import pickle

import pytest
import torch

pml_miners = pytest.importorskip("pytorch_metric_learning.miners")
from pytorch_metric_learning import losses as pml_losses  # noqa: E402
from pytorch_metric_learning import distances as pml_distances  # noqa: E402
from pytorch_metric_learning.utils import loss_and_miner_utils as lmu  # noqa: E402

from fastcontrast.compat.pml import distances, losses, miners  # noqa: E402
from fastcontrast.triplet import MinedTriplets  # noqa: E402
from tests.conftest import assert_close  # noqa: E402


def batch(gen, b=18, d=5, classes=4):
    return torch.randn(b, d, generator=gen, dtype=torch.float64), torch.randint(0, classes, (b,), generator=gen)


def grad_of(loss_fn, x, y, mined_fn, dtype=torch.float64):
    e = x.detach().clone().to(dtype).requires_grad_()
    out = loss_fn(e, y, mined_fn(e, y))
    out.backward()
    return out, e.grad


def test_selection_is_a_tuple_materialized_on_first_read(gen):
    x, y = batch(gen)
    sel = miners.TripletMarginMiner(margin=0.3, type_of_triplets="semihard")(x, y)
    assert isinstance(sel, tuple) and isinstance(sel, MinedTriplets)
    assert len(sel) == 3 and bool(sel)
    assert sel._materialized is None  # len / isinstance read nothing
    want = pml_miners.TripletMarginMiner(margin=0.3, type_of_triplets="semihard")(x, y)
    a, p, n = sel
    assert sel._materialized is not None
    for got, exp in zip((a, p, n), want):
        assert torch.equal(got, exp)
    assert torch.equal(sel[-1], want[2]) and len(sel[1:]) == 2
    assert len(sel + (a,)) == 4 and len((a,) + sel) == 4
    plain = pickle.loads(pickle.dumps(sel))
    assert type(plain) is tuple and all(torch.equal(u, v) for u, v in zip(plain, want))
    assert type(copy.deepcopy(sel)) is tuple
    assert [t.shape for t in list(sel)] == [t.shape for t in want]
    # PML's own utilities on it
    assert all(torch.equal(u, v) for u, v in zip(lmu.convert_to_pairs(sel, y), lmu.convert_to_pairs(want, y)))


@pytest.mark.parametrize("pml_loss", ["TripletMarginLoss", "MarginLoss", "ContrastiveLoss", "MultiSimilarityLoss",
                                      "CircleLoss", "NTXentLoss"])
@pytest.mark.parametrize("miner", ["TripletMarginMiner", "BatchHardMiner"])
def test_pml_losses_take_the_selection(pml_loss, miner, gen):
    """PML's own losses given fastcontrast's lazy selection compute what they compute with
    PML's miner output (values and gradients)."""
    x, y = batch(gen)
    kw = dict(margin=0.3, type_of_triplets="semihard") if miner == "TripletMarginMiner" else {}
    ours, theirs = getattr(miners, miner)(**kw), getattr(pml_miners, miner)(**kw)
    loss = getattr(pml_losses, pml_loss)()
    got, got_grad = grad_of(loss, x, y, ours)
    want, want_grad = grad_of(loss, x, y, theirs)
    assert_close(got, want)
    assert_close(got_grad, want_grad)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("kind", ["all", "hard", "semihard", "easy"])
def test_num_triplets_without_listing(kind, dtype, gen):
    x, y = batch(gen)
    x = x.to(dtype)
    ours, theirs = (miners.TripletMarginMiner(margin=0.25, type_of_triplets=kind),
                    pml_miners.TripletMarginMiner(margin=0.25, type_of_triplets=kind))
    assert ours.num_triplets == 0
    sel, want = ours(x, y), theirs(x, y)
    assert ours.num_triplets == theirs.num_triplets == len(want[0])
    assert sel._materialized is None  # counted by the sorted pass, not by listing
    # consumed by a fused loss: the loss's own counts are the number
    sel = ours(x, y)
    losses.TripletMarginLoss()(x, y, sel)
    assert sel._count is not None and sel._materialized is None
    assert ours.num_triplets == len(want[0])
    assert ours.num_pos_pairs == 0 and ours.num_neg_pairs == 0


def test_num_triplets_with_ref_emb_and_batch_hard(gen):
    x, y = batch(gen)
    r, ry = batch(gen, b=11)
    for ours, theirs in ((miners.TripletMarginMiner(type_of_triplets="all"), pml_miners.TripletMarginMiner()),
                         (miners.BatchHardMiner(), pml_miners.BatchHardMiner())):
        ours(x, y, r, ry)
        theirs(x, y, r, ry)
        assert ours.num_triplets == theirs.num_triplets


@pytest.mark.parametrize("dist", [None, "CosineSimilarity", "LpDistance"])
def test_miner_collect_stats(dist, gen):
    x, y = batch(gen)
    kw_ours = {} if dist is None else {"distance": getattr(distances, dist)()}
    kw_theirs = {} if dist is None else {"distance": getattr(pml_distances, dist)()}
    pairs = [(miners.TripletMarginMiner(margin=0.3, collect_stats=True, **kw_ours),
              pml_miners.TripletMarginMiner(margin=0.3, collect_stats=True, **kw_theirs),
              ("pos_pair_dist", "neg_pair_dist", "avg_triplet_margin")),
             (miners.BatchHardMiner(collect_stats=True, **kw_ours),
              pml_miners.BatchHardMiner(collect_stats=True, **kw_theirs),
              ("hardest_triplet", "easiest_triplet", "hardest_pos_pair", "easiest_pos_pair",
               "hardest_neg_pair", "easiest_neg_pair"))]
    for ours, theirs, attrs in pairs:
        ours(x, y)
        theirs(x, y)
        for attr in attrs:
            assert getattr(ours, attr) == pytest.approx(getattr(theirs, attr), rel=1e-9, abs=1e-12), attr


def test_loss_attributes(gen):
    x, y = batch(gen)
    for name in ("TripletMarginLoss", "ContrastiveLoss", "NTXentLoss", "SupConLoss", "NPairsLoss"):
        ours, theirs = getattr(losses, name)(collect_stats=True), getattr(pml_losses, name)(collect_stats=True)
        ours.distance.collect_stats = theirs.distance.collect_stats = True
        ours(x, y)
        theirs(x, y)
        for attr in ("initial_avg_query_norm", "initial_avg_ref_norm", "final_avg_query_norm", "final_avg_ref_norm"):
            assert getattr(ours.distance, attr) == pytest.approx(getattr(theirs.distance, attr)), (name, attr)
        assert ours.collect_stats is True
    ours, theirs = losses.NPairsLoss(), pml_losses.NPairsLoss()
    ours(x, y)
    theirs(x, y)
    assert ours.num_pairs == theirs.num_pairs > 0


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("n", [1, 4])
def test_triplets_per_anchor(n, dtype, gen):
    """The same triplets as PML for the same seed of torch's generator, values and gradients."""
    x, y = batch(gen)

    def run(loss, **ref):
        torch.manual_seed(123)
        e = x.detach().clone().to(dtype).requires_grad_()
        ref = {k: (v.to(dtype) if v.is_floating_point() else v) for k, v in ref.items()}
        out = loss(e, y, **ref)
        out.backward()
        return out, e.grad

    r, ry = batch(gen, b=9)
    for ref in ({}, {"ref_emb": r, "ref_labels": ry}):
        got, got_grad = run(losses.TripletMarginLoss(margin=0.4, triplets_per_anchor=n), **ref)
        want, want_grad = run(pml_losses.TripletMarginLoss(margin=0.4, triplets_per_anchor=n), **ref)
        assert_close(got, want, dtype)
        assert_close(got_grad, want_grad, dtype)
    # a different seed draws other triplets
    torch.manual_seed(1)
    a = losses.TripletMarginLoss(margin=0.4, triplets_per_anchor=n)(x, y)
    torch.manual_seed(2)
    b = losses.TripletMarginLoss(margin=0.4, triplets_per_anchor=n)(x, y)
    assert a.item() != b.item()
