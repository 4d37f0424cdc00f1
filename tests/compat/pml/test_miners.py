"""fastcontrast.compat.pml's lazy miners against pytorch-metric-learning's miners: the
fused miner + loss gives PML's numbers and gradients, and materialize() gives PML's triplets."""
import pytest
import torch

pml_miners = pytest.importorskip("pytorch_metric_learning.miners")
from pytorch_metric_learning import distances as pml_distances  # noqa: E402
from pytorch_metric_learning import losses as pml_losses  # noqa: E402

from fastcontrast.compat.pml import distances, losses, miners  # noqa: E402
from fastcontrast.triplet import MinedTriplets  # noqa: E402
from tests.compat.pml._distances import distance_pair  # noqa: E402
from tests.conftest import assert_close  # noqa: E402

DISTANCES = [(None, {}), ("CosineSimilarity", {}), ("DotProductSimilarity", {"normalize_embeddings": False}),
             ("LpDistance", {"power": 2}), ("LpDistance", {"normalize_embeddings": False})]


def as_set(triplets):
    return set(zip(*(t.tolist() for t in triplets)))


def batch(gen, b=19, d=6, classes=4):
    return torch.randn(b, d, generator=gen, dtype=torch.float64), torch.randint(0, classes, (b,), generator=gen)


def mine_and_loss(miner, loss, x, y, dtype, **ref):
    e = x.detach().clone().to(dtype).requires_grad_()
    ref = {k: (v.to(dtype) if v.is_floating_point() else v) for k, v in ref.items()}
    mined = miner(e, y, **ref)
    kw = {"ref_emb": ref["ref_emb"], "ref_labels": ref["ref_labels"]} if ref else {}
    out = loss(e, y, mined, **kw)
    out.backward()
    return mined, out, e.grad


def compare(pml_pair, fc_pair, x, y, dtype, **ref):
    pml_mined, want, want_grad = mine_and_loss(*pml_pair, x, y, dtype, **ref)
    fc_mined, got, got_grad = mine_and_loss(*fc_pair, x, y, dtype, **ref)
    assert isinstance(fc_mined, MinedTriplets)
    assert_close(got, want, dtype)
    scale = float(want_grad.abs().max()) + 1e-3
    assert_close(got_grad, want_grad, dtype, **({} if dtype == torch.float64 else dict(atol=2e-5 * scale)))
    assert as_set(fc_mined.materialize()) == as_set(pml_mined)
    return fc_mined, pml_mined


@pytest.mark.parametrize("kind", ["all", "hard", "semihard", "easy"])
@pytest.mark.parametrize("miner_margin", [0.2, 0.5, -0.1])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_triplet_margin_miner(kind, miner_margin, dtype, gen):
    x, y = batch(gen)
    pml = (pml_miners.TripletMarginMiner(margin=miner_margin, type_of_triplets=kind),
           pml_losses.TripletMarginLoss(margin=0.3))
    fc = (miners.TripletMarginMiner(margin=miner_margin, type_of_triplets=kind),
          losses.TripletMarginLoss(margin=0.3))
    fc_mined, pml_mined = compare(pml, fc, x, y, dtype)
    # same order as PML: increasing (anchor, positive, negative)
    assert all(torch.equal(a, b) for a, b in zip(fc_mined.materialize(), pml_mined))


@pytest.mark.parametrize("dist, dist_kw", DISTANCES)
@pytest.mark.parametrize("kind", ["semihard", "hard"])
def test_miner_distances(dist, dist_kw, kind, gen):
    x, y = batch(gen)
    pml_kw, fc_kw = distance_pair(dist, dist_kw)
    margin = 0.3 if dist is None or dist_kw.get("normalize_embeddings", True) else 2.0
    pml = (pml_miners.TripletMarginMiner(margin=margin, type_of_triplets=kind, **pml_kw),
           pml_losses.TripletMarginLoss(margin=margin / 2, **pml_kw))
    fc = (miners.TripletMarginMiner(margin=margin, type_of_triplets=kind, **fc_kw),
          losses.TripletMarginLoss(margin=margin / 2, **fc_kw))
    compare(pml, fc, x, y, torch.float64)


@pytest.mark.parametrize("dist, dist_kw", DISTANCES)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_batch_hard_miner(dist, dist_kw, dtype, gen):
    x, y = batch(gen)
    y[0] = 7  # an anchor without positives
    pml_kw, fc_kw = distance_pair(dist, dist_kw)
    for loss_kw in (dict(margin=0.2), dict(margin=0.2, swap=True), dict(smooth_loss=True)):
        pml = (pml_miners.BatchHardMiner(**pml_kw), pml_losses.TripletMarginLoss(**loss_kw, **pml_kw))
        fc = (miners.BatchHardMiner(**fc_kw), losses.TripletMarginLoss(**loss_kw, **fc_kw))
        fc_mined, pml_mined = compare(pml, fc, x, y, dtype)
        assert all(torch.equal(a, b) for a, b in zip(fc_mined.materialize(), pml_mined))


def test_miner_and_loss_with_different_distances(gen):
    """The selection is then materialized with the miner's distance, the loss uses its own."""
    x, y = batch(gen)
    pml = (pml_miners.TripletMarginMiner(margin=0.5, type_of_triplets="semihard",
                                         distance=pml_distances.CosineSimilarity()),
           pml_losses.TripletMarginLoss(margin=0.1))
    fc = (miners.TripletMarginMiner(margin=0.5, type_of_triplets="semihard", distance=distances.CosineSimilarity()),
          losses.TripletMarginLoss(margin=0.1))
    compare(pml, fc, x, y, torch.float64)


def test_ref_emb(gen):
    x, y = batch(gen)
    r, ry = batch(gen, b=23)
    for kind in ("semihard", "all"):
        pml = (pml_miners.TripletMarginMiner(margin=0.4, type_of_triplets=kind), pml_losses.TripletMarginLoss())
        fc = (miners.TripletMarginMiner(margin=0.4, type_of_triplets=kind), losses.TripletMarginLoss())
        compare(pml, fc, x, y, torch.float64, ref_emb=r, ref_labels=ry)
    compare((pml_miners.BatchHardMiner(), pml_losses.TripletMarginLoss()),
            (miners.BatchHardMiner(), losses.TripletMarginLoss()), x, y, torch.float64, ref_emb=r, ref_labels=ry)


def test_selection_behaves_like_a_tuple(gen):
    x, y = batch(gen)
    sel = miners.TripletMarginMiner(type_of_triplets="semihard")(x, y)
    a, p, n = sel
    assert len(sel) == 3 and torch.equal(sel[0], a)
    # a real PML loss takes its materialized form (PML checks for a real tuple)
    want = pml_losses.TripletMarginLoss()(x, y, pml_miners.TripletMarginMiner(type_of_triplets="semihard")(x, y))
    assert_close(pml_losses.TripletMarginLoss()(x, y, sel.materialize()), want)
    assert_close(pml_losses.TripletMarginLoss()(x, y, tuple(sel)), want)


def test_bad_arguments(gen):
    x, y = batch(gen)
    with pytest.raises(ValueError, match="type_of_triplets"):
        miners.TripletMarginMiner(type_of_triplets="hardest")
    with pytest.raises(TypeError, match="margin"):
        miners.TripletMarginMiner(margin="0.2")
    with pytest.raises(ValueError, match="labels"):
        miners.BatchHardMiner()(x, y[:-1])
    with pytest.raises(ValueError, match="ref_labels"):
        miners.BatchHardMiner()(x, y, ref_emb=x[:5])
