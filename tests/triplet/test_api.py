"""The public triplet API: argument errors, reductions, Module terms()/reduce(), explicit
triplets, the lazy selection type."""
import pytest
import torch

import fastcontrast as fc
from fastcontrast.configs import TripletConfig
from fastcontrast.metrics import resolve_metric
from fastcontrast.reference.triplet import triplet_terms
from fastcontrast.triplet import MinedTriplets
from tests.conftest import assert_close


@pytest.fixture
def batch(gen):
    x = torch.randn(10, 6, generator=gen, dtype=torch.float64)
    y = torch.tensor([0, 0, 1, 1, 1, 2, 2, 3, 0, 2])
    return x, y


@pytest.mark.parametrize("kwargs,exc,word", [
    (dict(mining="hardest"), ValueError, "mining"),
    (dict(distance="manhattan"), ValueError, "distance"),
    (dict(margin="0.1"), TypeError, "margin"),
    (dict(margin=float("nan")), ValueError, "margin"),
    (dict(miner_margin=[0.2]), TypeError, "miner_margin"),
    (dict(swap=1), TypeError, "swap"),
    (dict(smooth="yes"), TypeError, "smooth"),
    (dict(hard_fallback="zero"), ValueError, "hard_fallback"),
    (dict(reduction="avg"), ValueError, "reduction"),
    (dict(average="median"), ValueError, "average"),
    (dict(backend="cuda"), ValueError, "backend"),
    (dict(distance="cosine", normalize=False), ValueError, "normalize"),
])
def test_bad_options(batch, kwargs, exc, word):
    x, y = batch
    with pytest.raises(exc, match=word):
        fc.triplet_margin_loss(x, y, **kwargs)


def test_bad_tensors(batch):
    x, y = batch
    cases = [
        ((x[0], y), ValueError, "embeddings"),
        ((x, y.float()), TypeError, "labels"),
        ((x, y[:-1]), ValueError, "labels"),
        ((x.masked_fill(x > 1, float("nan")), y), ValueError, "embeddings"),
        ((x[:0], y[:0]), ValueError, "embeddings"),
        ((x, None), ValueError, "labels"),
    ]
    for args, exc, word in cases:
        with pytest.raises(exc, match=word):
            fc.triplet_margin_loss(*args, normalize=None)
    with pytest.raises(ValueError, match="ref_emb"):
        fc.triplet_margin_loss(x, y, ref_emb=x[:, :3], ref_labels=y, normalize=None)
    with pytest.raises(ValueError, match="ref_labels"):
        fc.triplet_margin_loss(x, y, ref_emb=x, normalize=None)
    with pytest.raises(ValueError, match="negatives"):
        fc.triplet_margin_loss(x, y, indices_tuple=(torch.tensor([0]), torch.tensor([1]), torch.tensor([10])), normalize=None)
    with pytest.raises(TypeError, match="indices_tuple"):
        fc.triplet_margin_loss(x, y, indices_tuple=(torch.tensor([0]), torch.tensor([1])), normalize=None)
    with pytest.raises(TypeError, match="anchors"):
        fc.triplet_margin_loss(x, y, indices_tuple=(torch.tensor([0.0]), torch.tensor([1]), torch.tensor([2])), normalize=None)
    with pytest.raises(ValueError, match="self_offset"):
        fc.TripletMarginLoss(normalize=None).terms(x, y, self_offset=-2)


@pytest.mark.parametrize("mining", fc.MINING_MODES)
def test_reductions_and_terms(batch, mining):
    x, y = batch
    module = fc.TripletMarginLoss(margin=0.4, mining=mining, miner_margin=0.6, normalize=None)
    cfg = TripletConfig(kind="euclidean", mining=mining, margin=0.4, miner_margin=0.6)
    v, c, nz = triplet_terms(x, x, y, y, cfg)
    terms = module.terms(x, y)
    assert_close(terms.values, v)
    assert torch.equal(terms.counts, c) and torch.equal(terms.nonzero, nz)
    ratio = lambda total, count: total / count if count > 0 else total * 0  # noqa: E731
    assert_close(module.reduce(terms), ratio(v.sum(), nz.sum()))
    assert_close(module(x, y), ratio(v.sum(), nz.sum()))
    kw = dict(margin=0.4, mining=mining, miner_margin=0.6, normalize=None)
    assert_close(fc.triplet_margin_loss(x, y, reduction="sum", **kw), v.sum())
    assert_close(fc.triplet_margin_loss(x, y, reduction="none", **kw), v)
    assert_close(fc.triplet_margin_loss(x, y, average="mean", **kw), ratio(v.sum(), c.sum()))


def test_defaults_are_the_pml_loss(batch):
    """mining="all" with miner_margin = margin keeps t <= margin; the active ones are exactly
    batch-all's nonzero terms, so the avg-nonzero loss is the same."""
    x, y = batch
    assert_close(fc.triplet_margin_loss(x, y, normalize=None), fc.triplet_margin_loss(x, y, mining="batch_all", normalize=None))


def test_nothing_to_average_is_an_attached_zero(batch):
    x, y = batch
    e = x.clone().requires_grad_()
    loss = fc.triplet_margin_loss(e, torch.zeros(10, dtype=torch.long), normalize=None)
    assert loss.item() == 0.0 and loss.requires_grad
    loss.backward()
    assert torch.equal(e.grad, torch.zeros_like(x))


def test_reference_set_and_self_offset(batch, gen):
    x, y = batch
    r = torch.randn(13, 6, generator=gen, dtype=torch.float64)
    ry = torch.randint(0, 4, (13,), generator=gen)
    got = fc.triplet_margin_loss(x, y, ref_emb=r, ref_labels=ry, mining="semihard", reduction="sum", normalize=None)
    cfg = TripletConfig(kind="euclidean", mining="semihard", margin=0.05, miner_margin=0.05, self_offset=-1)
    assert_close(got, triplet_terms(x, r, y, ry, cfg)[0].sum())
    # terms() with a self_offset into a larger reference set (the distributed case)
    big = torch.cat([r[:3], x, r[3:]])
    by = torch.cat([ry[:3], y, ry[3:]])
    t = fc.TripletMarginLoss(mining="batch_hard", normalize=None).terms(x, y, big, by, self_offset=3)
    cfg = TripletConfig(kind="euclidean", mining="batch_hard", margin=0.05, miner_margin=0.05, self_offset=3)
    assert_close(t.values, triplet_terms(x, big, y, by, cfg)[0])


@pytest.mark.parametrize("distance", ["euclidean", "cosine", "dot", "squared_euclidean"])
def test_explicit_triplets(batch, gen, distance):
    x, y = batch
    a = torch.tensor([0, 0, 2, 5, 5, 9])
    p = torch.tensor([1, 8, 3, 6, 9, 6])
    n = torch.tensor([2, 7, 0, 1, 0, 3])
    e = x.clone().requires_grad_()
    loss = fc.triplet_margin_loss(e, y, indices_tuple=(a, p, n), margin=0.7, distance=distance, swap=True, normalize=None)
    loss.backward()
    metric = resolve_metric(distance)
    q = torch.nn.functional.normalize(x, dim=1) if metric.normalize else x
    ref = torch.cdist(q, q) if distance == "euclidean" else (
        torch.cdist(q, q) ** 2 if distance == "squared_euclidean" else -(q @ q.T))
    d_an = torch.minimum(ref[a, n], ref[p, n])
    h = torch.relu(ref[a, p] - d_an + 0.7)
    assert_close(loss, h.sum() / (h > 0).sum())
    # pairs (a1, p, a2, n) become every positive pair × negative pair sharing the anchor
    pairs = (torch.tensor([0, 5]), torch.tensor([1, 6]), torch.tensor([0, 0, 5]), torch.tensor([2, 7, 0]))
    got = fc.triplet_margin_loss(x, y, indices_tuple=pairs, reduction="sum", distance=distance, normalize=None)
    trip = (torch.tensor([0, 0, 5]), torch.tensor([1, 1, 6]), torch.tensor([2, 7, 0]))
    assert_close(got, fc.triplet_margin_loss(x, y, indices_tuple=trip, reduction="sum", distance=distance, normalize=None))


def test_mined_selection_fuses_and_materializes(batch):
    x, y = batch
    metric = resolve_metric("euclidean", True)
    sel = MinedTriplets("semihard", 0.3, metric, x, y)
    fused = fc.triplet_margin_loss(x, y, indices_tuple=sel, normalize=True, margin=0.1)
    a, p, n = sel
    assert len(sel) == 3 and sel.materialize()[0] is a
    explicit = fc.triplet_margin_loss(x, y, indices_tuple=(a, p, n), normalize=True, margin=0.1)
    direct = fc.triplet_margin_loss(x, y, mining="semihard", miner_margin=0.3, normalize=True, margin=0.1)
    assert_close(fused, explicit)
    assert_close(fused, direct)
    # another metric than the loss's: the selection is materialized, not fused
    other = fc.triplet_margin_loss(x, y, indices_tuple=sel, distance="dot", margin=0.1, normalize=None)
    assert_close(other, fc.triplet_margin_loss(x, y, indices_tuple=(a, p, n), distance="dot", margin=0.1, normalize=None))
